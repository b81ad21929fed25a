package file

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"

	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

func init() {
	nodes.Register("file", nodes.Factory{Kind: nodes.Source, Plan: planFileSource})
}

type fileSourceParams struct {
	Path      string                `json:"path"`
	Fields    []nodes.SchemaField   `json:"fields"`
	EventTime string                `json:"eventTime"`
	Watermark nodes.WatermarkParams `json:"watermark"`
}

// fileOpTimeout bounds one filesystem call of the file connectors (not a
// whole file's reading or writing): the runtime gives operators no context,
// and a hanging namenode must fail the task rather than stall it.
const fileOpTimeout = 2 * time.Minute

func fileCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), fileOpTimeout)
}

// openPath resolves a file connector's path through engine/fs. file:// and
// plain paths are the local disk, kept as written (a relative path stays
// relative: the source's state entries name its files, and must keep
// naming them as before); other schemes (hdfs://) go through fs.Open.
func openPath(p string) (fs.FS, string, error) {
	if rest, ok := strings.CutPrefix(p, "file://"); ok {
		return fs.Local{}, rest, nil
	}
	if !strings.Contains(p, "://") {
		return fs.Local{}, p, nil
	}
	return fs.Open(p)
}

// listFiles expands a file, a directory (its non-hidden files) or a glob, sorted.
func listFiles(fsys fs.FS, path string) ([]string, error) {
	ctx, cancel := fileCtx()
	defer cancel()
	if st, err := fsys.Stat(ctx, path); err == nil {
		if !st.IsDir {
			return []string{path}, nil
		}
		entries, err := fsys.List(ctx, path)
		if err != nil {
			return nil, err
		}
		var files []string
		for _, e := range entries {
			if !e.IsDir && !strings.HasPrefix(e.Name, ".") {
				files = append(files, fs.Join(path, e.Name))
			}
		}
		return files, nil
	}
	files, err := fs.Glob(ctx, fsys, path)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no file matches %q", path)
	}
	return files, nil
}

func planFileSource(c *nodes.PlanContext) (*nodes.Planned, error) {
	var p fileSourceParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if p.Path == "" {
		return nil, fmt.Errorf("params.path: required (a file, a directory or a glob)")
	}
	schema, err := nodes.ParseFields(p.Fields)
	if err != nil {
		return nil, err
	}
	timeCol := -1
	if p.EventTime != "" {
		timeCol = schema.Index(p.EventTime)
		if timeCol < 0 || !schema.Fields[timeCol].Type.IsInt() {
			return nil, fmt.Errorf("params.eventTime: %q is not a timestamp or int64 field of %s", p.EventTime, schema)
		}
	}
	fsys, path, err := openPath(p.Path)
	if err != nil {
		return nil, fmt.Errorf("params.path: %w", err)
	}
	files, err := listFiles(fsys, path)
	if err != nil {
		return nil, fmt.Errorf("params.path: %w", err)
	}
	ooo := p.Watermark.OutOfOrderness.Millis()
	idle := p.Watermark.IdleTimeout.D()
	return &nodes.Planned{Schema: schema, NewSource: func() runtime.Source {
		return &fileSource{fsys: fsys, schema: schema, files: files, timeCol: timeCol, ooo: ooo, idle: nodes.NewIdleness(idle)}
	}}, nil
}

// fileSource reads JSON lines. Files are its splits: file k belongs to
// subtask k mod parallelism, and a file's position is a byte offset.
type fileSource struct {
	fsys    fs.FS
	schema  *row.Schema
	files   []string
	timeCol int
	ooo     int64
	ctx     *runtime.Context
	mine    []int
	offsets map[string]int64
	cur     int // index into mine
	f       fs.File
	fstop   context.CancelFunc // ends f's context when it is closed
	r       *bufio.Reader
	off     int64
	maxTS   int64
	bad     int64
	idle    nodes.Idleness
}

