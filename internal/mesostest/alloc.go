package mesostest

import "sort"

// The allocator is a pure function: the master hands it what is free on each
// agent, who wants offers, the decline filters, the quotas and each role's
// consumption, and it returns the offers to make. It follows the 1.12
// hierarchical allocator where the transcripts show it:
//   - stage 1 gives roles below their quota guarantee their guaranteed
//     scalars first (plus the resources no quota limits, such as ports);
//   - stage 2 gives each agent's rest to one framework, trimmed to the role's
//     limit headroom, holding back what other roles still need to reach their
//     guarantees;
//   - an offer must hold cpus >= 0.01 or mem >= 32 (min_allocatable_resources),
//     which is why a role at its cpus and mem limit gets nothing at all;
//   - a filter (decline or accept refuse_seconds) hides an agent's resources
//     from a framework while they are a subset of the filtered ones.

type allocAgent struct {
	ID        string
	Available Resources
}

type allocFilter struct {
	AgentID   string
	Resources Resources
}

type allocFramework struct {
	ID      string
	Roles   []string // roles wanting offers (not suppressed)
	Filters []allocFilter
	// CPUs it holds (tasks and offers, milli): among frameworks of equally
	// consuming roles the one holding least goes first.
	CPUs int64
}

// roleQuota holds a role's guarantees and limits in milli-units.
type roleQuota struct {
	Guarantees map[string]int64
	Limits     map[string]int64
}

type allocInput struct {
	Agents     []allocAgent
	Frameworks []allocFramework
	Quotas     map[string]roleQuota
	Consumed   map[string]map[string]int64 // role -> scalar -> milli (allocated + offered)
}

type allocation struct {
	FrameworkID, AgentID, Role string
	Resources                  Resources
}

const (
	minAllocCPUs = 10    // 0.01 cpus
	minAllocMem  = 32000 // 32 MB
)

func allocatable(r Resources) bool {
	return r.Scalars["cpus"] >= minAllocCPUs || r.Scalars["mem"] >= minAllocMem
}

func filtered(fw allocFramework, agentID string, r Resources) bool {
	for _, f := range fw.Filters {
		if f.AgentID == agentID && f.Resources.Contains(r) {
			return true
		}
	}
	return false
}

func allocate(in allocInput) []allocation {
	avail := map[string]Resources{}
	for _, a := range in.Agents {
		avail[a.ID] = a.Available.Clone()
	}
	consumed := map[string]map[string]int64{}
	for role, m := range in.Consumed {
		c := map[string]int64{}
		for k, v := range m {
			c[k] = v
		}
		consumed[role] = c
	}
	use := func(role string) map[string]int64 {
		if consumed[role] == nil {
			consumed[role] = map[string]int64{}
		}
		return consumed[role]
	}
	type key struct{ fw, agent, role string }
	got := map[key]Resources{}
	var order []key
	record := func(fw, agent, role string, r Resources) {
		k := key{fw, agent, role}
		if _, ok := got[k]; !ok {
			order = append(order, k)
			got[k] = newResources()
		}
		got[k] = got[k].Add(r)
		avail[agent] = avail[agent].Sub(r)
		c := use(role)
		for n, v := range r.Scalars {
			c[n] += v
		}
	}
	unsatisfied := func(role string) map[string]int64 {
		q, ok := in.Quotas[role]
		if !ok {
			return nil
		}
		out := map[string]int64{}
		for n, g := range q.Guarantees {
			if d := g - use(role)[n]; d > 0 {
				out[n] = d
			}
		}
		return out
	}

	// Stage 1: guarantees first.
	var guaranteedRoles []string
	for role, q := range in.Quotas {
		if len(q.Guarantees) > 0 {
			guaranteedRoles = append(guaranteedRoles, role)
		}
	}
	sort.Strings(guaranteedRoles)
	for _, role := range guaranteedRoles {
		q := in.Quotas[role]
		for _, a := range in.Agents {
			need := unsatisfied(role)
			if len(need) == 0 {
				break
			}
			for _, fw := range in.Frameworks {
				if !hasRole(fw.Roles, role) {
					continue
				}
				r := newResources()
				any := false
				for n, v := range avail[a.ID].Scalars {
					if g, ok := need[n]; ok {
						r.Scalars[n] = min(v, g)
						any = any || r.Scalars[n] > 0
						continue
					}
					if _, limited := q.Limits[n]; limited {
						continue
					}
					if _, guaranteed := q.Guarantees[n]; guaranteed {
						continue
					}
					r.Scalars[n] = v
				}
				for n, v := range avail[a.ID].Ranges {
					r.Ranges[n] = append([]Range(nil), v...)
				}
				r.prune()
				if !any || !allocatable(r) || filtered(fw, a.ID, r) {
					continue
				}
				record(fw.ID, a.ID, role, r)
				break
			}
		}
	}

	// Stage 2: the rest, within limits, keeping headroom for others' guarantees.
	type cand struct {
		fw   allocFramework
		role string
	}
	var cands []cand
	for _, fw := range in.Frameworks {
		for _, role := range fw.Roles {
			cands = append(cands, cand{fw, role})
		}
	}
	fwCPUs := map[string]int64{}
	for _, fw := range in.Frameworks {
		fwCPUs[fw.ID] = fw.CPUs
	}
	for _, k := range order {
		fwCPUs[k.fw] += got[k].Scalars["cpus"]
	}
	// What other roles still need for their guarantees is held back from the
	// free resources of the whole cluster.
	needOthers := func(role string) map[string]int64 {
		var out map[string]int64
		for _, other := range guaranteedRoles {
			if other == role {
				continue
			}
			for n, v := range unsatisfied(other) {
				if out == nil {
					out = map[string]int64{}
				}
				out[n] += v
			}
		}
		return out
	}
	total := map[string]int64{}
	for _, x := range avail {
		for n, v := range x.Scalars {
			total[n] += v
		}
	}
	for _, a := range in.Agents {
		// Least-consuming role first, then the framework holding least: a
		// rough dominant-resource fairness.
		sort.SliceStable(cands, func(i, j int) bool {
			ci, cj := use(cands[i].role)["cpus"], use(cands[j].role)["cpus"]
			if ci != cj {
				return ci < cj
			}
			return fwCPUs[cands[i].fw.ID] < fwCPUs[cands[j].fw.ID]
		})
		for _, c := range cands {
			r := avail[a.ID].Clone()
			if q, ok := in.Quotas[c.role]; ok {
				for n, lim := range q.Limits {
					if _, has := r.Scalars[n]; !has {
						continue
					}
					head := lim - use(c.role)[n]
					if head < 0 {
						head = 0
					}
					r.Scalars[n] = min(r.Scalars[n], head)
				}
			}
			for n, need := range needOthers(c.role) {
				free := total[n] - need
				if free < 0 {
					free = 0
				}
				if r.Scalars[n] > free {
					r.Scalars[n] = free
				}
			}
			r.prune()
			if !allocatable(r) || filtered(c.fw, a.ID, r) {
				continue
			}
			record(c.fw.ID, a.ID, c.role, r)
			fwCPUs[c.fw.ID] += r.Scalars["cpus"]
			for n, v := range r.Scalars {
				total[n] -= v
			}
			break
		}
	}

	out := make([]allocation, 0, len(order))
	for _, k := range order {
		out = append(out, allocation{FrameworkID: k.fw, AgentID: k.agent, Role: k.role, Resources: got[k]})
	}
	return out
}

func hasRole(roles []string, role string) bool {
	for _, r := range roles {
		if r == role {
			return true
		}
	}
	return false
}
