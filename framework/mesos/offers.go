// Package mesos runs a job master's TaskManagers as Mesos command tasks:
// offer matching (a pure function), a scheduler client on the v1 HTTP API
// (protobuf, through github.com/mesos/mesos-go types), and the
// framework.ResourceManager built on both.
package mesos

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
)

// Profile is what one TaskManager task takes from an offer.
type Profile struct {
	CPUs   float64
	MemMB  float64
	DiskMB float64
	Ports  int // ports picked from the offered ranges (the first is the data port)
}

// Constraint restricts where TaskManagers run, in Marathon's syntax:
// "hostname:UNIQUE", "rack:LIKE:r[12]", "zone:UNLIKE:eu-.*",
// "hostname:MAX_PER:2", "rack:CLUSTER:r1" (IS is the same), "rack:CLUSTER"
// (all on the first one's value), "rack:GROUP_BY[:N]" (spread evenly over
// the values, over at least N of them) — separated by ':' or spaces. The
// field is "hostname" or an agent attribute name.
type Constraint struct {
	Field    string
	Operator string // UNIQUE, LIKE, UNLIKE, MAX_PER, CLUSTER, IS, GROUP_BY
	Value    string
	re       *regexp.Regexp
	max      int
}

// ParseConstraint reads one constraint.
func ParseConstraint(s string) (Constraint, error) {
	var parts []string
	if strings.Contains(s, ":") {
		parts = strings.SplitN(s, ":", 3)
	} else {
		parts = strings.Fields(s)
		if len(parts) > 3 {
			parts = []string{parts[0], parts[1], strings.Join(parts[2:], " ")}
		}
	}
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	if len(parts) < 2 || parts[0] == "" {
		return Constraint{}, fmt.Errorf("constraint %q: want FIELD:OPERATOR[:VALUE]", s)
	}
	c := Constraint{Field: parts[0], Operator: strings.ToUpper(parts[1])}
	if len(parts) == 3 {
		c.Value = parts[2]
	}
	switch c.Operator {
	case "UNIQUE":
		if c.Value != "" {
			return Constraint{}, fmt.Errorf("constraint %q: UNIQUE takes no value", s)
		}
	case "LIKE", "UNLIKE":
		re, err := regexp.Compile("^(?:" + c.Value + ")$")
		if err != nil || c.Value == "" {
			return Constraint{}, fmt.Errorf("constraint %q: %s needs a regular expression: %v", s, c.Operator, err)
		}
		c.re = re
	case "MAX_PER":
		n, err := strconv.Atoi(c.Value)
		if err != nil || n < 1 {
			return Constraint{}, fmt.Errorf("constraint %q: MAX_PER needs a count of at least 1", s)
		}
		c.max = n
	case "CLUSTER":
	case "IS":
		if c.Value == "" {
			return Constraint{}, fmt.Errorf("constraint %q: IS needs a value", s)
		}
	case "GROUP_BY":
		if c.Value != "" {
			n, err := strconv.Atoi(c.Value)
			if err != nil || n < 1 {
				return Constraint{}, fmt.Errorf("constraint %q: GROUP_BY takes a count of groups of at least 1", s)
			}
			c.max = n
		}
	default:
		return Constraint{}, fmt.Errorf("constraint %q: unknown operator %q (UNIQUE, LIKE, UNLIKE, MAX_PER, CLUSTER, IS, GROUP_BY)", s, parts[1])
	}
	return c, nil
}

func (c Constraint) String() string {
	if c.Value == "" {
		return c.Field + ":" + c.Operator
	}
	return c.Field + ":" + c.Operator + ":" + c.Value
}

// Placement is where a TaskManager runs (or will run): its agent's
// hostname and attributes, for the constraints.
type Placement struct {
	Host       string
	Attributes map[string]string
}

func (p Placement) field(name string) (string, bool) {
	if name == "hostname" {
		return p.Host, true
	}
	v, ok := p.Attributes[name]
	return v, ok
}

// allows says whether a task may go to p with placed already there;
// offered are the agents of the offers at hand (GROUP_BY spreads over
// their values too).
func (c Constraint) allows(p Placement, placed, offered []Placement) bool {
	v, ok := p.field(c.Field)
	switch c.Operator {
	case "LIKE":
		return ok && c.re.MatchString(v)
	case "UNLIKE":
		return !ok || !c.re.MatchString(v)
	case "IS":
		return ok && v == c.Value
	case "CLUSTER":
		if c.Value != "" {
			return ok && v == c.Value
		}
	}
	if !ok {
		return false // the others group by a field the agent lacks
	}
	count := map[string]int{}
	if c.Operator == "GROUP_BY" {
		for _, q := range offered {
			if w, ok := q.field(c.Field); ok {
				count[w] += 0
			}
		}
	}
	for _, q := range placed {
		if w, ok := q.field(c.Field); ok {
			count[w]++
		}
	}
	n := count[v]
	switch c.Operator {
	case "UNIQUE":
		return n == 0
	case "CLUSTER": // no value: where the first one went
		return len(count) == 0 || n > 0
	case "GROUP_BY":
		// Evenly: only onto a value with the fewest tasks (a new one has
		// none), and onto new values while fewer than N are used.
		used := 0
		for _, m := range count {
			if m > 0 {
				used++
			}
		}
		if n > 0 && used < c.max {
			return false
		}
		for _, m := range count {
			if m < n {
				return false
			}
		}
		return true
	}
	return n < c.max
}