func (s *fileSource) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.ctx = ctx
	s.offsets = map[string]int64{}
	s.maxTS = runtime.MinWatermark
	if r != nil {
		for _, e := range r.OperatorState {
			if len(e) < 16 {
				return fmt.Errorf("file source state entry has %d bytes", len(e))
			}
			s.offsets[string(e[16:])] = int64(binary.BigEndian.Uint64(e))
			if ts := int64(binary.BigEndian.Uint64(e[8:])); ts > s.maxTS {
				s.maxTS = ts
			}
		}
	}
	for k := ctx.Subtask; k < len(s.files); k += ctx.Parallelism {
		s.mine = append(s.mine, k)
	}
	return nil
}

func (s *fileSource) Poll() (bool, error) {
	if s.r == nil {
		if s.cur >= len(s.mine) {
			return true, nil
		}
		name := s.files[s.mine[s.cur]]
		// The file's context lives until it is closed: reads use it.
		ctx, cancel := context.WithCancel(context.Background())
		f, err := fs.OpenFile(ctx, s.fsys, name)
		if err != nil {
			cancel()
			return false, fmt.Errorf("file source: %w", err)
		}
		s.off = s.offsets[name]
		if s.off > f.Size() {
			f.Close()
			cancel()
			return false, fmt.Errorf("file source: %s: offset %d is past the end (%d bytes)", name, s.off, f.Size())
		}
		s.fstop = cancel
		s.f, s.r = f, bufio.NewReaderSize(io.NewSectionReader(f, s.off, f.Size()-s.off), 256<<10)
	}
	name := s.files[s.mine[s.cur]]
	b := row.NewBatch(s.schema)
	for b.Len < row.DefaultBatchSize {
		line, err := s.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return false, fmt.Errorf("file source: %s: line at byte %d is longer than 256 KiB", name, s.off)
		}
		if err == io.EOF && len(line) > 0 {
			err = nil // a last line without a newline
		}
		if err == io.EOF {
			s.f.Close()
			s.fstop()
			s.f, s.r = nil, nil
			s.offsets[name] = s.off
			s.cur++
			break
		}
		if err != nil {
			return false, fmt.Errorf("file source: %s: %w", name, err)
		}
		s.off += int64(len(line))
		line = []byte(strings.TrimSpace(string(line)))
		if len(line) == 0 {
			continue
		}
		if err := row.ParseJSON(line, b); err != nil {
			s.bad++
			s.ctx.Metrics.Invalid.Add(1)
			if s.bad <= 10 {
				s.ctx.Log.Warn("skipping a line that does not parse", "file", name, "offset", s.off-int64(len(line)), "err", err)
			}
			continue
		}
	}
	s.offsets[name] = s.off
	if s.timeCol >= 0 {
		for _, ts := range b.Cols[s.timeCol].Ints {
			s.maxTS = max(s.maxTS, ts)
		}
	}
	s.idle.Saw(b.Len)
	if b.Len == 0 {
		b.Release()
		return false, nil
	}
	s.ctx.Out.Collect(b)
	return false, nil
}

func (s *fileSource) Watermark() (int64, bool) {
	if s.timeCol < 0 || s.maxTS == runtime.MinWatermark {
		return runtime.MinWatermark, s.idle.Idle()
	}
	return s.maxTS - s.ooo - 1, s.idle.Idle()
}

func (s *fileSource) Snapshot(int64) (runtime.Snapshot, error) {
	var entries [][]byte
	for _, k := range s.mine {
		name := s.files[k]
		e := make([]byte, 16, 16+len(name))
		binary.BigEndian.PutUint64(e, uint64(s.offsets[name]))
		binary.BigEndian.PutUint64(e[8:], uint64(s.maxTS))
		entries = append(entries, append(e, name...))
	}
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for _, e := range entries {
			w.AddOperatorState(e)
		}
		return nil
	}), nil
}

func (s *fileSource) CheckpointComplete(int64) error { return nil }

func (s *fileSource) Close() error {
	if s.f != nil {
		err := s.f.Close()
		s.fstop()
		s.f, s.r = nil, nil
		return err
	}
	return nil
}
