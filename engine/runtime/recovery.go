package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/fs"
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

func (l localRecovery) path(id int64, file string) string {
	return filepath.Join(l.dir, "chk-"+strconv.FormatInt(id, 10), file)
}

// localCopy is a local copy of a state file being written alongside the
// upload (a tee): best effort, a failure only costs a remote read later.
type localCopy struct {
	l        localRecovery
	id       int64
	file     string
	f        *os.File
	err      error
	tmp, dst string
}

// create starts the local copy of a state file of checkpoint id; nil when
// local recovery is off.
func (l localRecovery) create(id int64, file string) *localCopy {
	if l.dir == "" {
		return nil
	}
	c := &localCopy{l: l, id: id, file: file, dst: l.path(id, file)}
	c.tmp = c.dst + ".tmp"
	c.err = os.MkdirAll(filepath.Dir(c.dst), 0o755)
	if c.err == nil {
		c.f, c.err = os.Create(c.tmp)
	}
	return c
}

// Write implements io.Writer for StateFileWriter's tee; it never fails
// the upload.
func (c *localCopy) Write(p []byte) (int, error) {
	if c.err == nil {
		_, c.err = c.f.Write(p)
	}
	return len(p), nil
}

// done publishes the copy once the upload succeeded (ok), or removes it.
func (c *localCopy) done(ok bool) {
	if c == nil {
		return
	}
	if c.f != nil {
		if err := c.f.Close(); c.err == nil {
			c.err = err
		}
	}
	if ok && c.err == nil {
		c.err = os.Rename(c.tmp, c.dst)
	}
	if ok && c.err != nil {
		c.l.log.Warn("local recovery: keeping a local copy failed", "checkpoint", c.id, "file", c.file, "err", c.err)
	}
	if !ok || c.err != nil {
		os.Remove(c.tmp)
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

// open returns the local copy of a state file of checkpoint id with the
// sections secs verified, or nil.
func (l localRecovery) open(ctx context.Context, id int64, sub checkpoint.SubtaskState, secs []checkpoint.Section) *checkpoint.StateReader {
	if l.dir == "" {
		return nil
	}
	p := l.path(id, sub.File)
	if _, err := os.Stat(p); err != nil {
		return nil
	}
	r, err := checkpoint.OpenState(ctx, fs.Local{}, filepath.ToSlash(p), sub)
	if err == nil {
		if err = r.Verify(secs); err != nil {
			r.Close()
		}
	}
	if err != nil {
		l.log.Warn("local recovery: the local copy is corrupt; reading the remote state file", "checkpoint", id, "file", sub.File, "err", err)
		return nil
	}
	return r
}

// restoreReader reads a checkpoint's state files for the subtasks of one
// execution, from the local copy when it can. Each subtask reads only the
// sections of its key groups, as a stream (Restored.Keyed); subtasks may
// read concurrently.
type restoreReader struct {
	st    *checkpoint.Storage
	md    *checkpoint.Metadata
	dir   string
	local localRecovery
	stats *RestoreStats
	// progress counts each subtask's share of restore op (progress.go).
	progress *Progress
	op       string
}

// RestoreStats counts the state bytes a restore read, by where from.
type RestoreStats struct {
	LocalBytes  atomic.Int64
	RemoteBytes atomic.Int64
	// Deltas counts the key group deltas of incremental checkpoints
	// handed to operators.
	Deltas atomic.Int64
}

// open opens a state file of checkpoint id (the restored one, or one its
// chains refer to), the local copy when it has secs intact.
func (r *restoreReader) open(ctx context.Context, id int64, sub checkpoint.SubtaskState, secs []checkpoint.Section) (*checkpoint.StateReader, *atomic.Int64, error) {
	if !r.md.Savepoint {
		if f := r.local.open(ctx, id, sub, secs); f != nil {
			return f, &r.stats.LocalBytes, nil
		}
	}
	f, err := r.st.OpenState(ctx, r.dir, sub)
	return f, &r.stats.RemoteBytes, err
}

// piece is the part of one state file a new subtask reads.
type piece struct {
	old   int   // the old subtask
	id    int64 // the checkpoint that wrote the file
	file  checkpoint.SubtaskState
	delta int
	secs  []checkpoint.Section // this subtask's key groups, ascending
}

// restoredFor collects a new subtask's share of the checkpoint's state for
// node: the operator state now, the keyed state as Restored.Keyed streams it.
func (r *restoreReader) restoredFor(ctx context.Context, node string, subtask int, kgs state.KeyGroupRange) (*Restored, error) {
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
	res := &Restored{CheckpointID: r.md.CheckpointID}
	pieces, files, bytes := r.pieces(ns, kgs)
	prog := r.progress.restoreShare(r.op, node, subtask, files, bytes)
	for _, sub := range ns.Subtasks {
		if len(sub.OperatorState) > 0 {
			if err := r.operatorState(ctx, res, sub, prog); err != nil {
				return nil, fmt.Errorf("reading state of %s#%d (checkpoint %d): %w", node, sub.Subtask, r.md.CheckpointID, err)
			}
		}
	}
	if len(pieces) > 0 {
		res.Keyed = func(f func(KeyedState) error) error {
			for _, p := range pieces {
				if err := r.keyed(ctx, p, f, prog); err != nil {
					return fmt.Errorf("restoring state of %s#%d (checkpoint %d): %w", node, p.old, p.id, err)
				}
			}
			return nil
		}
	}
	return res, nil
}

// pieces lists the parts of node's state files a new subtask of key
// groups kgs reads, and the files and bytes it reads in all (its progress).
func (r *restoreReader) pieces(ns *checkpoint.NodeState, kgs state.KeyGroupRange) (pieces []piece, files, bytes int64) {
	for _, sub := range ns.Subtasks {
		if len(sub.OperatorState) > 0 {
			files++
			for _, sec := range sub.OperatorState {
				bytes += sec.Length
			}
		}
		// An incremental checkpoint's keyed state: the chain's full
		// snapshot, then its deltas in order, then the subtask's own delta.
		all := sub.Files()
		for i, f := range all {
			id := r.md.CheckpointID
			if i < len(all)-1 {
				id = sub.Chain[i].CheckpointID
			}
			p := piece{old: sub.Subtask, id: id, file: f, delta: i}
			for _, kg := range f.KeyGroups {
				if kgs.Contains(kg.KeyGroup) {
					p.secs = append(p.secs, kg)
					bytes += kg.Length
				}
			}
			if len(p.secs) > 0 {
				pieces = append(pieces, p)
				files++
			}
		}
	}
	return pieces, files, bytes
}

// operatorState reads the operator state entries of an old subtask's file.
func (r *restoreReader) operatorState(ctx context.Context, res *Restored, sub checkpoint.SubtaskState, prog *subProgress) error {
	f, counter, err := r.open(ctx, r.md.CheckpointID, sub, sub.OperatorState)
	if err != nil {
		return err
	}
	prog.startRead(f)
	defer func() { prog.readDone(f); counter.Add(f.BytesRead()); f.Close() }()
	for _, sec := range sub.OperatorState {
		b := make([]byte, sec.Length)
		if _, err := io.ReadFull(f.Section(sec), b); err != nil {
			return err
		}
		res.OperatorState = append(res.OperatorState, b)
	}
	return nil
}

// keyed hands p's sections to f, one key group at a time (the parts of a
// key group written in several sections as one stream).
func (r *restoreReader) keyed(ctx context.Context, p piece, f func(KeyedState) error, prog *subProgress) error {
	file, counter, err := r.open(ctx, p.id, p.file, p.secs)
	if err != nil {
		return err
	}
	prog.startRead(file)
	defer func() { prog.readDone(file); counter.Add(file.BytesRead()); file.Close() }()
	var parts []io.Reader
	for i := 0; i < len(p.secs); {
		kg, size := p.secs[i].KeyGroup, int64(0)
		parts = parts[:0]
		for ; i < len(p.secs) && p.secs[i].KeyGroup == kg; i++ {
			parts = append(parts, file.Section(p.secs[i]))
			size += p.secs[i].Length
		}
		rd := parts[0]
		if len(parts) > 1 {
			rd = io.MultiReader(parts...)
		}
		if err := f(KeyedState{KeyGroup: kg, Delta: p.delta, Size: size, R: rd}); err != nil {
			return err
		}
		if p.delta > 0 {
			r.stats.Deltas.Add(1)
		}
	}
	return nil
}

// isCorrupt reports whether a restore failed on a state file that does not
// verify (so an older checkpoint may be tried).
func isCorrupt(err error) bool { return errors.Is(err, checkpoint.ErrCorrupt) }