// Attributes flattens an offer's attributes to strings (text as is,
// scalars as numbers, ranges "[a-b,c-d]", sets "{a,b}").
func Attributes(attrs []mesos.Attribute) map[string]string {
	out := make(map[string]string, len(attrs))
	for _, a := range attrs {
		switch {
		case a.Text != nil:
			out[a.Name] = a.Text.Value
		case a.Scalar != nil:
			out[a.Name] = strconv.FormatFloat(a.Scalar.Value, 'f', -1, 64)
		case a.Ranges != nil:
			var rs []string
			for _, r := range a.Ranges.Range {
				rs = append(rs, fmt.Sprintf("%d-%d", r.Begin, r.End))
			}
			out[a.Name] = "[" + strings.Join(rs, ",") + "]"
		case a.Set != nil:
			out[a.Name] = "{" + strings.Join(a.Set.Item, ",") + "}"
		}
	}
	return out
}

// Request is what the matcher is asked for.
type Request struct {
	Role        string
	Profile     Profile
	Need        int         // TaskManagers still to launch
	Running     []Placement // TaskManagers that run (or are launching)
	Constraints []Constraint
}

// Task is one TaskManager carved out of an offer: exactly its resources
// (each a copy of the offered entry it came from, so role, reservation
// and allocation_info come along) and the ports picked.
type Task struct {
	Resources []mesos.Resource
	Ports     []uint64
}

// Accept is an offer taken for one or more tasks.
type Accept struct {
	Offer     mesos.Offer
	Placement Placement
	Tasks     []Task
}

// Plan is what to do with a batch of offers.
type Plan struct {
	Accept  []Accept
	Decline []mesos.OfferID
	// Unfit counts why offers were declined when TaskManagers are still
	// needed after the plan ("cpus", "mem", "disk", "ports", "role":
	// nothing for the role, or a constraint), for the job's status.
	Unfit map[string]int
}

// Match decides which offers to take for req.Need TaskManagers and which
// to decline. It is pure: the same offers and request give the same plan.
// Offers are taken in turns, one task each per round in the order given,
// so TaskManagers spread over the agents; one offer holds several tasks
// when the others cannot take them.
func Match(offers []mesos.Offer, req Request) Plan {
	plan := Plan{Unfit: map[string]int{}}
	placed := append([]Placement(nil), req.Running...)
	need := req.Need
	type slot struct {
		p     Placement
		avail []mesos.Resource
		tasks []Task
		why   string // why it took no more
		done  bool
	}
	slots := make([]slot, len(offers))
	offered := make([]Placement, len(offers))
	for i, o := range offers {
		offered[i] = Placement{Host: o.Hostname, Attributes: Attributes(o.Attributes)}
		slots[i] = slot{p: offered[i], avail: usable(o, req.Role)}
		if len(slots[i].avail) == 0 {
			slots[i].why, slots[i].done = "role", true
		}
	}
	for progress := true; need > 0 && progress; {
		progress = false
		for i := range slots {
			s := &slots[i]
			if need <= 0 || s.done {
				continue
			}
			if c, ok := firstViolated(req.Constraints, s.p, placed, offered); ok {
				// Not done: GROUP_BY may allow it once the others
				// took their share.
				s.why = c.String()
				continue
			}
			t, rest, short := carve(s.avail, req.Profile)
			if short != "" {
				s.why, s.done = short, true
				continue
			}
			s.avail = rest
			s.tasks = append(s.tasks, t)
			placed = append(placed, s.p)
			need--
			progress = true
		}
	}
	for i, o := range offers {
		s := slots[i]
		if len(s.tasks) > 0 {
			plan.Accept = append(plan.Accept, Accept{Offer: o, Placement: s.p, Tasks: s.tasks})
			continue
		}
		plan.Decline = append(plan.Decline, o.ID)
		if need > 0 && s.why != "" {
			plan.Unfit[s.why]++
		}
	}
	if len(plan.Unfit) == 0 {
		plan.Unfit = nil
	}
	return plan
}

func firstViolated(cs []Constraint, p Placement, placed, offered []Placement) (Constraint, bool) {
	for _, c := range cs {
		if !c.allows(p, placed, offered) {
			return c, true
		}
	}
	return Constraint{}, false
}

