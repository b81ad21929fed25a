package mesostest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// res builds resources from "cpus:2;mem:1024;ports:31000-32000".
func res(s string) Resources {
	r := newResources()
	if s == "" {
		return r
	}
	for _, part := range strings.Split(s, ";") {
		name, val, _ := strings.Cut(part, ":")
		if b, e, ok := strings.Cut(val, "-"); ok {
			var rb, re uint64
			fmt.Sscan(b, &rb)
			fmt.Sscan(e, &re)
			r.Ranges[name] = mergeRanges(append(r.Ranges[name], Range{rb, re}))
			continue
		}
		var f float64
		fmt.Sscan(val, &f)
		r.Scalars[name] = milli(f)
	}
	return r
}

func scal(s string) map[string]int64 { return res(s).Scalars }

func describe(as []allocation) string {
	var out []string
	for _, a := range as {
		out = append(out, fmt.Sprintf("%s@%s/%s=%s", a.FrameworkID, a.AgentID, a.Role, formatMesos(a.Resources, "")))
	}
	sort.Strings(out)
	return strings.Join(out, " | ")
}

func TestAllocate(t *testing.T) {
	agent := func(id, r string) allocAgent { return allocAgent{ID: id, Available: res(r)} }
	full := "cpus:2;mem:2048;disk:4096;ports:31000-32000"
	cases := []struct {
		name string
		in   allocInput
		want string
	}{
		{"whole agents to the only framework",
			allocInput{Agents: []allocAgent{agent("a", full), agent("b", "cpus:1;mem:512")},
				Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}}}},
			"f@a/r=ports:[31000-32000]; cpus:2; mem:2048; disk:4096 | f@b/r=cpus:1; mem:512"},
		{"a filter hides resources it covers",
			allocInput{Agents: []allocAgent{agent("a", "cpus:1.9;mem:2016")},
				Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}, Filters: []allocFilter{{AgentID: "a", Resources: res("cpus:1.9;mem:2016")}}}}},
			""},
		{"a filter does not hide more than it covers",
			allocInput{Agents: []allocAgent{agent("a", "cpus:2;mem:2048")},
				Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}, Filters: []allocFilter{{AgentID: "a", Resources: res("cpus:1.9;mem:2016")}}}}},
			"f@a/r=cpus:2; mem:2048"},
		{"a filtered framework leaves the agent to the next",
			allocInput{Agents: []allocAgent{agent("a", "cpus:2")},
				Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}, Filters: []allocFilter{{AgentID: "a", Resources: res("cpus:2")}}}, {ID: "g", Roles: []string{"r"}}}},
			"g@a/r=cpus:2"},
		{"limits cap cpus and mem, not disk and ports",
			allocInput{Agents: []allocAgent{agent("a", full)}, Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}}},
				Quotas: map[string]roleQuota{"r": {Guarantees: scal("cpus:0.5;mem:256"), Limits: scal("cpus:1;mem:1024")}}},
			"f@a/r=ports:[31000-32000]; cpus:1; mem:1024; disk:4096"},
		{"the limit headroom counts what the role holds",
			allocInput{Agents: []allocAgent{agent("a", "cpus:1.4;mem:1448;disk:4096")}, Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}}},
				Quotas:   map[string]roleQuota{"r": {Limits: scal("cpus:1;mem:1024")}},
				Consumed: map[string]map[string]int64{"r": scal("cpus:0.6;mem:600")}},
			"f@a/r=cpus:0.4; mem:424; disk:4096"},
		{"a role at its cpus and mem limit gets nothing, not even disk",
			allocInput{Agents: []allocAgent{agent("a", full), agent("b", full)}, Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}}},
				Quotas:   map[string]roleQuota{"r": {Limits: scal("cpus:2;mem:1024")}},
				Consumed: map[string]map[string]int64{"r": scal("cpus:2;mem:1024")}},
			""},
		{"over the cpu limit with mem unlimited: offers without cpus",
			allocInput{Agents: []allocAgent{agent("a", "cpus:2;mem:4096;disk:10000")}, Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}}},
				Quotas:   map[string]roleQuota{"r": {Limits: scal("cpus:1")}},
				Consumed: map[string]map[string]int64{"r": scal("cpus:2;mem:1024")}},
			"f@a/r=mem:4096; disk:10000"},
		{"one offer within the limit across agents",
			allocInput{Agents: []allocAgent{agent("a", "cpus:2;mem:4096"), agent("b", "cpus:2;mem:4096")}, Frameworks: []allocFramework{{ID: "f", Roles: []string{"r1"}}},
				Quotas: map[string]roleQuota{"r1": {Guarantees: scal("cpus:1"), Limits: scal("cpus:2;mem:1024")}}},
			"f@a/r1=cpus:2; mem:1024"},
		{"the guarantee is offered first",
			allocInput{Agents: []allocAgent{agent("a", "cpus:2;mem:1024")},
				Frameworks: []allocFramework{{ID: "other", Roles: []string{"o"}}, {ID: "g", Roles: []string{"gr"}}},
				Quotas:     map[string]roleQuota{"gr": {Guarantees: scal("cpus:1.5")}}},
			"g@a/gr=cpus:1.5; mem:1024 | other@a/o=cpus:0.5"},
		{"headroom is held back for an unsatisfied guarantee",
			allocInput{Agents: []allocAgent{agent("a", "cpus:2;mem:1024"), agent("b", "cpus:2;mem:1024")},
				Frameworks: []allocFramework{{ID: "other", Roles: []string{"o"}}},
				Quotas:     map[string]roleQuota{"gr": {Guarantees: scal("cpus:3")}}},
			"other@a/o=cpus:1; mem:1024 | other@b/o=mem:1024"},
		{"below the minimum allocatable nothing is offered",
			allocInput{Agents: []allocAgent{agent("a", "cpus:0.005;mem:16;disk:100;ports:1-2")}, Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}}}},
			""},
		{"the framework holding least goes first",
			allocInput{Agents: []allocAgent{agent("a", "cpus:2")},
				Frameworks: []allocFramework{{ID: "f", Roles: []string{"r"}, CPUs: 2000}, {ID: "g", Roles: []string{"r"}}}},
			"g@a/r=cpus:2"},
		{"a framework without roles to offer gets nothing",
			allocInput{Agents: []allocAgent{agent("a", full)}, Frameworks: []allocFramework{{ID: "f"}}},
			""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := describe(allocate(c.in)); got != c.want {
				t.Fatalf("\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestResourceArithmetic(t *testing.T) {
	r := res("cpus:2;mem:2048;ports:31000-32000")
	u := r.Sub(res("cpus:0.1;mem:32;ports:31000-31001"))
	if got := formatMesos(u, "r"); got != "ports(allocated: r):[31002-32000]; cpus(allocated: r):1.9; mem(allocated: r):2016" {
		t.Fatal(got)
	}
	if !r.Contains(u) || u.Contains(r) {
		t.Fatal("Contains")
	}
	if got := formatMesos(u.Add(res("ports:31000-31001")), ""); got != "ports:[31000-32000]; cpus:1.9; mem:2016" {
		t.Fatal(got)
	}
	if got := formatMesos(r.Sub(res("ports:31500-31500")), ""); got != "ports:[31000-31499, 31501-32000]; cpus:2; mem:2048" {
		t.Fatal(got)
	}
}

// BenchmarkAllocate1000Agents is one allocation cycle over 1,000 agents and
// ten frameworks in two roles, one with a quota.
func BenchmarkAllocate1000Agents(b *testing.B) {
	in := allocInput{Quotas: map[string]roleQuota{"q": {Guarantees: scal("cpus:100"), Limits: scal("cpus:500;mem:512000")}}}
	for i := 0; i < 1000; i++ {
		in.Agents = append(in.Agents, allocAgent{ID: fmt.Sprintf("a%d", i), Available: res("cpus:8;mem:32768;disk:100000;ports:31000-32000")})
	}
	for i := 0; i < 10; i++ {
		role := "q"
		if i%2 == 1 {
			role = "r"
		}
		in.Frameworks = append(in.Frameworks, allocFramework{ID: fmt.Sprintf("f%d", i), Roles: []string{role}})
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if len(allocate(in)) == 0 {
			b.Fatal("nothing allocated")
		}
	}
}
