package mesostest

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/gogo/protobuf/proto"
	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/master"
	"github.com/mesos/mesos-go/api/v1/lib/quota"
)

// The operator API (POST /api/v1): GET_HEALTH, GET_VERSION, GET_QUOTA,
// UPDATE_QUOTA, TEARDOWN, and GET_ROLES, GET_FRAMEWORKS, GET_AGENTS and
// GET_TASKS with the fields tests look at. Like the real master it needs no framework
// credentials (--authenticate_http_readwrite is off).

func (m *Master) handleOperator(w http.ResponseWriter, r *http.Request) {
	if m.redirectNonLeader(w, r) {
		return
	}
	call := &master.Call{}
	if !readCall(w, r, call) {
		return
	}
	at := acceptType(r)
	if at == "" {
		textError(w, http.StatusNotAcceptable, "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'")
		return
	}
	respond := func(resp *master.Response) {
		var b []byte
		if at == "application/x-protobuf" {
			b, _ = proto.Marshal(resp)
		} else {
			b = marshalJSON(resp)
		}
		w.Header().Set("Content-Type", at)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	}
	okEmpty := func() {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	}
	switch call.Type {
	case master.Call_UNKNOWN:
		textError(w, http.StatusBadRequest, "Failed to validate master::Call: Expecting 'type' to be present")
	case master.Call_GET_HEALTH:
		respond(&master.Response{Type: master.Response_GET_HEALTH, GetHealth: &master.Response_GetHealth{Healthy: true}})
	case master.Call_GET_VERSION:
		respond(&master.Response{Type: master.Response_GET_VERSION, GetVersion: &master.Response_GetVersion{VersionInfo: mesos.VersionInfo{
			Version: "1.12.0", BuildDate: ptr("2026-11-23 19:02:17"), BuildTime: ptr(1795460537.0), BuildUser: ptr(""),
			GitSHA: ptr("c1b42f79d157aa900be5cbb0c1023f1479962aa7"), GitBranch: ptr("refs/heads/master"),
		}}})
	case master.Call_GET_QUOTA:
		m.mu.Lock()
		st := m.quotaStatusLocked()
		m.mu.Unlock()
		respond(&master.Response{Type: master.Response_GET_QUOTA, GetQuota: &master.Response_GetQuota{Status: st}})
	case master.Call_GET_ROLES, master.Call_GET_FRAMEWORKS, master.Call_GET_AGENTS, master.Call_GET_TASKS:
		m.mu.Lock()
		resp := m.stateResponseLocked(call.Type)
		m.mu.Unlock()
		respond(resp)
	case master.Call_UPDATE_QUOTA:
		if call.UpdateQuota == nil {
			textError(w, http.StatusBadRequest, "Failed to validate master::Call: Expecting 'update_quota' to be present")
			return
		}
		m.mu.Lock()
		msg := m.updateQuotaLocked(call.UpdateQuota)
		m.mu.Unlock()
		if msg != "" {
			textError(w, http.StatusBadRequest, msg)
			return
		}
		okEmpty()
	case master.Call_TEARDOWN:
		if call.Teardown == nil {
			textError(w, http.StatusBadRequest, "Failed to validate master::Call: Expecting 'teardown' to be present")
			return
		}
		if err := m.Teardown(call.Teardown.FrameworkID.Value); err != nil {
			textError(w, http.StatusBadRequest, "No framework found with specified ID")
			return
		}
		okEmpty()
	default:
		textError(w, http.StatusNotImplemented, "mesostest does not implement operator call "+call.Type.String())
	}
}

// Teardown removes a framework as the operator TEARDOWN call does: its
// stream ends, its tasks are killed, and its ID is refused afterwards.
func (m *Master) Teardown(frameworkID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	fw := m.frameworks[frameworkID]
	if fw == nil {
		return fmt.Errorf("mesostest: no framework %q", frameworkID)
	}
	m.removeFrameworkLocked(fw)
	return nil
}

func scalarsFromMap(mp map[string]mesos.Value_Scalar) map[string]int64 {
	out := map[string]int64{}
	for k, v := range mp {
		out[k] = milli(v.Value)
	}
	return out
}

