package runtime

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/state"
)

// Local recovery: with Options.LocalRecovery a subtask's state file is also
// kept on local disk, under <local state dir>/<job>/recovery/chk-<id>/, so
// that a restart on the same machine restores without reading the remote
// checkpoint storage. A local copy that is missing or fails its checksum is
// ignored and the remote file read instead. Only the newest completed
// checkpoint's copies are kept.
type localRecovery struct {
	dir string // "" when local recovery is off
	log *slog.Logger
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (l localRecovery) path(id int64, file string) string {
	return filepath.Join(l.dir, "chk-"+strconv.FormatInt(id, 10), file)
}

// keep writes a local copy of a state file (best effort: a failure only
// costs a remote read later).
func (l localRecovery) keep(id int64, file string, data []byte) {
	if l.dir == "" {
		return
	}
	p := l.path(id, file)
	tmp := p + ".tmp"
	err := os.MkdirAll(filepath.Dir(p), 0o755)
	if err == nil {
		err = os.WriteFile(tmp, data, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		l.log.Warn("local recovery: keeping a local copy failed", "checkpoint", id, "file", file, "err", err)
	}
}

// prune drops local copies of checkpoints older than id, except those of
// the checkpoints in keep (an incremental checkpoint's chain).
func (l localRecovery) prune(id int64, keep map[int64]bool) {
	if l.dir == "" {
		return
	}
	es, _ := os.ReadDir(l.dir)
	for _, e := range es {
		n, ok := strings.CutPrefix(e.Name(), "chk-")
		if v, err := strconv.ParseInt(n, 10, 64); ok && err == nil && v < id && !keep[v] {
			os.RemoveAll(filepath.Join(l.dir, e.Name()))
		}
	}
}

// read returns the verified local copy of a state file of checkpoint id,
// or nil.
func (l localRecovery) read(id int64, sub checkpoint.SubtaskState) []byte {
	if l.dir == "" {
		return nil
	}
	data, err := os.ReadFile(l.path(id, sub.File))
	if err != nil {
		return nil
	}
	if int64(len(data)) != sub.Size || crc32.Checksum(data, castagnoli) != sub.CRC32C {
		l.log.Warn("local recovery: the local copy is corrupt; reading the remote state file", "checkpoint", id, "file", sub.File)
		return nil
	}
	return data
}

// restoreReader reads a checkpoint's state files for the subtasks of one
// execution, each file once, from the local copy when it can.
type restoreReader struct {
	st    *checkpoint.Storage
	md    *checkpoint.Metadata
	dir   string
	local localRecovery
	cache map[string][]byte
	stats *RestoreStats
}

// RestoreStats counts the state bytes a restore read, by where from.
type RestoreStats struct {
	LocalBytes  atomic.Int64
	RemoteBytes atomic.Int64
	// Deltas counts the key group deltas of incremental checkpoints
	// handed to operators.
	Deltas atomic.Int64
}

// file reads a state file of checkpoint id (the restored one, or one its
// chains refer to).
func (r *restoreReader) file(ctx context.Context, id int64, sub checkpoint.SubtaskState) ([]byte, error) {
	key := sub.Dir + "/" + sub.File
	if data, ok := r.cache[key]; ok {
		return data, nil
	}
	var data []byte
	if !r.md.Savepoint {
		data = r.local.read(id, sub)
	}
	if data != nil {
		r.stats.LocalBytes.Add(int64(len(data)))
	} else {
		var err error
		if data, err = r.st.ReadState(ctx, r.dir, sub); err != nil {
			return nil, err
		}
		r.stats.RemoteBytes.Add(int64(len(data)))
	}
	r.cache[key] = data
	return data, nil
}

// restoredFor collects a new subtask's share of the checkpoint's state for node.
func (r *restoreReader) restoredFor(ctx context.Context, node string, kgs state.KeyGroupRange) (*Restored, error) {
	if r == nil || r.md == nil {
		return nil, nil
	}
	var ns *checkpoint.NodeState
	for i := range r.md.Nodes {
		if r.md.Nodes[i].NodeID == node {
			ns = &r.md.Nodes[i]
		}
	}
	if ns == nil {
		return nil, nil
	}
	res := &Restored{CheckpointID: r.md.CheckpointID, KeyGroups: map[int][]byte{}}
	for _, sub := range ns.Subtasks {
		// An incremental checkpoint's keyed state: the chain's full
		// snapshot, then its deltas in order, then the subtask's own delta.
		files := sub.Files()
		for i, f := range files {
			own := i == len(files)-1
			id := r.md.CheckpointID
			if !own {
				id = sub.Chain[i].CheckpointID
			}
			need := own && len(sub.OperatorState) > 0
			for _, kg := range f.KeyGroups {
				need = need || kgs.Contains(kg.KeyGroup)
			}
			if !need {
				continue
			}
			data, err := r.file(ctx, id, f)
			if err != nil {
				return nil, fmt.Errorf("reading state of %s#%d (checkpoint %d): %w", node, sub.Subtask, id, err)
			}
			for _, kg := range f.KeyGroups {
				if !kgs.Contains(kg.KeyGroup) {
					continue
				}
				part := data[kg.Offset : kg.Offset+kg.Length]
				if i == 0 {
					res.KeyGroups[kg.KeyGroup] = part
					continue
				}
				if res.KeyGroupDeltas == nil {
					res.KeyGroupDeltas = map[int][][]byte{}
				}
				res.KeyGroupDeltas[kg.KeyGroup] = append(res.KeyGroupDeltas[kg.KeyGroup], part)
				r.stats.Deltas.Add(1)
			}
			if own {
				for _, os := range sub.OperatorState {
					res.OperatorState = append(res.OperatorState, data[os.Offset:os.Offset+os.Length])
				}
			}
		}
	}
	return res, nil
}

// isCorrupt reports whether a restore failed on a state file that does not
// verify (so an older checkpoint may be tried).
func isCorrupt(err error) bool { return errors.Is(err, checkpoint.ErrCorrupt) }
