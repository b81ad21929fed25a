package file

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

func init() {
	nodes.Register("file", nodes.Factory{Kind: nodes.Sink, MinInputs: 1, MaxInputs: 1, Plan: planFileSink})
}

type fileSinkParams struct {
	Path   string `json:"path"`
	Prefix string `json:"prefix"`
}

func planFileSink(c *nodes.PlanContext) (*nodes.Planned, error) {
	var p fileSinkParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if p.Path == "" {
		return nil, fmt.Errorf("params.path: required (the directory to write part files to)")
	}
	fsys, dir, err := openPath(p.Path)
	if err != nil {
		return nil, fmt.Errorf("params.path: %w", err)
	}
	if p.Prefix == "" {
		p.Prefix = "part"
	}
	if strings.ContainsAny(p.Prefix, "/.") {
		return nil, fmt.Errorf("params.prefix: %q may not contain '/' or '.'", p.Prefix)
	}
	return &nodes.Planned{NewOperator: func() runtime.Operator { return &fileSink{p: p, fsys: fsys, dir: dir} }}, nil
}

// fileSink writes JSON lines to part files. A part file is written under an
// in-progress name (".part-….inprogress") and renamed to its final name
// ("part-…") once it is safe: in exactly-once mode when the checkpoint that
// closed it completes (two-phase commit), in at-least-once mode right at the
// checkpoint barrier. Files go through engine/fs, so the directory may be on
// HDFS (hdfs://namenode/dir) as well as local.
type fileSink struct {
	runtime.BaseOperator
	p       fileSinkParams
	fsys    fs.FS
	dir     string // within fsys
	f       fs.FileWriter
	fstop   context.CancelFunc // ends f's context once it is committed or aborted
	w       *bufio.Writer
	cur     string // in-progress name of the open file
	seq     int
	buf     []byte
	pending []pendingFile // closed, awaiting their checkpoint's completion
	// lineage (subtask 0 only) carries the restored checkpoint's lineage
	// entries into every snapshot of this attempt.
	lineage [][]byte
}

// Besides pending file names (".part-….inprogress"), the exactly-once file
// sink's operator state holds lineage entries that let a restore remove what
// checkpoints after the restored one committed (a restore from a savepoint or
// from an older checkpoint when the newest is corrupt rewinds the output too):
//
//	"\x00seq <attempt> <subtask> <n>": that subtask of that attempt had opened
//	    part files 0…n-1 when the checkpoint was taken; its committed part
//	    files numbered n or more came later.
//	"\x00keep <attempt>": part files of an attempt that were in the directory
//	    before the job's first run: never touched.
//
// Every subtask writes its own seq entry; subtask 0 carries the restored
// entries forward. Committed part files of an attempt that no entry names
// were written by an attempt after the restored checkpoint.
const (
	lineageSeq  = "\x00seq "
	lineageKeep = "\x00keep "
)

