package nodes

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/engine/window"
)

func init() {
	Register("window", Factory{Kind: Operator, MinInputs: 1, MaxInputs: 1, Plan: planWindow})
}

type aggParams struct {
	Name  string `json:"name"`
	Fn    string `json:"fn"`
	Field string `json:"field"`
}

type windowParams struct {
	Keys            []string      `json:"keys"`
	TimeField       string        `json:"timeField"`
	Type            string        `json:"type"`
	Size            spec.Duration `json:"size"`
	Slide           spec.Duration `json:"slide"`
	Gap             spec.Duration `json:"gap"`
	AllowedLateness spec.Duration `json:"allowedLateness"`
	LateOutput      string        `json:"lateOutput"`
	Aggregates      []aggParams   `json:"aggregates"`
}

var aggFns = map[string]window.Fn{"count": window.Count, "sum": window.Sum, "min": window.Min, "max": window.Max, "avg": window.Avg}

func planWindow(c *PlanContext) (*Planned, error) {
	var p windowParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	cfg := window.Config{TimeField: p.TimeField, KeyFields: p.Keys, AllowedLateness: p.AllowedLateness.Millis(),
		MaxParallelism: c.Job.MaxParallelism}
	if cfg.TimeField == "" {
		cfg.TimeField = "ts"
	}
	if upKeys := c.InputKeys[0]; upKeys != nil {
		if len(p.Keys) == 0 {
			cfg.KeyFields = upKeys
		} else if fmt.Sprint(p.Keys) != fmt.Sprint(upKeys) {
			return nil, fmt.Errorf("params.keys: %v differ from the keys %v of the keyBy input", p.Keys, upKeys)
		}
	}
	if len(cfg.KeyFields) == 0 {
		return nil, fmt.Errorf("params.keys: required unless the input is a keyBy")
	}
	switch p.Type {
	case "tumbling":
		cfg.Kind, cfg.Size, cfg.Slide = window.Tumbling, p.Size.Millis(), p.Size.Millis()
	case "sliding":
		cfg.Kind, cfg.Size, cfg.Slide = window.Sliding, p.Size.Millis(), p.Slide.Millis()
		if p.Slide == 0 {
			return nil, fmt.Errorf("params.slide: required for a sliding window")
		}
	case "session":
		cfg.Kind, cfg.Gap = window.Session, p.Gap.Millis()
		if p.Gap == 0 {
			return nil, fmt.Errorf("params.gap: required for a session window")
		}
	case "":
		return nil, fmt.Errorf("params.type: required (tumbling, sliding or session)")
	default:
		return nil, fmt.Errorf("params.type: unknown window type %q (want tumbling, sliding or session)", p.Type)
	}
	if p.Type != "session" && p.Size == 0 {
		return nil, fmt.Errorf("params.size: required for a %s window", p.Type)
	}
	if len(p.Aggregates) == 0 {
		return nil, fmt.Errorf("params.aggregates: required (at least one of count, sum, min, max, avg)")
	}
	for i, a := range p.Aggregates {
		fn, ok := aggFns[a.Fn]
		if !ok {
			return nil, fmt.Errorf("params.aggregates[%d].fn: unknown aggregate %q (want count, sum, min, max or avg)", i, a.Fn)
		}
		if a.Name == "" {
			return nil, fmt.Errorf("params.aggregates[%d].name: required", i)
		}
		if fn != window.Count && a.Field == "" {
			return nil, fmt.Errorf("params.aggregates[%d].field: required for %s", i, a.Fn)
		}
		cfg.Aggs = append(cfg.Aggs, window.Agg{Name: a.Name, Fn: fn, Field: a.Field})
	}
	in := c.Inputs[0]
	if err := checkWindowFields(cfg, p, in); err != nil {
		return nil, err
	}
	out, err := window.OutputSchema(cfg, in)
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	if c.Job.StateBackend == spec.Badger {
		cfg.Backend = window.BackendBadger
		if b := c.Job.Badger; b != nil {
			cfg.Badger = window.BadgerMemory{MemTable: int64(b.MemtableMiB) << 20, BlockCache: int64(b.BlockCacheMiB) << 20, IndexCache: int64(b.IndexCacheMiB) << 20}
		}
	}
	pl := &Planned{Schema: out, NewOperator: func() runtime.Operator { return &windowOp{cfg: cfg, in: in, late: p.LateOutput} }}
	if p.LateOutput != "" {
		pl.Side = map[string]*row.Schema{p.LateOutput: in}
	}
	// The window needs its input partitioned by its keys.
	pl.PartitionBy = cfg.KeyFields
	return pl, nil
}

// checkWindowFields checks the fields the window reads against its input,
// so that an error names the param (window.OutputSchema checks them too, but
// names only the aggregate).
func checkWindowFields(cfg window.Config, p windowParams, in *row.Schema) error {
	for i, k := range cfg.KeyFields {
		if in.Index(k) < 0 {
			at := "params.keys"
			if len(p.Keys) > 0 {
				at = fmt.Sprintf("params.keys[%d]", i)
			}
			return fmt.Errorf("%s: field %q is not in the input %s", at, k, in)
		}
	}
	if c := in.Index(cfg.TimeField); c < 0 {
		return fmt.Errorf("params.timeField: field %q is not in the input %s", cfg.TimeField, in)
	} else if t := in.Fields[c].Type; !t.IsInt() {
		return fmt.Errorf("params.timeField: field %q is %s, want timestamp or int64", cfg.TimeField, t)
	}
	for i, a := range p.Aggregates {
		if a.Field == "" {
			continue
		}
		c := in.Index(a.Field)
		if c < 0 {
			return fmt.Errorf("params.aggregates[%d].field: field %q is not in the input %s", i, a.Field, in)
		}
		if t := in.Fields[c].Type; a.Fn != "count" && t != row.Int64 && t != row.Timestamp && t != row.Float64 {
			return fmt.Errorf("params.aggregates[%d].field: %s of %s field %q (want int64, float64 or timestamp)", i, a.Fn, t, a.Field)
		}
	}
	return nil
}

