package nodes

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

func init() {
	Register("print", Factory{Kind: Sink, MinInputs: 1, MaxInputs: 1, Plan: planPrint})
	Register("discard", Factory{Kind: Sink, MinInputs: 1, Plan: planDiscard})
	Register("file", Factory{Kind: Sink, MinInputs: 1, MaxInputs: 1, Plan: planFileSink})
}

// stdout is shared by every print subtask; lines are written whole.
var stdout = struct {
	sync.Mutex
	w *bufio.Writer
}{w: bufio.NewWriterSize(os.Stdout, 64<<10)}

type printParams struct {
	Prefix string `json:"prefix"`
}

func planPrint(c *PlanContext) (*Planned, error) {
	var p printParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	return &Planned{NewOperator: func() runtime.Operator { return &printSink{prefix: p.Prefix} }}, nil
}

type printSink struct {
	runtime.BaseOperator
	prefix string
	buf    []byte
}

func (s *printSink) Process(_ int, b *row.Batch) error {
	s.buf = s.buf[:0]
	for i := 0; i < b.Len; i++ {
		s.buf = append(s.buf, s.prefix...)
		s.buf = row.AppendJSON(s.buf, b, i)
		s.buf = append(s.buf, '\n')
	}
	b.Release()
	stdout.Lock()
	_, err := stdout.w.Write(s.buf)
	stdout.Unlock()
	return err
}

func (s *printSink) Watermark(int64) error { return flushStdout() }
func (s *printSink) Close() error          { return flushStdout() }

func flushStdout() error {
	stdout.Lock()
	defer stdout.Unlock()
	return stdout.w.Flush()
}

func planDiscard(c *PlanContext) (*Planned, error) {
	if err := c.Params(&struct{}{}); err != nil {
		return nil, err
	}
	return &Planned{NewOperator: func() runtime.Operator { return &discard{} }}, nil
}

type discard struct{ runtime.BaseOperator }

func (d *discard) Process(_ int, b *row.Batch) error { b.Release(); return nil }
func (d *discard) Watermark(int64) error             { return nil }

type fileSinkParams struct {
	Path   string `json:"path"`
	Prefix string `json:"prefix"`
}

func planFileSink(c *PlanContext) (*Planned, error) {
	var p fileSinkParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if p.Path == "" {
		return nil, fmt.Errorf("params.path: required (the directory to write part files to)")
	}
	p.Path = strings.TrimPrefix(p.Path, "file://")
	if p.Prefix == "" {
		p.Prefix = "part"
	}
	if strings.ContainsAny(p.Prefix, "/.") {
		return nil, fmt.Errorf("params.prefix: %q may not contain '/' or '.'", p.Prefix)
	}
	return &Planned{NewOperator: func() runtime.Operator { return &fileSink{p: p} }}, nil
}

// fileSink writes JSON lines to part files. A part file is written under an
// in-progress name (".part-….inprogress") and renamed to its final name
// ("part-…") once it is safe: in exactly-once mode when the checkpoint that
// closed it completes (two-phase commit), in at-least-once mode right at the
// checkpoint barrier.
type fileSink struct {
	runtime.BaseOperator
	p       fileSinkParams
	f       *os.File
	w       *bufio.Writer
	cur     string // in-progress name of the open file
	seq     int
	buf     []byte
	pending []pendingFile // closed, awaiting their checkpoint's completion
}

type pendingFile struct {
	cp   int64
	name string
}

func (s *fileSink) inProgress(name string) string { return filepath.Join(s.p.Path, name) }

// finalName turns ".part-x.inprogress" into "part-x".
func finalName(name string) string {
	return strings.TrimSuffix(strings.TrimPrefix(name, "."), ".inprogress")
}

func (s *fileSink) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.Ctx = ctx
	if err := os.MkdirAll(s.p.Path, 0o755); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if ctx.Subtask != 0 {
		return nil
	}
	// Subtask 0 finishes what the restored checkpoint committed to and
	// removes what earlier attempts left uncommitted. Open runs before any
	// subtask of this attempt writes, so there is no race.
	keep := map[string]bool{}
	if r != nil {
		for _, e := range r.OperatorState {
			name := string(e)
			keep[name] = true
			if err := s.commit(name); err != nil {
				return err
			}
		}
	}
	entries, err := os.ReadDir(s.p.Path)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	mine := "." + s.p.Prefix + "-"
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, mine) && strings.HasSuffix(n, ".inprogress") && !keep[n] {
			if err := os.Remove(filepath.Join(s.p.Path, n)); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("file sink: removing uncommitted %s: %w", n, err)
			}
		}
	}
	return nil
}

// commit renames an in-progress file to its final name; done twice is fine.
func (s *fileSink) commit(name string) error {
	err := os.Rename(s.inProgress(name), filepath.Join(s.p.Path, finalName(name)))
	if err == nil || !os.IsNotExist(err) {
		if err != nil {
			return fmt.Errorf("file sink: committing %s: %w", name, err)
		}
		return nil
	}
	if _, serr := os.Stat(filepath.Join(s.p.Path, finalName(name))); serr == nil {
		return nil // committed before
	}
	return fmt.Errorf("file sink: part file %s of a completed checkpoint is missing", name)
}

func (s *fileSink) Process(_ int, b *row.Batch) error {
	if s.f == nil {
		s.cur = fmt.Sprintf(".%s-%s-%d-%d.inprogress", s.p.Prefix, s.Ctx.Attempt, s.Ctx.Subtask, s.seq)
		s.seq++
		f, err := os.OpenFile(s.inProgress(s.cur), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("file sink: %w", err)
		}
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

// closeCurrent makes the open part file durable and returns its name.
func (s *fileSink) closeCurrent() (string, error) {
	if s.f == nil {
		return "", nil
	}
	name := s.cur
	err := s.w.Flush()
	if err == nil {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
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
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for _, n := range names {
			w.AddOperatorState([]byte(n))
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
		// Uncommitted data stays in its in-progress file; the next attempt
		// removes it and replays the rows from the last checkpoint.
		_ = s.w.Flush()
		return s.f.Close()
	}
	return nil
}