// partFile parses "<prefix>-<attempt>-<subtask>-<n>".
func (s *fileSink) partFile(name string) (attempt string, subtask, n int, ok bool) {
	rest, ok := strings.CutPrefix(name, s.p.Prefix+"-")
	if !ok {
		return "", 0, 0, false
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 3 || parts[0] == "" {
		return "", 0, 0, false
	}
	subtask, err1 := strconv.Atoi(parts[1])
	n, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return parts[0], subtask, n, true
}

// rewind removes committed part files that the restored checkpoint does not
// cover, and returns the lineage entries to carry forward. Without lineage
// entries (a fresh start, or a checkpoint written before they existed) it
// removes nothing and marks every attempt present as kept.
func (s *fileSink) rewind(r *runtime.Restored, entries []fs.Entry) ([][]byte, error) {
	type sub struct {
		attempt string
		subtask int
	}
	next := map[sub]int{}
	known := map[string]bool{}
	keep := map[string]bool{}
	var carried [][]byte
	if r != nil {
		for _, e := range r.OperatorState {
			switch {
			case strings.HasPrefix(string(e), lineageSeq):
				var k sub
				var n int
				if _, err := fmt.Sscanf(string(e[len(lineageSeq):]), "%s %d %d", &k.attempt, &k.subtask, &n); err != nil {
					return nil, fmt.Errorf("file sink: bad state entry %q: %w", e, err)
				}
				next[k] = max(next[k], n)
				known[k.attempt] = true
			case strings.HasPrefix(string(e), lineageKeep):
				keep[string(e[len(lineageKeep):])] = true
			default:
				continue
			}
			carried = append(carried, e)
		}
	}
	if len(carried) == 0 {
		for _, e := range entries {
			if att, _, _, ok := s.partFile(e.Name); ok && !keep[att] {
				keep[att] = true
				carried = append(carried, []byte(lineageKeep+att))
			}
		}
		return carried, nil
	}
	for _, e := range entries {
		att, st, n, ok := s.partFile(e.Name)
		if !ok || keep[att] {
			continue
		}
		if hw, seen := next[sub{att, st}]; (seen && n < hw) || (!seen && known[att]) {
			continue
		}
		if err := s.remove(e.Name); err != nil {
			return nil, fmt.Errorf("file sink: removing %s, committed after the restored checkpoint: %w", e.Name, err)
		}
		s.Ctx.Log.Info("removed a part file committed after the restored checkpoint", "file", e.Name)
	}
	return carried, nil
}

type pendingFile struct {
	cp   int64
	name string
}

// path names a file of the sink's directory within its FS.
func (s *fileSink) path(name string) string { return fs.Join(s.dir, name) }

// remove removes a file of the directory; a missing one is not an error.
func (s *fileSink) remove(name string) error {
	ctx, cancel := fileCtx()
	defer cancel()
	return s.fsys.RemoveAll(ctx, s.path(name))
}

// finalName turns ".part-x.inprogress" into "part-x".
func finalName(name string) string {
	return strings.TrimSuffix(strings.TrimPrefix(name, "."), ".inprogress")
}

func (s *fileSink) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.Ctx = ctx
	fctx, cancel := fileCtx()
	defer cancel()
	if err := s.fsys.MkdirAll(fctx, s.dir); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	// Each subtask finishes what the restored checkpoint committed to and
	// removes what earlier attempts left uncommitted, of its share of the
	// old subtasks (old subtask k goes to k mod parallelism): a subtask
	// restarted alone (region failover) leaves the files of the others,
	// which go on writing. Subtask 0 also rewinds what was committed after
	// the checkpoint. Open runs before any subtask of this attempt writes.
	entries, err := s.fsys.List(fctx, s.dir)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if ctx.ExactlyOnce && ctx.Subtask == 0 {
		if s.lineage, err = s.rewind(r, entries); err != nil {
			return err
		}
	}
	keep := map[string]bool{}
	if r != nil {
		for _, e := range r.OperatorState {
			name := string(e)
			if strings.HasPrefix(name, "\x00") {
				continue // a lineage entry
			}
			keep[name] = true
			if !s.share(name) {
				continue
			}
			if err := s.commit(name); err != nil {
				return err
			}
		}
	}
	mine := "." + s.p.Prefix + "-"
	for _, e := range entries {
		n := e.Name
		// fs.Create writes a part file under ".<name>.tmp-…" until its
		// Commit: such a file is what a killed attempt was writing.
		uncommitted := strings.HasPrefix(n, mine) && strings.HasSuffix(n, ".inprogress") && !keep[n]
		unfinished := strings.HasPrefix(n, "."+mine) && strings.Contains(n, ".inprogress.tmp-")
		if (uncommitted || unfinished) && s.share(n) {
			if err := s.remove(n); err != nil {
				return fmt.Errorf("file sink: removing uncommitted %s: %w", n, err)
			}
		}
	}
	return nil
}

// share reports whether an in-progress file (".part-….inprogress", or its
// ".….tmp-…" while written) is this subtask's to commit or remove on
// restore: its old subtask k with k mod parallelism = this subtask. A name
// that does not parse is subtask 0's.
func (s *fileSink) share(name string) bool {
	base := strings.TrimLeft(name, ".")
	if i := strings.Index(base, ".inprogress"); i >= 0 {
		base = base[:i]
	}
	_, k, _, ok := s.partFile(base)
	if !ok {
		return s.Ctx.Subtask == 0
	}
	return k%s.Ctx.Parallelism == s.Ctx.Subtask
}

