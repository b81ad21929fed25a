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
	IntervalMs *float64        `json:"intervalMs"`
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
	interval := 1.0
	if p.IntervalMs != nil {
		interval = *p.IntervalMs
	}
	step, err := newTimeStep(interval)
	if err != nil {
		return nil, fmt.Errorf("params.intervalMs: %w", err)
	}
	if p.Rate < 0 {
		return nil, fmt.Errorf("params.rate: must be > 0 rows/s, got %v", p.Rate)
	}
	rows := int64(math.MaxInt64)
	if p.Rows != nil {
		rows = *p.Rows
	}
	cfg := sequenceConfig{rows: rows, keys: p.Keys, start: p.Start, step: step, rate: p.Rate,
		outOfOrder: p.Watermark.OutOfOrderness.Millis(), idle: p.Watermark.IdleTimeout.D()}
	return &Planned{Schema: SequenceSchema, NewSource: func() runtime.Source { return &sequence{cfg: cfg} }}, nil
}

type sequenceConfig struct {
	rows, keys, start int64
	step              timeStep
	rate              float64
	outOfOrder        int64
	idle              time.Duration
}

// timeStep is a row interval in milliseconds as an exact fraction num/den,
// so sub-millisecond intervals (0.01 = 100 rows per ms) give the same
// timestamps on every run and in every test oracle: ts = start + id·num/den.
type timeStep struct{ num, den int64 }

func newTimeStep(ms float64) (timeStep, error) {
	if ms < 0 || math.IsNaN(ms) || math.IsInf(ms, 0) {
		return timeStep{}, fmt.Errorf("must be a number ≥ 0, got %v", ms)
	}
	for den := int64(1); den <= 1_000_000; den *= 10 {
		if num := ms * float64(den); num == math.Trunc(num) {
			return timeStep{num: int64(num), den: den}, nil
		}
	}
	return timeStep{}, fmt.Errorf("%v has more than 6 decimals", ms)
}

// at is the timestamp of row id.
func (t timeStep) at(start, id int64) int64 {
	if t.den == 1 {
		return start + id*t.num
	}
	return start + id*t.num/t.den
}

// sequence emits rows id, key = id % keys, ts = start + id×interval.
type sequence struct {
	cfg sequenceConfig
	ids idSplits
}

func (s *sequence) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.ids.idle = NewIdleness(s.cfg.idle)
	return s.ids.open(ctx, r, s.cfg.rows, s.cfg.rate)
}

func (s *sequence) Poll() (bool, error) {
	b := row.NewBatch(SequenceSchema)
	ids, keys, tss := b.Cols[0].Ints, b.Cols[1].Ints, b.Cols[2].Ints
	ids = s.ids.next(ids)
	for _, id := range ids {
		keys = append(keys, id%s.cfg.keys)
		tss = append(tss, s.cfg.step.at(s.cfg.start, id))
	}
	b.Cols[0].Ints, b.Cols[1].Ints, b.Cols[2].Ints = ids, keys, tss
	b.SetLen(len(ids))
	return s.ids.emit(b)
}

func (s *sequence) Watermark() (int64, bool) {
	return s.ids.watermark(s.cfg.start, s.cfg.step, s.cfg.outOfOrder), s.ids.idle.Idle()
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
	idle    Idleness
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
	if s.S%int64(s.ctx.Parallelism) == 0 && s.inStep() {
		// Every owned split is at the same round and they are evenly
		// spaced: the ids are one strided range, emitted in order.
		p := int64(s.ctx.Parallelism)
		r := s.rounds[0]
		end := min(s.rows, (r+int64(per))*s.S)
		for id := r*s.S + s.splits[0]; id < end; id += p {
			ids = append(ids, id)
		}
		for i := range s.rounds {
			s.rounds[i] = r + int64(per)
		}
		s.emitted += int64(len(ids))
		return ids
	}
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

// inStep reports whether every owned split is at the same round.
func (s *idSplits) inStep() bool {
	for _, r := range s.rounds[1:] {
		if r != s.rounds[0] {
			return false
		}
	}
	return true
}

// emit sends b, or reports the end when next produced nothing.
func (s *idSplits) emit(b *row.Batch) (bool, error) {
	s.idle.Saw(b.Len)
	if b.Len == 0 {
		b.Release()
		return s.budget >= 0, nil // an empty batch from the rate limiter is not the end
	}
	s.ctx.Out.Collect(b)
	return false, nil
}

// watermark: every split emits in id order, so the next id of the slowest
// split bounds every future timestamp.
func (s *idSplits) watermark(start int64, step timeStep, outOfOrder int64) int64 {
	wm := runtime.MaxWatermark
	for i := range s.splits {
		id := s.rounds[i]*s.S + s.splits[i]
		if id >= s.rows || id < 0 {
			continue
		}
		wm = min(wm, step.at(start, id)-1-outOfOrder)
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
