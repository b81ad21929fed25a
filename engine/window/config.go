package window

import (
	"errors"
	"fmt"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

// Kind is the window assigner.
type Kind int

const (
	// Tumbling windows of Size ms, aligned to epoch.
	Tumbling Kind = iota
	// Sliding windows of Size ms starting every Slide ms; a row belongs to
	// about Size/Slide windows.
	Sliding
	// Session windows per key: rows closer than Gap ms apart share a window.
	Session
)

var kindNames = [...]string{"tumbling", "sliding", "session"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Fn is an aggregate function. All of them are incremental and mergeable.
type Fn int

const (
	Count Fn = iota
	Sum
	Min
	Max
	Avg
)

var fnNames = [...]string{"count", "sum", "min", "max", "avg"}

func (f Fn) String() string {
	if f >= 0 && int(f) < len(fnNames) {
		return fnNames[f]
	}
	return fmt.Sprintf("fn(%d)", int(f))
}

// Agg is one output aggregate. Field is empty for Count (counting rows; a
// named field is checked to exist and counted the same way, rows having no
// nulls).
type Agg struct {
	Name  string
	Fn    Fn
	Field string
}

// Config describes a window operator.
type Config struct {
	Kind             Kind
	Size, Slide, Gap int64 // ms; Size for tumbling and sliding, Slide for sliding, Gap for session
	AllowedLateness  int64 // ms

	KeyFields []string // may be empty: one global key
	TimeField string   // a timestamp or int64 field: event time in ms
	Aggs      []Agg

	// MaxParallelism is the number of key groups (default
	// state.DefaultMaxParallelism); KeyGroups is the range this subtask owns
	// (default: all of them).
	MaxParallelism int
	KeyGroups      state.KeyGroupRange

	// Backend is where keyed state lives: BackendHeap (the default, also
	// "") or BackendBadger, a badger database in Dir (created, emptied
	// first, and removed by Close) for state larger than memory. Both
	// give the same output and the same snapshot format.
	Backend string
	Dir     string
	// Badger sizes the badger backend's memory; zero fields take the
	// defaults (memtables 32 MiB, block cache 64 MiB, index cache 32 MiB).
	Badger BadgerMemory
}

// BadgerMemory bounds what a badger database keeps in memory, in bytes:
// two memtables of MemTable each, the block cache and the index cache.
type BadgerMemory = state.BadgerMemory

// State backends.
const (
	BackendHeap   = "heap"
	BackendBadger = "badger"
)

// Names of the two window columns in the output.
const (
	WindowStart = "window_start"
	WindowEnd   = "window_end"
)

func (cfg *Config) normalise() {
	if cfg.MaxParallelism == 0 {
		cfg.MaxParallelism = state.DefaultMaxParallelism
	}
	if cfg.KeyGroups == (state.KeyGroupRange{}) {
		cfg.KeyGroups = state.KeyGroupRange{Start: 0, End: cfg.MaxParallelism}
	}
}

// OutputSchema validates cfg against the input schema and returns the
// schema of the rows the operator emits: the key fields (same names and
// types), window_start and window_end (timestamps), then one field per
// aggregate: count → int64; sum → int64 over int64/timestamp fields, else
// float64; min/max → the field's type; avg → float64.
func OutputSchema(cfg Config, in *row.Schema) (*row.Schema, error) {
	l, err := plan(cfg, in)
	if err != nil {
		return nil, err
	}
	return l.out, nil
}

// layout is what New derives from a valid config: column positions, the
// accumulator's word layout and the output schema.
type layout struct {
	cfg      Config
	in, out  *row.Schema
	keyCols  []int
	keyTypes []row.Type
	intKey   bool // a single int64/timestamp key: the fast path
	timeCol  int
	ops      []updOp // how a row updates an accumulator
	outs     []outOp // how an accumulator becomes output columns
	accWords int     // words per accumulator; word 0 is count (and flags)
	fp       string  // fingerprint of what snapshots depend on
}

func plan(cfg Config, in *row.Schema) (*layout, error) {
	if in == nil {
		return nil, errors.New("window: no input schema")
	}
	cfg.normalise()
	l := &layout{cfg: cfg, in: in}
	switch cfg.Kind {
	case Tumbling:
		if cfg.Size <= 0 {
			return nil, fmt.Errorf("window: tumbling size must be > 0 ms, got %d", cfg.Size)
		}
	case Sliding:
		if cfg.Size <= 0 {
			return nil, fmt.Errorf("window: sliding size must be > 0 ms, got %d", cfg.Size)
		}
		if cfg.Slide <= 0 {
			return nil, fmt.Errorf("window: sliding slide must be > 0 ms, got %d", cfg.Slide)
		}
		if cfg.Slide > cfg.Size {
			return nil, fmt.Errorf("window: sliding slide %d ms is larger than size %d ms (rows would be dropped)", cfg.Slide, cfg.Size)
		}
	case Session:
		if cfg.Gap <= 0 {
			return nil, fmt.Errorf("window: session gap must be > 0 ms, got %d", cfg.Gap)
		}
	default:
		return nil, fmt.Errorf("window: unknown kind %d", int(cfg.Kind))
	}
	switch cfg.Backend {
	case "", BackendHeap, BackendBadger: // badger's Dir is checked by New
	default:
		return nil, fmt.Errorf("window: unknown state backend %q (want %s or %s)", cfg.Backend, BackendHeap, BackendBadger)
	}
	if cfg.AllowedLateness < 0 {
		return nil, fmt.Errorf("window: allowed lateness must be >= 0 ms, got %d", cfg.AllowedLateness)
	}
	if cfg.MaxParallelism < 1 {
		return nil, fmt.Errorf("window: max parallelism must be >= 1, got %d", cfg.MaxParallelism)
	}
	if r := cfg.KeyGroups; r.Start < 0 || r.End > cfg.MaxParallelism || r.Start >= r.End {
		return nil, fmt.Errorf("window: key group range [%d, %d) is empty or outside [0, %d)", r.Start, r.End, cfg.MaxParallelism)
	}

	var fields []row.Field
	seen := map[string]string{}
	addOut := func(f row.Field, what string) error {
		if prev, dup := seen[f.Name]; dup {
			return fmt.Errorf("window: output field %q of %s duplicates %s", f.Name, what, prev)
		}
		seen[f.Name] = what
		fields = append(fields, f)
		return nil
	}
	for _, k := range cfg.KeyFields {
		c := in.Index(k)
		if c < 0 {
			return nil, fmt.Errorf("window: unknown key field %q (input %s)", k, in)
		}
		l.keyCols = append(l.keyCols, c)
		l.keyTypes = append(l.keyTypes, in.Fields[c].Type)
		if err := addOut(in.Fields[c], fmt.Sprintf("key field %q", k)); err != nil {
			return nil, err
		}
	}
	l.intKey = len(l.keyCols) == 1 && l.keyTypes[0].IsInt()
	if cfg.TimeField == "" {
		return nil, errors.New("window: no time field")
	}
	l.timeCol = in.Index(cfg.TimeField)
	if l.timeCol < 0 {
		return nil, fmt.Errorf("window: unknown time field %q (input %s)", cfg.TimeField, in)
	}
	if t := in.Fields[l.timeCol].Type; !t.IsInt() {
		return nil, fmt.Errorf("window: time field %q is %s, want timestamp or int64", cfg.TimeField, t)
	}
	if err := addOut(row.Field{Name: WindowStart, Type: row.Timestamp}, "the window start"); err != nil {
		return nil, err
	}
	if err := addOut(row.Field{Name: WindowEnd, Type: row.Timestamp}, "the window end"); err != nil {
		return nil, err
	}
	if len(cfg.Aggs) == 0 {
		return nil, errors.New("window: no aggregates")
	}
	l.accWords = 1
	words := map[[2]int]int{} // (op code, column) → word, so sum(x) and avg(x) share one
	for _, a := range cfg.Aggs {
		if a.Name == "" {
			return nil, fmt.Errorf("window: %s aggregate of %q has no name", a.Fn, a.Field)
		}
		col := -1
		var ft row.Type
		if a.Field != "" {
			col = in.Index(a.Field)
			if col < 0 {
				return nil, fmt.Errorf("window: aggregate %q: unknown field %q (input %s)", a.Name, a.Field, in)
			}
			ft = in.Fields[col].Type
		} else if a.Fn != Count {
			return nil, fmt.Errorf("window: aggregate %q: %s needs a field", a.Name, a.Fn)
		}
		num := ft == row.Int64 || ft == row.Timestamp || ft == row.Float64
		isF := ft == row.Float64
		var outT row.Type
		var code opCode
		switch a.Fn {
		case Count:
			outT = row.Int64
		case Sum:
			if !num {
				return nil, fmt.Errorf("window: aggregate %q: sum of %s field %q", a.Name, ft, a.Field)
			}
			outT, code = row.Int64, opSumI
			if isF {
				outT, code = row.Float64, opSumF
			}
		case Avg:
			if !num {
				return nil, fmt.Errorf("window: aggregate %q: avg of %s field %q", a.Name, ft, a.Field)
			}
			outT, code = row.Float64, opSumI
			if isF {
				code = opSumF
			}
		case Min, Max:
			if !num {
				return nil, fmt.Errorf("window: aggregate %q: %s of %s field %q", a.Name, a.Fn, ft, a.Field)
			}
			outT = ft
			switch {
			case a.Fn == Min && isF:
				code = opMinF
			case a.Fn == Min:
				code = opMinI
			case isF:
				code = opMaxF
			default:
				code = opMaxI
			}
		default:
			return nil, fmt.Errorf("window: aggregate %q: unknown function %d", a.Name, int(a.Fn))
		}
		o := outOp{fn: a.Fn, typ: outT, word: 0, float: isF}
		if a.Fn != Count {
			w, ok := words[[2]int{int(code), col}]
			if !ok {
				w = l.accWords
				l.accWords++
				words[[2]int{int(code), col}] = w
				l.ops = append(l.ops, updOp{code: code, col: col, word: w})
			}
			o.word = w
		}
		l.outs = append(l.outs, o)
		if err := addOut(row.Field{Name: a.Name, Type: outT}, fmt.Sprintf("aggregate %q", a.Name)); err != nil {
			return nil, err
		}
	}
	out, err := row.NewSchema(fields...)
	if err != nil {
		return nil, fmt.Errorf("window: output schema: %w", err)
	}
	l.out = out
	// The fingerprint covers what gives snapshot bytes their meaning; the
	// lateness and the key group range may change between runs.
	l.fp = fmt.Sprintf("%s/%d/%d/%d/maxp%d/keys%v/aggs", cfg.Kind, cfg.Size, cfg.Slide, cfg.Gap, cfg.MaxParallelism, l.keyTypes)
	for _, op := range l.ops {
		l.fp += fmt.Sprintf("/%d@%d", op.code, op.word)
	}
	return l, nil
}
