package framework

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/fs"
)

// HA is a job master's metadata directory (file:// or hdfs://, through
// engine/fs as checkpoints are):
//
//	epochs/<epoch>     one file per master that ever led the job, taken by
//	                   exclusive create: two masters never hold one epoch
//	masters/<epoch>    that master's addresses (JSON), written once it serves
//	job.json           the job spec the first master ran
//	checkpoint.json    the latest completed checkpoint (id, path, epoch)
//	takeovers/<epoch>  the checkpoint that epoch's master restored when it
//	                   first deployed the job (exclusive create, once)
//	result.json        how the newest master's run ended (its exit code)
//
// The newest epoch leads. A master that finds a newer epoch than its own
// stops; TaskManagers register with the newest master that published its
// address.
type HA struct {
	fs  fs.FS
	dir string
	uri string
}

// MasterInfo is what a master publishes.
type MasterInfo struct {
	Epoch   int64     `json:"epoch"`
	Control string    `json:"control"`
	HTTP    string    `json:"http,omitempty"`
	Host    string    `json:"host,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Started time.Time `json:"started"`
}

// CheckpointPointer is the latest completed checkpoint of the job.
type CheckpointPointer struct {
	Epoch int64  `json:"epoch"`
	ID    int64  `json:"id"`
	Path  string `json:"path"`
}

// OpenHA opens the HA directory at uri.
func OpenHA(uri string) (*HA, error) {
	f, dir, err := fs.Open(uri)
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", uri, err)
	}
	h, err := NewHA(f, dir)
	if err != nil {
		return nil, err
	}
	h.uri = uri // as given: what the master was told
	return h, nil
}

// NewHA is the HA directory dir of an FS already open (the dispatcher's
// job store takes its own fencing epochs this way).
func NewHA(f fs.FS, dir string) (*HA, error) {
	uri := fs.URI(f, dir)
	if _, ok := f.(fs.Exclusive); !ok {
		return nil, fmt.Errorf("HA directory %s: its filesystem cannot create files exclusively, so it cannot hold fencing epochs", uri)
	}
	return &HA{fs: f, dir: dir, uri: uri}, nil
}

// URI is the directory's URI.
func (h *HA) URI() string { return h.uri }

func epochName(e int64) string { return fmt.Sprintf("%020d", e) }

// epochs lists the epochs taken, ascending.
func (h *HA) epochs(ctx context.Context, sub string) ([]int64, error) {
	es, err := h.fs.List(ctx, fs.Join(h.dir, sub))
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", h.uri, err)
	}
	var out []int64
	for _, e := range es {
		if n, err := strconv.ParseInt(e.Name, 10, 64); err == nil && !strings.HasPrefix(e.Name, ".") {
			out = append(out, n)
		}
	}
	return out, nil
}

// Newest is the newest epoch taken, 0 when none.
func (h *HA) Newest(ctx context.Context) (int64, error) {
	es, err := h.epochs(ctx, "epochs")
	if err != nil || len(es) == 0 {
		return 0, err
	}
	return es[len(es)-1], nil
}

// Claim takes the next epoch: one above the newest, by exclusive create;
// a master racing for the same one makes this one try the next.
func (h *HA) Claim(ctx context.Context, info MasterInfo) (int64, error) {
	for tries := 0; tries < 100; tries++ {
		n, err := h.Newest(ctx)
		if err != nil {
			return 0, err
		}
		e := n + 1
		info.Epoch = e
		b, _ := json.Marshal(info)
		err = fs.CreateExclusive(ctx, h.fs, fs.Join(h.dir, "epochs", epochName(e)), b)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("HA directory %s: taking epoch %d: %w", h.uri, e, err)
		}
		return e, nil
	}
	return 0, fmt.Errorf("HA directory %s: could not take an epoch after 100 tries", h.uri)
}

// Publish writes the addresses of the master of info.Epoch.
func (h *HA) Publish(ctx context.Context, info MasterInfo) error {
	b, _ := json.Marshal(info)
	if err := h.fs.WriteFile(ctx, fs.Join(h.dir, "masters", epochName(info.Epoch)), b); err != nil {
		return fmt.Errorf("HA directory %s: publishing the master's address: %w", h.uri, err)
	}
	return nil
}

// Leader is the newest master that published its address, if it is also
// the newest epoch (a master that took a newer epoch and has not published
// yet makes the older one not the leader: wait for it).
func (h *HA) Leader(ctx context.Context) (MasterInfo, error) {
	newest, err := h.Newest(ctx)
	if err != nil {
		return MasterInfo{}, err
	}
	if newest == 0 {
		return MasterInfo{}, fmt.Errorf("HA directory %s: no master has led the job", h.uri)
	}
	b, err := h.fs.ReadFile(ctx, fs.Join(h.dir, "masters", epochName(newest)))
	if errors.Is(err, fs.ErrNotExist) {
		return MasterInfo{}, fmt.Errorf("HA directory %s: the master of epoch %d has not published its address yet", h.uri, newest)
	}
	if err != nil {
		return MasterInfo{}, fmt.Errorf("HA directory %s: %w", h.uri, err)
	}
	var info MasterInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return MasterInfo{}, fmt.Errorf("HA directory %s: master of epoch %d: %w", h.uri, newest, err)
	}
	return info, nil
}

// Published is the newest master that published its addresses (nil when
// none has), whether or not a newer epoch was taken since: what a
// supervisor (the dispatcher) looks for to find a running master.
func (h *HA) Published(ctx context.Context) (*MasterInfo, error) {
	es, err := h.epochs(ctx, "masters")
	if err != nil || len(es) == 0 {
		return nil, err
	}
	e := es[len(es)-1]
	b, err := h.fs.ReadFile(ctx, fs.Join(h.dir, "masters", epochName(e)))
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", h.uri, err)
	}
	var info MasterInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("HA directory %s: master of epoch %d: %w", h.uri, e, err)
	}
	return &info, nil
}

// SaveJob keeps the job spec, if none is kept yet; it returns the kept one
// (so a restarted master runs the job it led, not a changed file).
func (h *HA) SaveJob(ctx context.Context, spec []byte) ([]byte, error) {
	p := fs.Join(h.dir, "job.json")
	err := fs.CreateExclusive(ctx, h.fs, p, spec)
	if err == nil {
		return spec, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("HA directory %s: keeping the job: %w", h.uri, err)
	}
	kept, err := h.fs.ReadFile(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: reading the job: %w", h.uri, err)
	}
	return kept, nil
}

// SaveCheckpoint records the latest completed checkpoint.
func (h *HA) SaveCheckpoint(ctx context.Context, p CheckpointPointer) error {
	b, _ := json.Marshal(p)
	if err := h.fs.WriteFile(ctx, fs.Join(h.dir, "checkpoint.json"), b); err != nil {
		return fmt.Errorf("HA directory %s: recording checkpoint %d: %w", h.uri, p.ID, err)
	}
	return nil
}

// Checkpoint is the latest completed checkpoint recorded, nil when none.
func (h *HA) Checkpoint(ctx context.Context) (*CheckpointPointer, error) {
	b, err := h.fs.ReadFile(ctx, fs.Join(h.dir, "checkpoint.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", h.uri, err)
	}
	var p CheckpointPointer
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("HA directory %s: checkpoint.json: %w", h.uri, err)
	}
	return &p, nil
}

// ErrSuperseded: a newer master took the job.
var ErrSuperseded = errors.New("a newer master leads the job")

// Fence fails with ErrSuperseded when an epoch newer than epoch was taken:
// what a master checks before it writes metadata or commits.
func (h *HA) Fence(ctx context.Context, epoch int64) error {
	n, err := h.Newest(ctx)
	if err != nil {
		return err
	}
	if n > epoch {
		return fmt.Errorf("%w: epoch %d is newer than this master's %d", ErrSuperseded, n, epoch)
	}
	return nil
}

// takeover is what takeovers/<epoch> holds.
type takeover struct {
	Epoch    int64 `json:"epoch"`
	Restored int64 `json:"restored"` // checkpoint id; 0: none
}

// RecordTakeover records, once per epoch, the checkpoint (0: none) the
// master of epoch restored when it first deployed the job. Written before
// any task of that master runs, so every checkpoint it commits is younger;
// a checkpoint an older master commits later, past that point, is
// superseded (checkpoint.Lineage).
func (h *HA) RecordTakeover(ctx context.Context, epoch, restored int64) error {
	b, _ := json.Marshal(takeover{Epoch: epoch, Restored: restored})
	err := fs.CreateExclusive(ctx, h.fs, fs.Join(h.dir, "takeovers", epochName(epoch)), b)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("HA directory %s: recording the checkpoint epoch %d restored: %w", h.uri, epoch, err)
	}
	return nil
}

// Lineage reads the takeovers recorded: what the checkpoint storage needs
// to skip a superseded master's late commits.
func (h *HA) Lineage(ctx context.Context) (checkpoint.Lineage, error) {
	es, err := h.epochs(ctx, "takeovers")
	if err != nil {
		return nil, err
	}
	l := checkpoint.Lineage{}
	for _, e := range es {
		b, err := h.fs.ReadFile(ctx, fs.Join(h.dir, "takeovers", epochName(e)))
		if err != nil {
			return nil, fmt.Errorf("HA directory %s: %w", h.uri, err)
		}
		var t takeover
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("HA directory %s: takeovers/%s: %w", h.uri, epochName(e), err)
		}
		l[e] = t.Restored
	}
	return l, nil
}

// Result is how a master's run of the job ended, for a supervisor that
// is not its parent (a dispatcher that adopted it) and so cannot read its
// exit code.
type Result struct {
	Epoch  int64  `json:"epoch"`
	Code   int    `json:"code"` // the process's exit code: 0 finished, 130 cancelled, 1 failed
	Reason string `json:"reason,omitempty"`
}

// SaveResult records how the run of r.Epoch's master ended, unless a newer
// master leads the job.
func (h *HA) SaveResult(ctx context.Context, r Result) error {
	if err := h.Fence(ctx, r.Epoch); err != nil {
		return err
	}
	b, _ := json.Marshal(r)
	if err := h.fs.WriteFile(ctx, fs.Join(h.dir, "result.json"), b); err != nil {
		return fmt.Errorf("HA directory %s: recording the run's end: %w", h.uri, err)
	}
	return nil
}

// Result is the end recorded by the master of epoch, nil when it recorded
// none (it still runs, or died).
func (h *HA) Result(ctx context.Context, epoch int64) (*Result, error) {
	b, err := h.fs.ReadFile(ctx, fs.Join(h.dir, "result.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", h.uri, err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("HA directory %s: result.json: %w", h.uri, err)
	}
	if r.Epoch != epoch {
		return nil, nil
	}
	return &r, nil
}
