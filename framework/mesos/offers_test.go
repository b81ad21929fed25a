package mesos

import (
	"fmt"
	"reflect"
	"testing"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
)

func scalar(name string, v float64, role string) mesos.Resource {
	t := mesos.SCALAR
	return mesos.Resource{Name: name, Type: &t, Scalar: &mesos.Value_Scalar{Value: v}, Role: strp("*"),
		AllocationInfo: &mesos.Resource_AllocationInfo{Role: strp(role)}}
}

func ports(role string, rs ...[2]uint64) mesos.Resource {
	t := mesos.RANGES
	r := mesos.Resource{Name: "ports", Type: &t, Role: strp("*"), Ranges: &mesos.Value_Ranges{},
		AllocationInfo: &mesos.Resource_AllocationInfo{Role: strp(role)}}
	for _, x := range rs {
		r.Ranges.Range = append(r.Ranges.Range, mesos.Value_Range{Begin: x[0], End: x[1]})
	}
	return r
}

func strp(s string) *string { return &s }

type offerSpec struct {
	id, host        string
	cpus, mem, disk float64
	ports           [][2]uint64
	attrs           map[string]string
	role            string
}

func mkOffer(s offerSpec) mesos.Offer {
	role := s.role
	if role == "" {
		role = "job"
	}
	o := mesos.Offer{ID: mesos.OfferID{Value: s.id}, AgentID: mesos.AgentID{Value: "agent-" + s.host}, Hostname: s.host,
		AllocationInfo: &mesos.Resource_AllocationInfo{Role: strp(role)}}
	if s.cpus > 0 {
		o.Resources = append(o.Resources, scalar("cpus", s.cpus, role))
	}
	if s.mem > 0 {
		o.Resources = append(o.Resources, scalar("mem", s.mem, role))
	}
	if s.disk > 0 {
		o.Resources = append(o.Resources, scalar("disk", s.disk, role))
	}
	if len(s.ports) > 0 {
		o.Resources = append(o.Resources, ports(role, s.ports...))
	}
	for k, v := range s.attrs {
		o.Attributes = append(o.Attributes, mesos.Attribute{Name: k, Type: mesos.TEXT, Text: &mesos.Value_Text{Value: v}})
	}
	return o
}