// formatQuotaMap writes "{ cpus: 2, mem: 256 }" as the master's errors do.
func formatQuotaMap(mp map[string]int64) string {
	var names []string
	for k := range mp {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		parts = append(parts, k+": "+strconv.FormatFloat(unmilli(mp[k]), 'f', -1, 64))
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func validateRole(role string) string {
	if role == "" {
		return "Role names cannot be empty"
	}
	for _, c := range role {
		if c == ' ' || c == '\t' || c == '\n' || c == '\b' || c == '\r' || c == '\v' || c == '\f' {
			return fmt.Sprintf("Role component '%s' is invalid because it contains backspace or whitespace", role)
		}
	}
	if role == "." || role == ".." {
		return fmt.Sprintf("Role component '%s' is invalid", role)
	}
	if strings.HasPrefix(role, "-") {
		return fmt.Sprintf("Role component '%s' is invalid because it starts with a dash", role)
	}
	return ""
}

func (m *Master) updateQuotaLocked(u *master.Call_UpdateQuota) string {
	force := u.Force != nil && *u.Force
	type parsed struct {
		role       string
		guarantees map[string]int64
		limits     map[string]int64
	}
	var configs []parsed
	for _, c := range u.QuotaConfigs {
		if strings.Contains(c.Role, "/") {
			return fmt.Sprintf("Updating quota on nested role '%s' is not supported yet", c.Role)
		}
		if c.Role != "*" {
			if msg := validateRole(c.Role); msg != "" {
				return "Invalid QuotaConfig: Invalid 'QuotaConfig.role': " + msg
			}
		}
		for _, kind := range []struct {
			name string
			mp   map[string]mesos.Value_Scalar
		}{{"guarantee", c.Guarantees}, {"limit", c.Limits}} {
			for k, v := range kind.mp {
				if v.Value < 0 {
					return fmt.Sprintf("Invalid QuotaConfig: Invalid %s configuration {'%s': %s}: Negative values not supported",
						kind.name, k, strconv.FormatFloat(v.Value, 'f', -1, 64))
				}
			}
		}
		p := parsed{role: c.Role, guarantees: scalarsFromMap(c.Guarantees), limits: scalarsFromMap(c.Limits)}
		for k, g := range p.guarantees {
			if l, ok := p.limits[k]; ok && g > l {
				return fmt.Sprintf("Invalid QuotaConfig: 'QuotaConfig.guarantees' %s is not contained within the 'QuotaConfig.limits' %s",
					formatQuotaMap(p.guarantees), formatQuotaMap(p.limits))
			}
		}
		configs = append(configs, p)
	}
	if !force {
		total := map[string]int64{}
		updated := map[string]bool{}
		for _, p := range configs {
			updated[p.role] = true
			for k, v := range p.guarantees {
				total[k] += v
			}
		}
		for role, q := range m.quotas {
			if updated[role] {
				continue
			}
			for k, v := range q.guarantees {
				total[k] += v
			}
		}
		capacity := map[string]int64{}
		for _, a := range m.agents {
			if a.state == agentUnreachable {
				continue
			}
			for k, v := range a.total.Scalars {
				capacity[k] += v
			}
		}
		for k, v := range total {
			if v > capacity[k] {
				return fmt.Sprintf("Invalid QuotaConfig: total quota guarantees '%s' exceed cluster capacity '%s' (use 'force' flag to bypass this check)",
					formatScalarsSorted(total), formatScalarsSorted(capacity))
			}
		}
		for _, p := range configs {
			used := m.roleConsumptionLocked(p.role)
			for k, l := range p.limits {
				if used[k] > l {
					return fmt.Sprintf("Invalid QuotaConfig: Role '%s' is already consuming '%s'; this is more than the requested limits '%s' (use 'force' flag to bypass this check)",
						p.role, formatScalarsSorted(used), formatScalarsSorted(p.limits))
				}
			}
		}
	}
	for _, p := range configs {
		if _, ok := m.quotas[p.role]; !ok {
			m.quotaOrder = append([]string{p.role}, m.quotaOrder...)
		}
		m.quotas[p.role] = &quotaEntry{role: p.role, guarantees: p.guarantees, limits: p.limits}
		m.log.Info("updated quota", "role", p.role, "guarantees", formatScalarsSorted(p.guarantees), "limits", formatScalarsSorted(p.limits))
	}
	return ""
}

// roleConsumptionLocked is what the role's tasks hold (scalars).
func (m *Master) roleConsumptionLocked(role string) map[string]int64 {
	used := map[string]int64{}
	for _, a := range m.agents {
		for _, t := range a.tasks {
			if t.role == role && !t.freed {
				for k, v := range t.res.Scalars {
					used[k] += v
				}
			}
		}
	}
	return used
}

func (m *Master) quotaStatusLocked() quota.QuotaStatus {
	var st quota.QuotaStatus
	for _, role := range m.quotaOrder {
		q := m.quotas[role]
		info := quota.QuotaInfo{Role: ptr(role)}
		var names []string
		for k := range q.guarantees {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			info.Guarantee = append(info.Guarantee, mesos.Resource{
				Name: k, Type: mesos.SCALAR.Enum(), Scalar: &mesos.Value_Scalar{Value: unmilli(q.guarantees[k])},
			})
		}
		st.Infos = append(st.Infos, info)
		cfg := quota.QuotaConfig{Role: role}
		if len(q.guarantees) > 0 {
			cfg.Guarantees = map[string]mesos.Value_Scalar{}
			for k, v := range q.guarantees {
				cfg.Guarantees[k] = mesos.Value_Scalar{Value: unmilli(v)}
			}
		}
		if len(q.limits) > 0 {
			cfg.Limits = map[string]mesos.Value_Scalar{}
			for k, v := range q.limits {
				cfg.Limits[k] = mesos.Value_Scalar{Value: unmilli(v)}
			}
		}
		st.Configs = append(st.Configs, cfg)
	}
	return st
}

func scalarList(mp map[string]int64) []mesos.Resource {
	var names []string
	for k := range mp {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []mesos.Resource
	for _, k := range names {
		if mp[k] > 0 {
			out = append(out, mesos.Resource{Name: k, Type: mesos.SCALAR.Enum(), Scalar: &mesos.Value_Scalar{Value: unmilli(mp[k])}})
		}
	}
	return out
}

func (m *Master) stateResponseLocked(typ master.Call_Type) *master.Response {
	switch typ {
	case master.Call_GET_ROLES:
		names := map[string]bool{"*": true}
		for _, fw := range m.frameworks {
			for _, r := range fw.roles {
				names[r] = true
			}
		}
		for r := range m.quotas {
			names[r] = true
		}
		var sorted []string
		for r := range names {
			sorted = append(sorted, r)
		}
		sort.Strings(sorted)
		resp := &master.Response_GetRoles{}
		for _, r := range sorted {
			role := mesos.Role{Name: r, Weight: 1}
			for _, id := range m.fwOrder {
				if hasRole(m.frameworks[id].roles, r) {
					role.Frameworks = append(role.Frameworks, mesos.FrameworkID{Value: id})
				}
			}
			role.Resources = scalarList(m.roleConsumptionLocked(r))
			resp.Roles = append(resp.Roles, role)
		}
		return &master.Response{Type: master.Response_GET_ROLES, GetRoles: resp}
	case master.Call_GET_FRAMEWORKS:
		resp := &master.Response_GetFrameworks{}
		for _, id := range m.fwOrder {
			fw := m.frameworks[id]
			resp.Frameworks = append(resp.Frameworks, master.Response_GetFrameworks_Framework{
				FrameworkInfo: fw.info, Active: fw.stream != nil, Connected: fw.stream != nil,
			})
		}
		for _, info := range m.completed {
			resp.CompletedFrameworks = append(resp.CompletedFrameworks, master.Response_GetFrameworks_Framework{FrameworkInfo: info})
		}
		return &master.Response{Type: master.Response_GET_FRAMEWORKS, GetFrameworks: resp}
	case master.Call_GET_AGENTS:
		resp := &master.Response_GetAgents{}
		for _, a := range m.agents {
			if a.state == agentUnreachable {
				continue
			}
			rs := a.total.toProto("")
			for i := range rs {
				rs[i].Role = nil
			}
			resp.Agents = append(resp.Agents, master.Response_GetAgents_Agent{
				AgentInfo: mesos.AgentInfo{Hostname: a.hostname, Port: ptr(int32(a.port)), Resources: rs, Attributes: a.attributes,
					ID: &mesos.AgentID{Value: a.id}},
				Active: a.state == agentActive, Deactivated: ptr(a.state != agentActive), Version: "1.12.0",
				PID: ptr(fmt.Sprintf("slave(1)@127.0.0.1:%d", a.port)),
			})
		}
		return &master.Response{Type: master.Response_GET_AGENTS, GetAgents: resp}
	default:
		resp := &master.Response_GetTasks{}
		for _, id := range m.fwOrder {
			fw := m.frameworks[id]
			conv := func(t *task) mesos.Task {
				rs := t.res.toProto(t.role)
				for i := range rs {
					rs[i].Role = nil
				}
				return mesos.Task{Name: t.info.Name, TaskID: mesos.TaskID{Value: t.id}, FrameworkID: mesos.FrameworkID{Value: fw.id},
					ExecutorID: &mesos.ExecutorID{Value: t.id}, AgentID: mesos.AgentID{Value: t.agent.id}, State: t.state.Enum(), Resources: rs}
			}
			for _, tid := range sortedTaskIDs(fw.tasks) {
				resp.Tasks = append(resp.Tasks, conv(fw.tasks[tid]))
			}
			for _, tid := range sortedTaskIDs(fw.unreachable) {
				resp.UnreachableTasks = append(resp.UnreachableTasks, conv(fw.unreachable[tid]))
			}
		}
		return &master.Response{Type: master.Response_GET_TASKS, GetTasks: resp}
	}
}