// commit renames an in-progress file to its final name; done twice is fine.
func (s *fileSink) commit(name string) error {
	ctx, cancel := fileCtx()
	defer cancel()
	err := s.fsys.Rename(ctx, s.path(name), s.path(finalName(name)))
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		if err != nil {
			return fmt.Errorf("file sink: committing %s: %w", name, err)
		}
		return nil
	}
	if _, serr := s.fsys.Stat(ctx, s.path(finalName(name))); serr == nil {
		return nil // committed before
	}
	return fmt.Errorf("file sink: part file %s of a completed checkpoint is missing", name)
}

func (s *fileSink) Process(_ int, b *row.Batch) error {
	if s.f == nil {
		s.cur = fmt.Sprintf(".%s-%s-%d-%d.inprogress", s.p.Prefix, s.Ctx.Attempt, s.Ctx.Subtask, s.seq)
		s.seq++
		// The writer's context must outlive Create: it bounds the whole
		// write up to Commit, which may be a checkpoint interval away.
		ctx, cancel := context.WithCancel(context.Background())
		f, err := fs.Create(ctx, s.fsys, s.path(s.cur))
		if err != nil {
			cancel()
			return fmt.Errorf("file sink: %w", err)
		}
		s.fstop = cancel
		s.f = f
		if s.w == nil {
			s.w = bufio.NewWriterSize(f, 256<<10)
		} else {
			s.w.Reset(f)
		}
	}
	s.buf = s.buf[:0]
	for i := 0; i < b.Len; i++ {
		s.buf = row.AppendJSON(s.buf, b, i)
		s.buf = append(s.buf, '\n')
	}
	b.Release()
	_, err := s.w.Write(s.buf)
	return err
}

func (s *fileSink) Watermark(int64) error { return nil }

// closeCurrent makes the open part file durable under its in-progress name
// (Commit syncs and renames it into place) and returns its name.
func (s *fileSink) closeCurrent() (string, error) {
	if s.f == nil {
		return "", nil
	}
	name := s.cur
	err := s.w.Flush()
	if err == nil {
		err = s.f.Commit()
	} else {
		s.f.Abort()
	}
	s.fstop()
	s.f = nil
	if err != nil {
		return "", fmt.Errorf("file sink: closing %s: %w", name, err)
	}
	return name, nil
}

func (s *fileSink) Snapshot(id int64) (runtime.Snapshot, error) {
	name, err := s.closeCurrent()
	if err != nil {
		return nil, err
	}
	if name != "" {
		if !s.Ctx.ExactlyOnce {
			return nil, s.commit(name)
		}
		s.pending = append(s.pending, pendingFile{cp: id, name: name})
	}
	if !s.Ctx.ExactlyOnce {
		return nil, nil
	}
	names := make([]string, len(s.pending))
	for i, p := range s.pending {
		names[i] = p.name
	}
	seq := fmt.Sprintf("%s%s %d %d", lineageSeq, s.Ctx.Attempt, s.Ctx.Subtask, s.seq)
	lineage := s.lineage // never modified after Open
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for _, n := range names {
			w.AddOperatorState([]byte(n))
		}
		w.AddOperatorState([]byte(seq))
		for _, e := range lineage {
			w.AddOperatorState(e)
		}
		return nil
	}), nil
}

func (s *fileSink) CheckpointComplete(id int64) error {
	sort.Slice(s.pending, func(i, j int) bool { return s.pending[i].cp < s.pending[j].cp })
	k := 0
	for _, p := range s.pending {
		if p.cp > id {
			s.pending[k] = p
			k++
			continue
		}
		if err := s.commit(p.name); err != nil {
			return err
		}
	}
	s.pending = s.pending[:k]
	return nil
}

func (s *fileSink) Close() error {
	if s.f != nil {
		// Uncommitted data is discarded; the next attempt replays the rows
		// from the last checkpoint.
		s.f.Abort()
		s.fstop()
		s.f = nil
	}
	return nil
}
