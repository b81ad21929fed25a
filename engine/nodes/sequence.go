package nodes

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// WatermarkParams is the watermark strategy every source accepts.
type WatermarkParams struct {
	OutOfOrderness spec.Duration `json:"outOfOrderness"`
	IdleTimeout    spec.Duration `json:"idleTimeout"`
}

// SequenceParams are the sequence source's params.
type SequenceParams struct {
	Rows       *int64          `json:"rows"`
	Keys       int64           `json:"keys"`
	Start      int64           `json:"start"`
	IntervalMs *int64          `json:"intervalMs"`
	Rate       float64         `json:"rate"`
	Watermark  WatermarkParams `json:"watermark"`
}

// SequenceSchema is the sequence source's output.
var SequenceSchema = row.MustSchema(
	row.Field{Name: "id", Type: row.Int64},
	row.Field{Name: "key", Type: row.Int64},
	row.Field{Name: "ts", Type: row.Timestamp},
)

func init() {
	Register("sequence", Factory{Kind: Source, Plan: planSequence})
}

func planSequence(c *PlanContext) (*Planned, error) {
	var p SequenceParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if p.Rows != nil && *p.Rows < 0 {
		return nil, fmt.Errorf("params.rows: must be ≥ 0, got %d", *p.Rows)
	}
	if p.Keys == 0 {
		p.Keys = 1
	}
	if p.Keys < 1 {
		return nil, fmt.Errorf("params.keys: must be ≥ 1, got %d", p.Keys)
	}
	interval := int64(1)
	if p.IntervalMs != nil {
		interval = *p.IntervalMs
	}
	if interval < 0 {
		return nil, fmt.Errorf("params.intervalMs: must be ≥ 0, got %d", interval)
	}
	if p.Rate < 0 {
		return nil, fmt.Errorf("params.rate: must be > 0 rows/s, got %v", p.Rate)
	}
	rows := int64(math.MaxInt64)
	if p.Rows != nil {
		rows = *p.Rows
	}
	cfg := sequenceConfig{rows: rows, keys: p.Keys, start: p.Start, interval: interval, rate: p.Rate,
		outOfOrder: p.Watermark.OutOfOrderness.Millis()}
	return &Planned{Schema: SequenceSchema, NewSource: func() runtime.Source { return &sequence{cfg: cfg} }}, nil
}

type sequenceConfig struct {
	rows, keys, start, interval int64
	rate                        float64
	outOfOrder                  int64
}

// sequence emits rows id, key = id % keys, ts = start + id×interval.
type sequence struct {
	cfg sequenceConfig
	ids idSplits
}

func (s *sequence) Open(ctx *runtime.Context, r *runtime.Restored) error {
	return s.ids.open(ctx, r, s.cfg.rows, s.cfg.rate)
}

func (s *sequence) Poll() (bool, error) {
	b := row.NewBatch(SequenceSchema)
	ids, keys, tss := b.Cols[0].Ints, b.Cols[1].Ints, b.Cols[2].Ints
	ids = s.ids.next(ids)
	for _, id := range ids {
		keys = append(keys, id%s.cfg.keys)
		tss = append(tss, s.cfg.start+id*s.cfg.interval)
	}
	b.Cols[0].Ints, b.Cols[1].Ints, b.Cols[2].Ints = ids, keys, tss
	b.SetLen(len(ids))
	return s.ids.emit(b)
}

func (s *sequence) Watermark() (int64, bool) {
	return s.ids.watermark(s.cfg.start, s.cfg.interval, s.cfg.outOfOrder), false
}

func (s *sequence) Snapshot(int64) (runtime.Snapshot, error) { return s.ids.snapshot(), nil }
func (s *sequence) CheckpointComplete(int64) error           { return nil }
func (s *sequence) Close() error                             { return nil }

// idSplits hands out row ids 0..rows-1 to a source's subtasks. The ids are
// split into maxParallelism interleaved splits (split j holds the ids ≡ j
// mod S), so a restore with another parallelism just gives splits to other
// subtasks. A split's position is its next round r: its next id is r·S + j.
type idSplits struct {
	ctx    *runtime.Context
	rows   int64
	S      int64
	splits []int64 // owned split ids
	rounds []int64 // next round per owned split
	// rate limiting
	began   time.Time
	emitted int64
	perSub  float64
	budget  int
	done    bool
}

func (s *idSplits) open(ctx *runtime.Context, r *runtime.Restored, rows int64, rate float64) error {
	s.ctx, s.rows = ctx, rows
	s.S = int64(ctx.MaxParallelism)
	restored := map[int64]int64{}
	if r != nil {
		for _, e := range r.OperatorState {
			if len(e) != 16 {
				return fmt.Errorf("source state entry has %d bytes, want 16", len(e))
			}
			restored[int64(binary.BigEndian.Uint64(e))] = int64(binary.BigEndian.Uint64(e[8:]))
		}
	}
	for j := int64(ctx.Subtask); j < s.S; j += int64(ctx.Parallelism) {
		s.splits = append(s.splits, j)
		s.rounds = append(s.rounds, restored[j])
	}
	s.perSub = rate / float64(ctx.Parallelism)
	s.began = time.Now()
	return nil
}

// next appends the next batch of ids (at most one batch, fewer when rate
// limited; none at the end).
func (s *idSplits) next(ids []int64) []int64 {
	n := len(s.splits)
	if n == 0 {
		return ids
	}
	budget := row.DefaultBatchSize
	if s.perSub > 0 {
		allowed := int64(time.Since(s.began).Seconds()*s.perSub) + 1 - s.emitted
		if allowed <= 0 {
			time.Sleep(min(time.Duration(float64(time.Second)/s.perSub), 10*time.Millisecond))
			s.budget = -1
			return ids
		}
		budget = int(min(int64(budget), allowed))
	}
	s.budget = budget
	per := max(1, budget/n)
	for i := range s.splits {
		j, r := s.splits[i], s.rounds[i]
		for k := 0; k < per; k++ {
			id := r*s.S + j
			if id >= s.rows || id < 0 {
				break
			}
			ids = append(ids, id)
			r++
		}
		s.rounds[i] = r
	}
	s.emitted += int64(len(ids))
	return ids
}

// emit sends b, or reports the end when next produced nothing.
func (s *idSplits) emit(b *row.Batch) (bool, error) {
	if b.Len == 0 {
		b.Release()
		return s.budget >= 0, nil // an empty batch from the rate limiter is not the end
	}
	s.ctx.Out.Collect(b)
	return false, nil
}

// watermark: every split emits in id order, so the next id of the slowest
// split bounds every future timestamp.
func (s *idSplits) watermark(start, interval, outOfOrder int64) int64 {
	wm := runtime.MaxWatermark
	for i := range s.splits {
		id := s.rounds[i]*s.S + s.splits[i]
		if id >= s.rows || id < 0 {
			continue
		}
		wm = min(wm, start+id*interval-1-outOfOrder)
	}
	if wm == runtime.MaxWatermark {
		return runtime.MaxWatermark - 1 // the end itself is signalled by Poll
	}
	return wm
}

func (s *idSplits) snapshot() runtime.Snapshot {
	entries := make([][]byte, len(s.splits))
	for i := range s.splits {
		e := make([]byte, 16)
		binary.BigEndian.PutUint64(e, uint64(s.splits[i]))
		binary.BigEndian.PutUint64(e[8:], uint64(s.rounds[i]))
		entries[i] = e
	}
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for _, e := range entries {
			w.AddOperatorState(e)
		}
		return nil
	})
}
