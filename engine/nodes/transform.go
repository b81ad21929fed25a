package nodes

import (
	"fmt"

	"github.com/sluice-stream/sluice/engine/expr"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

func init() {
	Register("filter", Factory{Kind: Operator, MinInputs: 1, MaxInputs: 1, Plan: planFilter})
	Register("project", Factory{Kind: Operator, MinInputs: 1, MaxInputs: 1, Plan: planProject})
	Register("union", Factory{Kind: Operator, MinInputs: 2, Plan: planUnion})
	Register("keyBy", Factory{Kind: Operator, MinInputs: 1, MaxInputs: 1, Plan: planKeyBy})
}

type filterParams struct {
	Expr string `json:"expr"`
}

func planFilter(c *PlanContext) (*Planned, error) {
	var p filterParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if p.Expr == "" {
		return nil, fmt.Errorf("params.expr: required (a boolean expression over %s)", c.Inputs[0])
	}
	e, err := expr.Compile(p.Expr, c.Inputs[0])
	if err != nil {
		return nil, fmt.Errorf("params.expr: %w", err)
	}
	if e.Type() != row.Bool {
		return nil, fmt.Errorf("params.expr: %q is %s, a filter needs a boolean expression", p.Expr, e.Type())
	}
	return &Planned{Schema: c.Inputs[0], NewOperator: func() runtime.Operator {
		e, _ := expr.Compile(p.Expr, c.Inputs[0]) // each subtask its own scratch space
		return &filter{e: e}
	}}, nil
}

type filter struct {
	runtime.BaseOperator
	e   *expr.Expr
	sel []int32
}

func (f *filter) Process(_ int, b *row.Batch) error {
	var err error
	f.sel, err = f.e.Select(b, f.sel[:0])
	if err != nil {
		b.Release()
		return err
	}
	if len(f.sel) == 0 {
		b.Release()
		return nil
	}
	b.Keep(f.sel)
	f.Ctx.Out.Collect(b)
	return nil
}

type projectField struct {
	Name string `json:"name"`
	Expr string `json:"expr"`
}

type projectParams struct {
	Fields []projectField `json:"fields"`
}

func planProject(c *PlanContext) (*Planned, error) {
	var p projectParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if len(p.Fields) == 0 {
		return nil, fmt.Errorf("params.fields: required (a list of {name, expr})")
	}
	fields := make([]row.Field, len(p.Fields))
	for i, f := range p.Fields {
		if f.Name == "" {
			return nil, fmt.Errorf("params.fields[%d].name: required", i)
		}
		if f.Expr == "" {
			return nil, fmt.Errorf("params.fields[%d] (%q).expr: required", i, f.Name)
		}
		e, err := expr.Compile(f.Expr, c.Inputs[0])
		if err != nil {
			return nil, fmt.Errorf("params.fields[%d] (%q).expr: %w", i, f.Name, err)
		}
		fields[i] = row.Field{Name: f.Name, Type: e.Type()}
	}
	out, err := row.NewSchema(fields...)
	if err != nil {
		return nil, fmt.Errorf("params.fields: %w", err)
	}
	in := c.Inputs[0]
	return &Planned{Schema: out, NewOperator: func() runtime.Operator {
		pr := &project{out: out}
		for _, f := range p.Fields {
			e, _ := expr.Compile(f.Expr, in)
			pr.exprs = append(pr.exprs, e)
		}
		return pr
	}}, nil
}

type project struct {
	runtime.BaseOperator
	out   *row.Schema
	exprs []*expr.Expr
}

func (p *project) Process(_ int, b *row.Batch) error {
	o := row.NewBatch(p.out)
	for i, e := range p.exprs {
		if err := e.Eval(b, &o.Cols[i]); err != nil {
			b.Release()
			o.Release()
			return err
		}
	}
	o.SetLen(b.Len)
	b.Release()
	p.Ctx.Out.Collect(o)
	return nil
}

func planUnion(c *PlanContext) (*Planned, error) {
	if err := c.Params(&struct{}{}); err != nil {
		return nil, err
	}
	for i, s := range c.Inputs[1:] {
		if !s.Equal(c.Inputs[0]) {
			return nil, fmt.Errorf("inputs[%d] (%q) has schema %s, but inputs[0] (%q) has %s: union needs the same schema",
				i+1, c.Node.Inputs[i+1].From, s, c.Node.Inputs[0].From, c.Inputs[0])
		}
	}
	return &Planned{Schema: c.Inputs[0], NewOperator: func() runtime.Operator { return &forward{} }}, nil
}

// forward passes batches on unchanged (union, keyBy: the work is in the
// exchange in front of them).
type forward struct{ runtime.BaseOperator }

func (f *forward) Process(_ int, b *row.Batch) error { f.Ctx.Out.Collect(b); return nil }

type keyByParams struct {
	Keys []string `json:"keys"`
}

func planKeyBy(c *PlanContext) (*Planned, error) {
	var p keyByParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if len(p.Keys) == 0 {
		return nil, fmt.Errorf("params.keys: required (the fields to partition by)")
	}
	for i, k := range p.Keys {
		if c.Inputs[0].Index(k) < 0 {
			return nil, fmt.Errorf("params.keys[%d]: field %q is not in the input %s", i, k, c.Inputs[0])
		}
	}
	return &Planned{Schema: c.Inputs[0], Keys: p.Keys, PartitionBy: p.Keys, NewOperator: func() runtime.Operator { return &forward{} }}, nil
}
