package nodes

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"time"

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

type discardParams struct {
	// Rate, when > 0, is the most rows per second each subtask takes: a
	// slow consumer, to see back-pressure.
	Rate float64 `json:"rate"`
}

func planDiscard(c *PlanContext) (*Planned, error) {
	var p discardParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if p.Rate < 0 {
		return nil, fmt.Errorf("params.rate: must be ≥ 0 rows/s, got %v", p.Rate)
	}
	return &Planned{NewOperator: func() runtime.Operator { return &discard{rate: p.Rate} }}, nil
}

type discard struct {
	runtime.BaseOperator
	rate  float64
	start time.Time
	rows  int64
}

func (d *discard) Process(_ int, b *row.Batch) error {
	n := b.Len
	b.Release()
	if d.rate <= 0 {
		return nil
	}
	if d.start.IsZero() {
		d.start = time.Now()
	}
	d.rows += int64(n)
	// Hold the task until the rows taken so far are due at the rate.
	if wait := time.Until(d.start.Add(time.Duration(float64(d.rows) / d.rate * float64(time.Second)))); wait > 0 {
		time.Sleep(wait)
	}
	return nil
}

func (d *discard) Watermark(int64) error { return nil }
