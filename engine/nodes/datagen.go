package nodes

import (
	"fmt"
	"math"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/state"
)

func init() {
	Register("datagen", Factory{Kind: Source, Plan: planDatagen})
}

type datagenField struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Min         *float64 `json:"min"`
	Max         *float64 `json:"max"`
	Length      int      `json:"length"`
	Values      []any    `json:"values"`
	Cardinality int64    `json:"cardinality"`
}

type datagenParams struct {
	Fields     []datagenField  `json:"fields"`
	Rows       *int64          `json:"rows"`
	Seed       int64           `json:"seed"`
	Rate       float64         `json:"rate"`
	EventTime  string          `json:"eventTime"`
	Start      int64           `json:"start"`
	IntervalMs *int64          `json:"intervalMs"`
	Watermark  WatermarkParams `json:"watermark"`
}

// genField produces one field's value for a row id, deterministically:
// the same (seed, id) gives the same row whatever the parallelism, so a
// replay after a restore emits exactly what the first attempt did.
type genField struct {
	t            row.Type
	min, max     float64
	length       int
	values       *row.Column
	cardinality  int64
	salt         uint64
	start, every int64
}

func planDatagen(c *PlanContext) (*Planned, error) {
	var p datagenParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if len(p.Fields) == 0 {
		return nil, fmt.Errorf("params.fields: required (a list of {name, type, …})")
	}
	if p.Seed == 0 {
		p.Seed = 1
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
	fields := make([]row.Field, len(p.Fields))
	gens := make([]genField, len(p.Fields))
	for i, f := range p.Fields {
		at := fmt.Sprintf("params.fields[%d] (%q)", i, f.Name)
		t, err := row.ParseType(f.Type)
		if err != nil {
			return nil, fmt.Errorf("%s.type: %w", at, err)
		}
		fields[i] = row.Field{Name: f.Name, Type: t}
		g := genField{t: t, min: 0, max: 1000, length: f.Length, cardinality: f.Cardinality,
			salt: state.HashInt(p.Seed*1_000_003 + int64(i)), start: p.Start, every: interval}
		if t == row.Float64 {
			g.max = 1
		}
		if f.Min != nil {
			g.min = *f.Min
		}
		if f.Max != nil {
			g.max = *f.Max
		}
		if g.max < g.min {
			return nil, fmt.Errorf("%s: max %v is below min %v", at, g.max, g.min)
		}
		if g.length == 0 {
			g.length = 8
		}
		if f.Cardinality < 0 {
			return nil, fmt.Errorf("%s.cardinality: must be ≥ 1", at)
		}
		if len(f.Values) > 0 {
			g.values = &row.Column{Type: t}
			for k, v := range f.Values {
				if err := g.values.AppendValue(v); err != nil {
					return nil, fmt.Errorf("%s.values[%d]: %w", at, k, err)
				}
			}
		}
		gens[i] = g
	}
	schema, err := row.NewSchema(fields...)
	if err != nil {
		return nil, fmt.Errorf("params.fields: %w", err)
	}
	if p.EventTime != "" {
		i := schema.Index(p.EventTime)
		if i < 0 || schema.Fields[i].Type != row.Timestamp {
			return nil, fmt.Errorf("params.eventTime: %q is not a timestamp field of %s", p.EventTime, schema)
		}
	}
	rows := int64(math.MaxInt64)
	if p.Rows != nil {
		if *p.Rows < 0 {
			return nil, fmt.Errorf("params.rows: must be ≥ 0, got %d", *p.Rows)
		}
		rows = *p.Rows
	}
	hasTime := p.EventTime != ""
	ooo := p.Watermark.OutOfOrderness.Millis()
	idle := p.Watermark.IdleTimeout.D()
	return &Planned{Schema: schema, NewSource: func() runtime.Source {
		return &datagen{schema: schema, gens: gens, rows: rows, rate: p.Rate, hasTime: hasTime, start: p.Start, interval: interval, ooo: ooo, idle: idle}
	}}, nil
}

type datagen struct {
	schema          *row.Schema
	gens            []genField
	rows            int64
	rate            float64
	hasTime         bool
	start, interval int64
	ooo             int64
	idle            time.Duration
	ids             idSplits
	idbuf           []int64
}

func (d *datagen) Open(ctx *runtime.Context, r *runtime.Restored) error {
	d.ids.idle = NewIdleness(d.idle)
	return d.ids.open(ctx, r, d.rows, d.rate)
}

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func (d *datagen) Poll() (bool, error) {
	d.idbuf = d.ids.next(d.idbuf[:0])
	b := row.NewBatch(d.schema)
	for c := range d.gens {
		g := &d.gens[c]
		col := &b.Cols[c]
		for _, id := range d.idbuf {
			r := state.HashInt(id ^ int64(g.salt))
			if g.values != nil {
				col.AppendValue(g.values.Value(int(r % uint64(g.values.Len()))))
				continue
			}
			switch g.t {
			case row.Int64:
				span := uint64(g.max-g.min) + 1
				col.Ints = append(col.Ints, int64(g.min)+int64(r%span))
			case row.Float64:
				col.Floats = append(col.Floats, g.min+(g.max-g.min)*float64(r>>11)/(1<<53))
			case row.Timestamp:
				col.Ints = append(col.Ints, g.start+id*g.every)
			case row.Bool:
				col.Bools = append(col.Bools, r&1 == 1)
			case row.String, row.Bytes:
				if g.cardinality > 0 {
					r = state.HashInt(int64(r%uint64(g.cardinality)) ^ int64(g.salt))
				}
				buf := make([]byte, g.length)
				for k := range buf {
					buf[k] = alphabet[r%uint64(len(alphabet))]
					r = r/uint64(len(alphabet)) ^ state.HashInt(int64(r)+int64(k))
				}
				if g.t == row.String {
					col.Strs = append(col.Strs, string(buf))
				} else {
					col.Bytes = append(col.Bytes, buf)
				}
			}
		}
	}
	b.SetLen(len(d.idbuf))
	return d.ids.emit(b)
}

func (d *datagen) Watermark() (int64, bool) {
	if !d.hasTime {
		return runtime.MinWatermark, d.ids.idle.Idle()
	}
	return d.ids.watermark(d.start, timeStep{num: d.interval, den: 1}, d.ooo), d.ids.idle.Idle()
}

func (d *datagen) Snapshot(int64) (runtime.Snapshot, error) { return d.ids.snapshot(), nil }
func (d *datagen) CheckpointComplete(int64) error           { return nil }
func (d *datagen) Close() error                             { return nil }
