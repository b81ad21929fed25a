package nodes

import (
	"bufio"
	"os"
	"sync"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

func init() {
	Register("print", Factory{Kind: Sink, MinInputs: 1, MaxInputs: 1, Plan: planPrint})
	Register("discard", Factory{Kind: Sink, MinInputs: 1, Plan: planDiscard})
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
