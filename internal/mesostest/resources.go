package mesostest

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
)

// Range is an inclusive range of ports (or any RANGES resource).
type Range struct{ Begin, End uint64 }

// Resources is an unreserved resource set: scalars in thousandths (Mesos keeps
// three decimals, and fixed point keeps 2 - 0.1 - 0.1 exact) and ranges.
type Resources struct {
	Scalars map[string]int64   // milli-units
	Ranges  map[string][]Range // sorted, merged
}

func milli(f float64) int64 { return int64(math.Round(f * 1000)) }

func unmilli(m int64) float64 { return float64(m) / 1000 }

func newResources() Resources {
	return Resources{Scalars: map[string]int64{}, Ranges: map[string][]Range{}}
}

// Clone copies r.
func (r Resources) Clone() Resources {
	c := newResources()
	for k, v := range r.Scalars {
		c.Scalars[k] = v
	}
	for k, v := range r.Ranges {
		c.Ranges[k] = append([]Range(nil), v...)
	}
	return c
}

// Empty reports whether r holds nothing.
func (r Resources) Empty() bool {
	for _, v := range r.Scalars {
		if v > 0 {
			return false
		}
	}
	for _, v := range r.Ranges {
		if len(v) > 0 {
			return false
		}
	}
	return true
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	c := r.Clone()
	for k, v := range o.Scalars {
		c.Scalars[k] += v
	}
	for k, v := range o.Ranges {
		c.Ranges[k] = mergeRanges(append(c.Ranges[k], v...))
	}
	c.prune()
	return c
}

// Sub returns r - o (never below zero).
func (r Resources) Sub(o Resources) Resources {
	c := r.Clone()
	for k, v := range o.Scalars {
		c.Scalars[k] -= v
		if c.Scalars[k] < 0 {
			c.Scalars[k] = 0
		}
	}
	for k, v := range o.Ranges {
		c.Ranges[k] = subRanges(c.Ranges[k], v)
	}
	c.prune()
	return c
}

// Contains reports whether o ⊆ r.
func (r Resources) Contains(o Resources) bool {
	for k, v := range o.Scalars {
		if v > r.Scalars[k] {
			return false
		}
	}
	for k, v := range o.Ranges {
		if len(subRanges(v, r.Ranges[k])) > 0 {
			return false
		}
	}
	return true
}

func (r *Resources) prune() {
	for k, v := range r.Scalars {
		if v <= 0 {
			delete(r.Scalars, k)
		}
	}
	for k, v := range r.Ranges {
		if len(v) == 0 {
			delete(r.Ranges, k)
		}
	}
}

func mergeRanges(rs []Range) []Range {
	if len(rs) == 0 {
		return nil
	}
	s := append([]Range(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Begin < s[j].Begin })
	out := []Range{s[0]}
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if x.Begin <= last.End+1 {
			if x.End > last.End {
				last.End = x.End
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// subRanges returns a \ b.
func subRanges(a, b []Range) []Range {
	out := append([]Range(nil), a...)
	for _, x := range b {
		var next []Range
		for _, y := range out {
			if x.End < y.Begin || x.Begin > y.End {
				next = append(next, y)
				continue
			}
			if y.Begin < x.Begin {
				next = append(next, Range{y.Begin, x.Begin - 1})
			}
			if y.End > x.End {
				next = append(next, Range{x.End + 1, y.End})
			}
		}
		out = next
	}
	return mergeRanges(out)
}

// resourceOrder is the order the master lists an agent's resources in offers.
func resourceNames(r Resources) []string {
	rank := map[string]int{"ports": 0, "cpus": 1, "mem": 2, "disk": 3}
	var names []string
	for k := range r.Ranges {
		names = append(names, k)
	}
	for k := range r.Scalars {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		ri, ok := rank[names[i]]
		if !ok {
			ri = 10
		}
		rj, ok := rank[names[j]]
		if !ok {
			rj = 10
		}
		if ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
	return names
}

// toProto turns r into mesos resources; role, when not empty, goes into
// allocation_info (MULTI_ROLE frameworks see it, others do not).
func (r Resources) toProto(allocRole string) []mesos.Resource {
	var out []mesos.Resource
	for _, name := range resourceNames(r) {
		res := mesos.Resource{Name: name, Role: ptr("*")}
		if rs, ok := r.Ranges[name]; ok {
			res.Type = mesos.RANGES.Enum()
			vr := &mesos.Value_Ranges{}
			for _, x := range rs {
				vr.Range = append(vr.Range, mesos.Value_Range{Begin: x.Begin, End: x.End})
			}
			res.Ranges = vr
		} else {
			res.Type = mesos.SCALAR.Enum()
			res.Scalar = &mesos.Value_Scalar{Value: unmilli(r.Scalars[name])}
		}
		if allocRole != "" {
			res.AllocationInfo = &mesos.Resource_AllocationInfo{Role: ptr(allocRole)}
		}
		out = append(out, res)
	}
	return out
}

// fromProto reads resources; it also returns the allocation roles they name.
func fromProto(rs []mesos.Resource) (Resources, []string) {
	r := newResources()
	var roles []string
	seen := map[string]bool{}
	for _, x := range rs {
		if x.AllocationInfo != nil && x.AllocationInfo.Role != nil {
			role := *x.AllocationInfo.Role
			if !seen[role] {
				seen[role] = true
				roles = append(roles, role)
			}
		}
		switch {
		case x.Scalar != nil:
			r.Scalars[x.Name] += milli(x.Scalar.Value)
		case x.Ranges != nil:
			var rr []Range
			for _, y := range x.Ranges.Range {
				rr = append(rr, Range{y.Begin, y.End})
			}
			r.Ranges[x.Name] = mergeRanges(append(r.Ranges[x.Name], rr...))
		}
	}
	r.prune()
	return r, roles
}

// formatMesos writes resources as the master's messages do:
// "cpus(allocated: r):0.1; mem(allocated: r):32; ports(allocated: r):[31000-32000]".
func formatMesos(r Resources, role string) string {
	var parts []string
	for _, name := range resourceNames(r) {
		label := name
		if role != "" {
			label = fmt.Sprintf("%s(allocated: %s)", name, role)
		}
		if rs, ok := r.Ranges[name]; ok {
			var s []string
			for _, x := range rs {
				s = append(s, fmt.Sprintf("%d-%d", x.Begin, x.End))
			}
			parts = append(parts, label+":["+strings.Join(s, ", ")+"]")
			continue
		}
		parts = append(parts, label+":"+strconv.FormatFloat(unmilli(r.Scalars[name]), 'f', -1, 64))
	}
	return strings.Join(parts, "; ")
}

// formatScalarsSorted writes scalar maps sorted by name ("cpus:2; disk:4096; mem:2048"),
// as the quota error texts do.
func formatScalarsSorted(m map[string]int64) string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		parts = append(parts, k+":"+strconv.FormatFloat(unmilli(m[k]), 'f', -1, 64))
	}
	return strings.Join(parts, "; ")
}

func ptr[T any](v T) *T { return &v }