func mustConstraints(t *testing.T, ss ...string) []Constraint {
	var out []Constraint
	for _, s := range ss {
		c, err := ParseConstraint(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// summary: offer id -> tasks taken, and the declined ids.
func summary(p Plan) (map[string]int, []string) {
	acc := map[string]int{}
	for _, a := range p.Accept {
		acc[a.Offer.ID.Value] = len(a.Tasks)
	}
	var dec []string
	for _, d := range p.Decline {
		dec = append(dec, d.Value)
	}
	return acc, dec
}

func TestMatch(t *testing.T) {
	prof := Profile{CPUs: 1, MemMB: 512, DiskMB: 100, Ports: 2}
	big := func(id, host string, attrs map[string]string) offerSpec {
		return offerSpec{id: id, host: host, cpus: 4, mem: 4096, disk: 4096, ports: [][2]uint64{{31000, 32000}}, attrs: attrs}
	}
	cases := []struct {
		name        string
		offers      []offerSpec
		need        int
		running     []Placement
		constraints []string
		accept      map[string]int
		decline     []string
		unfit       map[string]int
	}{
		{name: "one fits", offers: []offerSpec{big("o1", "a", nil)}, need: 1, accept: map[string]int{"o1": 1}},
		{name: "nothing needed: decline all", offers: []offerSpec{big("o1", "a", nil), big("o2", "b", nil)}, need: 0,
			accept: map[string]int{}, decline: []string{"o1", "o2"}},
		{name: "several on one offer", offers: []offerSpec{big("o1", "a", nil)}, need: 3, accept: map[string]int{"o1": 3}},
		{name: "spread over the offers in turns", offers: []offerSpec{big("o1", "a", nil), big("o2", "b", nil)}, need: 6,
			accept: map[string]int{"o1": 3, "o2": 3}},
		{name: "offer holds 4 by cpus, the small one 2", offers: []offerSpec{big("o1", "a", nil),
			{id: "o2", host: "b", cpus: 2, mem: 4096, disk: 4096, ports: [][2]uint64{{31000, 32000}}}}, need: 6,
			accept: map[string]int{"o1": 4, "o2": 2}},
		{name: "too few cpus", offers: []offerSpec{{id: "o1", host: "a", cpus: 0.5, mem: 4096, disk: 4096, ports: [][2]uint64{{1, 10}}}},
			need: 1, accept: map[string]int{}, decline: []string{"o1"}, unfit: map[string]int{"cpus": 1}},
		{name: "too little mem", offers: []offerSpec{{id: "o1", host: "a", cpus: 2, mem: 511.9, disk: 4096, ports: [][2]uint64{{1, 10}}}},
			need: 1, accept: map[string]int{}, decline: []string{"o1"}, unfit: map[string]int{"mem": 1}},
		{name: "one port only", offers: []offerSpec{{id: "o1", host: "a", cpus: 2, mem: 4096, disk: 4096, ports: [][2]uint64{{5, 5}}}},
			need: 1, accept: map[string]int{}, decline: []string{"o1"}, unfit: map[string]int{"ports": 1}},
		{name: "no disk offered", offers: []offerSpec{{id: "o1", host: "a", cpus: 2, mem: 4096, ports: [][2]uint64{{5, 9}}}},
			need: 1, accept: map[string]int{}, decline: []string{"o1"}, unfit: map[string]int{"disk": 1}},
		{name: "another role's offer", offers: []offerSpec{{id: "o1", host: "a", cpus: 4, mem: 4096, disk: 4096, ports: [][2]uint64{{5, 9}}, role: "other"}},
			need: 1, accept: map[string]int{}, decline: []string{"o1"}, unfit: map[string]int{"role": 1}},
		{name: "hostname UNIQUE: one per offer", offers: []offerSpec{big("o1", "a", nil), big("o2", "b", nil)}, need: 3,
			constraints: []string{"hostname:UNIQUE"}, accept: map[string]int{"o1": 1, "o2": 1}},
		{name: "hostname UNIQUE with one running", offers: []offerSpec{big("o1", "a", nil), big("o2", "b", nil)}, need: 2,
			running: []Placement{{Host: "a"}}, constraints: []string{"hostname UNIQUE"}, accept: map[string]int{"o2": 1},
			decline: []string{"o1"}, unfit: map[string]int{"hostname:UNIQUE": 1}},
		{name: "LIKE", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r1"}), big("o2", "b", map[string]string{"rack": "r3"}), big("o3", "c", nil)},
			need: 5, constraints: []string{"rack:LIKE:r[12]"}, accept: map[string]int{"o1": 4}, decline: []string{"o2", "o3"},
			unfit: map[string]int{"rack:LIKE:r[12]": 2}},
		{name: "LIKE is anchored", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r12"})},
			need: 1, constraints: []string{"rack:LIKE:r1"}, accept: map[string]int{}, decline: []string{"o1"}, unfit: map[string]int{"rack:LIKE:r1": 1}},
		{name: "UNLIKE (an agent without the attribute is fine)", offers: []offerSpec{big("o1", "a", map[string]string{"zone": "eu-1"}), big("o2", "b", nil)},
			need: 1, constraints: []string{"zone:UNLIKE:eu-.*"}, accept: map[string]int{"o2": 1}, decline: []string{"o1"}},
		{name: "MAX_PER host", offers: []offerSpec{big("o1", "a", nil), big("o2", "b", nil)}, need: 4,
			running: []Placement{{Host: "b"}}, constraints: []string{"hostname:MAX_PER:2"}, accept: map[string]int{"o1": 2, "o2": 1}},
		{name: "MAX_PER attribute", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r1"}), big("o2", "b", map[string]string{"rack": "r1"}), big("o3", "c", map[string]string{"rack": "r2"})},
			need: 3, constraints: []string{"rack:MAX_PER:1"}, accept: map[string]int{"o1": 1, "o3": 1}, decline: []string{"o2"}, unfit: map[string]int{"rack:MAX_PER:1": 1}},
		{name: "attribute UNIQUE needs the attribute", offers: []offerSpec{big("o1", "a", nil)}, need: 1,
			constraints: []string{"rack:UNIQUE"}, accept: map[string]int{}, decline: []string{"o1"}, unfit: map[string]int{"rack:UNIQUE": 1}},
		{name: "CLUSTER", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r2"}), big("o2", "b", map[string]string{"rack": "r1"})}, need: 1,
			constraints: []string{"rack:CLUSTER:r1"}, accept: map[string]int{"o2": 1}, decline: []string{"o1"}},
		{name: "IS", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r2"}), big("o2", "b", map[string]string{"rack": "r1"})}, need: 2,
			constraints: []string{"rack:IS:r1"}, accept: map[string]int{"o2": 2}, decline: []string{"o1"}},
		{name: "CLUSTER without a value: with the running ones", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r2"}), big("o2", "b", map[string]string{"rack": "r1"})}, need: 2,
			running: []Placement{{Host: "c", Attributes: map[string]string{"rack": "r1"}}}, constraints: []string{"rack:CLUSTER"},
			accept: map[string]int{"o2": 2}, decline: []string{"o1"}},
		{name: "CLUSTER without a value: where the first goes", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r2"}), big("o2", "b", map[string]string{"rack": "r1"})}, need: 3,
			constraints: []string{"rack:CLUSTER"}, accept: map[string]int{"o1": 3}, decline: []string{"o2"}},
		{name: "GROUP_BY evens out the racks", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r1"}), big("o2", "b", map[string]string{"rack": "r2"}), big("o3", "c", map[string]string{"rack": "r1"})}, need: 4,
			running: []Placement{{Host: "d", Attributes: map[string]string{"rack": "r1"}}}, constraints: []string{"rack:GROUP_BY"},
			accept: map[string]int{"o2": 2, "o3": 2}, decline: []string{"o1"}},
		{name: "declined and still short: why", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r2"}), big("o2", "b", map[string]string{"rack": "r1"})}, need: 9,
			constraints: []string{"rack:IS:r1"}, accept: map[string]int{"o2": 4}, decline: []string{"o1"}, unfit: map[string]int{"rack:IS:r1": 1}},
		{name: "GROUP_BY:3 waits for a third rack", offers: []offerSpec{big("o1", "a", map[string]string{"rack": "r1"}), big("o2", "b", map[string]string{"rack": "r2"})}, need: 4,
			constraints: []string{"rack:GROUP_BY:3"}, accept: map[string]int{"o1": 1, "o2": 1}},
		{name: "need met early: later offers declined", offers: []offerSpec{big("o1", "a", nil), big("o2", "b", nil)}, need: 1,
			accept: map[string]int{"o1": 1}, decline: []string{"o2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var offers []mesos.Offer
			for _, s := range c.offers {
				offers = append(offers, mkOffer(s))
			}
			p := Match(offers, Request{Role: "job", Profile: prof, Need: c.need, Running: c.running, Constraints: mustConstraints(t, c.constraints...)})
			acc, dec := summary(p)
			if !reflect.DeepEqual(acc, c.accept) {
				t.Errorf("accepted %v, want %v", acc, c.accept)
			}
			if fmt.Sprint(dec) != fmt.Sprint(c.decline) {
				t.Errorf("declined %v, want %v", dec, c.decline)
			}
			if fmt.Sprint(p.Unfit) != fmt.Sprint(c.unfit) {
				t.Errorf("unfit %v, want %v", p.Unfit, c.unfit)
			}
		})
	}
}

// The task's resources are exactly the profile, copied from the offered
// entries (role and allocation_info included), ports from the ranges.
func TestMatchCarvesExactly(t *testing.T) {
	// cpus split over a reserved and an unreserved entry; ports over two
	// ranges, the first one too short.
	reserved := scalar("cpus", 0.25, "job")
	reserved.Role = strp("job")
	o := mkOffer(offerSpec{id: "o1", host: "a", mem: 1000, disk: 50, ports: [][2]uint64{{31005, 31005}, {31000, 31001}, {32000, 32010}}})
	o.Resources = append([]mesos.Resource{reserved, scalar("cpus", 2, "job")}, o.Resources...)
	p := Match([]mesos.Offer{o}, Request{Role: "job", Profile: Profile{CPUs: 0.5, MemMB: 400, DiskMB: 25, Ports: 4}, Need: 2})
	if len(p.Accept) != 1 || len(p.Accept[0].Tasks) != 2 {
		t.Fatalf("plan %+v", p)
	}
	t1, t2 := p.Accept[0].Tasks[0], p.Accept[0].Tasks[1]
	if fmt.Sprint(t1.Ports) != "[31000 31001 31005 32000]" || fmt.Sprint(t2.Ports) != "[32001 32002 32003 32004]" {
		t.Errorf("ports %v %v", t1.Ports, t2.Ports)
	}
	got := map[string]float64{}
	for _, r := range t1.Resources {
		if r.AllocationInfo == nil || r.AllocationInfo.GetRole() != "job" {
			t.Errorf("resource without the offer's allocation_info: %v", r)
		}
		if r.Scalar != nil {
			got[r.Name+"/"+r.GetRole()] += r.Scalar.Value
		}
	}
	want := map[string]float64{"cpus/job": 0.25, "cpus/*": 0.25, "mem/*": 400, "disk/*": 25}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("task 1 scalars %v, want %v", got, want)
	}
	var pr []string
	for _, r := range t1.Resources {
		if r.Name == "ports" {
			pr = append(pr, fmt.Sprint(r.Ranges.Range))
		}
	}
	if fmt.Sprint(pr) != "[[{31000 31001} {31005 31005} {32000 32000}]]" {
		t.Errorf("task 1 port ranges %v", pr)
	}
	// Each task takes its share from what the one before left: 50 MB of
	// disk hold two tasks of 25, not three.
	p = Match([]mesos.Offer{o}, Request{Role: "job", Profile: Profile{CPUs: 0.1, MemMB: 100, DiskMB: 25, Ports: 1}, Need: 3})
	if n := len(p.Accept[0].Tasks); n != 2 {
		t.Errorf("%d tasks on 50 MB of disk at 25 each, want 2 (unfit %v)", n, p.Unfit)
	}
	// The offer is not changed by matching.
	if o.Resources[1].Scalar.Value != 2 {
		t.Errorf("offer changed: %v", o.Resources[1])
	}
}

func TestParseConstraint(t *testing.T) {
	for _, s := range []string{"hostname:UNIQUE", "hostname UNIQUE", "rack:LIKE:r[0-9]+", "rack:unlike:x", "hostname:MAX_PER:3", "rack:CLUSTER:r1", "rack:CLUSTER", "rack:IS:r1", "rack:GROUP_BY", "rack:GROUP_BY:3"} {
		if _, err := ParseConstraint(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "hostname", "hostname:UNIQUE:x", "rack:LIKE:(", "rack:LIKE", "hostname:MAX_PER:0", "hostname:MAX_PER:x", "rack:GROUP_BY:x", "rack:GROUP_BY:0", "rack:IS", "rack:EQUALS:x"} {
		if _, err := ParseConstraint(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
}