type windowOp struct {
	runtime.BaseOperator
	cfg  window.Config
	in   *row.Schema
	late string
	op   *window.Operator
	wm   int64
}

func (w *windowOp) Open(ctx *runtime.Context, r *runtime.Restored) error {
	w.Ctx = ctx
	w.cfg.KeyGroups = ctx.KeyGroups
	w.cfg.MaxParallelism = ctx.MaxParallelism
	if w.cfg.Backend == window.BackendBadger {
		// The subtask's own directory: badger keeps the keyed state there.
		w.cfg.Dir = ctx.LocalDir
	}
	op, err := window.New(w.cfg, w.in)
	if err != nil {
		return err
	}
	w.op = op
	w.wm = runtime.MinWatermark
	if r != nil {
		if r.Keyed != nil {
			// One key group in memory at a time, in a reused buffer (Restore
			// and RestoreDelta copy what they keep).
			var buf []byte
			err := r.Keyed(func(s runtime.KeyedState) error {
				buf = slices.Grow(buf[:0], int(s.Size))[:s.Size]
				if _, err := io.ReadFull(s.R, buf); err != nil {
					return fmt.Errorf("reading key group %d: %w", s.KeyGroup, err)
				}
				if s.Delta == 0 {
					if err := op.Restore(s.KeyGroup, buf); err != nil {
						return fmt.Errorf("restoring key group %d: %w", s.KeyGroup, err)
					}
					return nil
				}
				// An incremental checkpoint: the key group's deltas, in order.
				if err := op.RestoreDelta(s.KeyGroup, buf); err != nil {
					return fmt.Errorf("restoring delta %d of key group %d: %w", s.Delta, s.KeyGroup, err)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if err := op.FinishRestore(); err != nil {
			return err
		}
		// Operator state holds each old subtask's watermark; the lowest is
		// the one every restored key group had reached.
		wm := runtime.MaxWatermark
		for _, e := range r.OperatorState {
			if len(e) == 8 {
				wm = min(wm, int64(binary.BigEndian.Uint64(e)))
			}
		}
		if len(r.OperatorState) > 0 {
			w.wm = wm
			op.RestoreWatermark(wm)
		}
	}
	return nil
}

func (w *windowOp) Process(_ int, b *row.Batch) error {
	var late *row.Batch
	side := w.Ctx.Side[w.late]
	if side != nil {
		late = row.NewBatch(w.in)
	}
	n := w.op.Process(b, late)
	b.Release()
	if late != nil {
		if late.Len > 0 {
			side.Collect(late)
		} else {
			late.Release()
		}
	} else if n > 0 {
		w.Ctx.Metrics.Dropped.Add(int64(n))
	}
	return nil
}

func (w *windowOp) Watermark(wm int64) error {
	w.wm = wm
	w.op.AdvanceWatermark(wm, w.Ctx.Out.Collect)
	w.Ctx.Out.Watermark(wm)
	if side := w.Ctx.Side[w.late]; side != nil {
		side.Watermark(wm)
	}
	return nil
}

// Close closes the window's state (the badger database, removing its
// directory).
func (w *windowOp) Close() error {
	if w.op == nil {
		return nil
	}
	return w.op.Close()
}

func (w *windowOp) Snapshot(id int64) (runtime.Snapshot, error) {
	var s *window.Snapshot
	if w.Ctx.Incremental && !w.Ctx.InSavepoint() {
		s = w.op.SnapshotIncremental(id, w.Ctx.LastCompleted())
	} else {
		s = w.op.Snapshot()
	}
	wm := w.wm
	return deltaSnapshot{base: s.Base(), f: func(sw runtime.StateWriter) error {
		defer s.Release()
		// One key group in memory at a time, written to storage as it comes.
		var buf []byte
		for _, kg := range s.KeyGroups() {
			buf = s.WriteKeyGroup(kg, buf[:0])
			if err := s.Err(); err != nil {
				return err
			}
			if kw, ok := sw.(runtime.KeyGroupWriter); ok {
				if _, err := kw.KeyGroup(kg).Write(buf); err != nil {
					return err
				}
			} else {
				sw.AddKeyGroup(kg, append([]byte(nil), buf...))
			}
		}
		if err := s.Err(); err != nil {
			return err
		}
		e := make([]byte, 8)
		binary.BigEndian.PutUint64(e, uint64(wm))
		sw.AddOperatorState(e)
		return nil
	}}, nil
}

// CheckpointComplete lets an incremental snapshot build on checkpoint id.
func (w *windowOp) CheckpointComplete(id int64) error {
	w.op.Confirm(id)
	return nil
}

// deltaSnapshot is a runtime.DeltaSnapshot (base 0: a full snapshot).
type deltaSnapshot struct {
	base int64
	f    runtime.SnapshotFunc
}

func (d deltaSnapshot) Write(w runtime.StateWriter) error { return d.f(w) }
func (d deltaSnapshot) DeltaBase() int64                  { return d.base }