// usable are the offered resources a task of role may take: allocated to
// that role (or carrying no allocation at all, from a master without
// MULTI_ROLE), not revocable, no volumes, no resource providers.
func usable(o mesos.Offer, role string) []mesos.Resource {
	var out []mesos.Resource
	for _, r := range o.Resources {
		if r.AllocationInfo != nil && r.AllocationInfo.Role != nil && *r.AllocationInfo.Role != role {
			continue
		}
		if r.Revocable != nil || r.Disk != nil || r.ProviderID != nil || r.Shared != nil {
			continue
		}
		if r.AllocationInfo == nil && o.AllocationInfo != nil {
			// Take the offer's allocation so the task names it.
			r.AllocationInfo = o.AllocationInfo
		}
		out = append(out, r)
	}
	return out
}

// Mesos keeps scalars in fixed point with three decimals.
func milli(v float64) int64 { return int64(math.Round(v * 1000)) }

// carve takes one task's resources out of avail; short names the first
// resource there is not enough of.
func carve(avail []mesos.Resource, prof Profile) (Task, []mesos.Resource, string) {
	rest := make([]mesos.Resource, len(avail))
	for i, r := range avail {
		rest[i] = cloneResource(r)
	}
	var t Task
	for _, s := range []struct {
		name string
		want float64
	}{{"cpus", prof.CPUs}, {"mem", prof.MemMB}, {"disk", prof.DiskMB}} {
		left := milli(s.want)
		if left <= 0 {
			continue
		}
		for i := range rest {
			r := &rest[i]
			if r.Name != s.name || r.GetType() != mesos.SCALAR || r.Scalar == nil || left == 0 {
				continue
			}
			have := milli(r.Scalar.Value)
			take := min(have, left)
			if take <= 0 {
				continue
			}
			c := cloneResource(*r)
			c.Scalar = &mesos.Value_Scalar{Value: float64(take) / 1000}
			t.Resources = append(t.Resources, c)
			r.Scalar = &mesos.Value_Scalar{Value: float64(have-take) / 1000}
			left -= take
		}
		if left > 0 {
			return Task{}, nil, s.name
		}
	}
	if prof.Ports > 0 {
		left := prof.Ports
		for i := range rest {
			r := &rest[i]
			if r.Name != "ports" || r.GetType() != mesos.RANGES || r.Ranges == nil || left == 0 {
				continue
			}
			ranges := sortedRanges(r.Ranges.Range)
			var picked []uint64
			for _, rg := range ranges {
				for p := rg.Begin; p <= rg.End && left > 0; p++ {
					picked = append(picked, p)
					left--
				}
			}
			if len(picked) == 0 {
				continue
			}
			c := cloneResource(*r)
			c.Ranges = &mesos.Value_Ranges{Range: toRanges(picked)}
			t.Resources = append(t.Resources, c)
			t.Ports = append(t.Ports, picked...)
			r.Ranges = &mesos.Value_Ranges{Range: removePorts(ranges, picked)}
		}
		if left > 0 {
			return Task{}, nil, "ports"
		}
	}
	// Drop what was used up, so the next task does not look at it.
	kept := rest[:0]
	for _, r := range rest {
		if (r.Scalar != nil && milli(r.Scalar.Value) <= 0) || (r.Ranges != nil && len(r.Ranges.Range) == 0) {
			continue
		}
		kept = append(kept, r)
	}
	return t, kept, ""
}

func cloneResource(r mesos.Resource) mesos.Resource {
	c := r
	if r.Scalar != nil {
		s := *r.Scalar
		c.Scalar = &s
	}
	if r.Ranges != nil {
		c.Ranges = &mesos.Value_Ranges{Range: append([]mesos.Value_Range(nil), r.Ranges.Range...)}
	}
	return c
}

func sortedRanges(rs []mesos.Value_Range) []mesos.Value_Range {
	out := append([]mesos.Value_Range(nil), rs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Begin < out[j].Begin })
	return out
}

// toRanges coalesces ascending ports into ranges.
func toRanges(ports []uint64) []mesos.Value_Range {
	var out []mesos.Value_Range
	for _, p := range ports {
		if n := len(out); n > 0 && out[n-1].End+1 == p {
			out[n-1].End = p
			continue
		}
		out = append(out, mesos.Value_Range{Begin: p, End: p})
	}
	return out
}

// removePorts takes the picked ports (the lowest of ranges, ascending) out
// of ranges.
func removePorts(ranges []mesos.Value_Range, picked []uint64) []mesos.Value_Range {
	used := map[uint64]bool{}
	for _, p := range picked {
		used[p] = true
	}
	var out []mesos.Value_Range
	for _, rg := range ranges {
		start := rg.Begin
		for p := rg.Begin; p <= rg.End; p++ {
			if used[p] {
				if p > start {
					out = append(out, mesos.Value_Range{Begin: start, End: p - 1})
				}
				start = p + 1
			}
		}
		if start <= rg.End {
			out = append(out, mesos.Value_Range{Begin: start, End: rg.End})
		}
	}
	return out
}
