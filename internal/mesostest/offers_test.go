package mesostest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// quietFor is long enough for several allocation cycles (50 ms each in these
// tests); it checks that something does NOT happen, never how fast.
const quietFor = 600 * time.Millisecond

// 03-decline-revive-suppress.txt
func TestDeclineSuppressRevive(t *testing.T) {
	m := startMaster(t, Config{})
	s := subscribe(t, m, paBody)
	s.subscribed()
	decline := func(oid string, filters string) {
		s.mustCall(`{"framework_id":{"value":%q},"type":"DECLINE","decline":{"offer_ids":[{"value":%q}]%s}}`, s.fwID, oid, filters)
	}
	// refuse_seconds 0: the next allocation cycle offers it again.
	oid, _ := firstOffer(s.offer())
	decline(oid, `,"filters":{"refuse_seconds":0}`)
	oid2, _ := firstOffer(s.offer())
	if oid2 == oid {
		t.Fatal("same offer id re-offered")
	}
	// A long filter holds the resources back; REVIVE clears it.
	decline(oid2, `,"filters":{"refuse_seconds":3600}`)
	if e := s.noEventOf("OFFERS", quietFor); e != nil {
		t.Fatalf("offer despite the decline filter: %v", e)
	}
	s.mustCall(`{"framework_id":{"value":%q},"type":"REVIVE","revive":{"roles":["sluice-job1"]}}`, s.fwID)
	oid3, _ := firstOffer(s.offer())
	// SUPPRESS keeps the outstanding offer; after declining it nothing comes.
	s.mustCall(`{"framework_id":{"value":%q},"type":"SUPPRESS","suppress":{"roles":["sluice-job1"]}}`, s.fwID)
	if e := s.noEventOf("RESCIND", quietFor); e != nil {
		t.Fatalf("SUPPRESS rescinded: %v", e)
	}
	decline(oid3, `,"filters":{"refuse_seconds":0}`)
	if e := s.noEventOf("OFFERS", quietFor); e != nil {
		t.Fatalf("offer while suppressed: %v", e)
	}
	// SUPPRESS/REVIVE for a role the framework does not have: 202, dropped.
	s.mustCall(`{"framework_id":{"value":%q},"type":"REVIVE","revive":{"roles":["not-my-role"]}}`, s.fwID)
	if e := s.noEventOf("OFFERS", quietFor); e != nil {
		t.Fatalf("REVIVE of a foreign role revived: %v", e)
	}
	s.mustCall(`{"framework_id":{"value":%q},"type":"REVIVE"}`, s.fwID)
	oid4, _ := firstOffer(s.offer())
	// SUPPRESS without roles suppresses them all; the default decline is 5 s.
	s.mustCall(`{"framework_id":{"value":%q},"type":"SUPPRESS"}`, s.fwID)
	decline(oid4, "")
	if e := s.noEventOf("OFFERS", quietFor); e != nil {
		t.Fatalf("offer while suppressed: %v", e)
	}
	s.mustCall(`{"framework_id":{"value":%q},"type":"REVIVE"}`, s.fwID)
	s.offer()
}

// The default decline filter (5 s) keeps the resources back until REVIVE.
func TestDeclineDefaultFilter(t *testing.T) {
	m := startMaster(t, Config{})
	s := subscribe(t, m, paBody)
	s.subscribed()
	oid, _ := firstOffer(s.offer())
	s.mustCall(`{"framework_id":{"value":%q},"type":"DECLINE","decline":{"offer_ids":[{"value":%q}]}}`, s.fwID, oid)
	if e := s.noEventOf("OFFERS", quietFor); e != nil {
		t.Fatalf("offer inside the default 5 s filter: %v", e)
	}
}

func offerScalars(t *testing.T, e evt) []map[string]float64 {
	t.Helper()
	var out []map[string]float64
	for _, o := range e.get("offers.offers").([]any) {
		got := map[string]float64{}
		for _, r := range o.(map[string]any)["resources"].([]any) {
			rr := evt(r.(map[string]any))
			if v, ok := rr.get("scalar.value").(float64); ok {
				got[rr.str("name")] = v
			}
		}
		out = append(out, got)
	}
	return out
}

// 08-quota.txt and 13-quota-limits-and-offers.txt
func TestQuota(t *testing.T) {
	m := startMaster(t, Config{})
	if code, hdr, body := operator(t, m, `{"type":"GET_QUOTA"}`); code != 200 || hdr.Get("Content-Type") != "application/json" ||
		body != `{"type":"GET_QUOTA","get_quota":{"status":{}}}` {
		t.Fatalf("%d %v %s", code, hdr, body)
	}
	code, hdr, body := operator(t, m, `{"type":"UPDATE_QUOTA","update_quota":{"force":false,"quota_configs":[{"role":"sluice-job1","guarantees":{"cpus":{"value":0.5},"mem":{"value":256}},"limits":{"cpus":{"value":1},"mem":{"value":1024}}}]}}`)
	if code != 200 || body != "" || hdr.Get("Content-Length") != "0" || hdr.Get("Content-Type") != "" {
		t.Fatalf("%d %v %q", code, hdr, body)
	}
	_, _, body = operator(t, m, `{"type":"GET_QUOTA"}`)
	var got, want any
	json.Unmarshal([]byte(body), &got)
	json.Unmarshal([]byte(`{"type":"GET_QUOTA","get_quota":{"status":{"infos":[{"role":"sluice-job1","guarantee":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.5}},{"name":"mem","type":"SCALAR","scalar":{"value":256.0}}]}],"configs":[{"role":"sluice-job1","guarantees":{"cpus":{"value":0.5},"mem":{"value":256.0}},"limits":{"mem":{"value":1024.0},"cpus":{"value":1.0}}}]}}}`), &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("GET_QUOTA %s", body)
	}

	s := subscribe(t, m, paBody)
	s.subscribed()
	first := s.offer()
	if sc := offerScalars(t, first); len(sc) != 1 || !reflect.DeepEqual(sc[0], map[string]float64{"cpus": 1, "mem": 1024, "disk": 4096}) {
		t.Fatalf("offer not capped at the limit: %v", sc)
	}
	oid, aid := firstOffer(first)
	s.launch(oid, aid, "quota-task-1", "sleep 60", `{"name":"cpus","type":"SCALAR","scalar":{"value":0.6}},{"name":"mem","type":"SCALAR","scalar":{"value":600}}`)
	s.expectState("quota-task-1", "TASK_STARTING")
	s.expectState("quota-task-1", "TASK_RUNNING")
	if sc := offerScalars(t, s.offer()); len(sc) != 1 || !reflect.DeepEqual(sc[0], map[string]float64{"cpus": 0.4, "mem": 424, "disk": 4096}) {
		t.Fatalf("offer not cut to the headroom: %v", sc)
	}

	for _, c := range []struct{ body, text string }{
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"sluice-job1","guarantees":{"cpus":{"value":10},"mem":{"value":256}},"limits":{"cpus":{"value":10},"mem":{"value":1024}}}]}}`,
			"Invalid QuotaConfig: total quota guarantees 'cpus:10; mem:256' exceed cluster capacity 'cpus:2; disk:4096; mem:2048' (use 'force' flag to bypass this check)"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"force":true,"quota_configs":[{"role":"sluice-job1","guarantees":{"cpus":{"value":2},"mem":{"value":256}},"limits":{"cpus":{"value":1},"mem":{"value":1024}}}]}}`,
			"Invalid QuotaConfig: 'QuotaConfig.guarantees' { cpus: 2, mem: 256 } is not contained within the 'QuotaConfig.limits' { cpus: 1, mem: 1024 }"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r9","guarantees":{"foo":{"value":1}}}]}}`,
			"Invalid QuotaConfig: total quota guarantees 'cpus:0.5; foo:1; mem:256' exceed cluster capacity 'cpus:2; disk:4096; mem:2048' (use 'force' flag to bypass this check)"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r2","limits":[{"name":"cpus","type":"SCALAR","scalar":{"value":1}}]}]}}`,
			"Failed to convert JSON into Call protobuf: Not expecting a JSON string for field 'value'"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r2","limits":{"cpus":{"value":-1}}}]}}`,
			"Invalid QuotaConfig: Invalid limit configuration {'cpus': -1}: Negative values not supported"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r1/x","limits":{"cpus":{"value":1}}}]}}`,
			"Updating quota on nested role 'r1/x' is not supported yet"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"bad role","limits":{"cpus":{"value":1}}}]}}`,
			"Invalid QuotaConfig: Invalid 'QuotaConfig.role': Role component 'bad role' is invalid because it contains backspace or whitespace"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"limits":{"cpus":{"value":1}}}]}}`,
			"Failed to convert JSON into Call protobuf: Missing required fields: update_quota.quota_configs[0].role"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r2","limits":{"cpus":{"value":"two"}}}]}}`,
			"Failed to convert JSON into Call protobuf: Failed to parse 'two' as a JSON number for field 'value': syntax error at line 1 near: wo"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"sluice-job1","limits":{"cpus":{"value":0.5}}}]}}`,
			"Invalid QuotaConfig: Role 'sluice-job1' is already consuming 'cpus:0.6; mem:600'; this is more than the requested limits 'cpus:0.5' (use 'force' flag to bypass this check)"},
		{`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r3","limits":{"cpus":{"value":1}}},{"role":"r4","guarantees":{"cpus":{"value":2}},"limits":{"cpus":{"value":1}}}]}}`,
			"Invalid QuotaConfig: 'QuotaConfig.guarantees' { cpus: 2 } is not contained within the 'QuotaConfig.limits' { cpus: 1 }"},
	} {
		code, hdr, text := operator(t, m, c.body)
		if code != 400 || text != c.text || hdr.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%s:\n got %d %q\nwant %q", c.body, code, text, c.text)
		}
	}
	// Unknown resource names are stored as limits; an empty list is a no-op.
	for _, b := range []string{
		`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r9","limits":{"foo":{"value":5},"gpus":{"value":1}}}]}}`,
		`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[]}}`,
		`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r9"}]}}`,
	} {
		if code, _, text := operator(t, m, b); code != 200 {
			t.Fatalf("%s: %d %s", b, code, text)
		}
	}
	// All or nothing: r3 was not stored.
	if _, _, body := operator(t, m, `{"type":"GET_QUOTA"}`); json.Valid([]byte(body)) && containsRole(body, "r3") {
		t.Fatalf("r3 stored: %s", body)
	}
	// force lifts the capacity check; a config with neither guarantees nor limits resets the role.
	if code, _, text := operator(t, m, `{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"sluice-job1","guarantees":{"cpus":{"value":10},"mem":{"value":256}},"limits":{"cpus":{"value":10},"mem":{"value":1024}}}],"force":true}}`); code != 200 {
		t.Fatalf("%d %s", code, text)
	}
	if code, _, text := operator(t, m, `{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"sluice-job1"}]}}`); code != 200 {
		t.Fatalf("%d %s", code, text)
	}
	if _, _, body := operator(t, m, `{"type":"GET_QUOTA"}`); body != `{"type":"GET_QUOTA","get_quota":{"status":{"infos":[{"role":"r9"},{"role":"sluice-job1"}],"configs":[{"role":"r9"},{"role":"sluice-job1"}]}}}` {
		t.Fatalf("%s", body)
	}
}

func containsRole(body, role string) bool {
	var v struct {
		GetQuota struct {
			Status struct {
				Configs []struct{ Role string } `json:"configs"`
			} `json:"status"`
		} `json:"get_quota"`
	}
	json.Unmarshal([]byte(body), &v)
	for _, c := range v.GetQuota.Status.Configs {
		if c.Role == role {
			return true
		}
	}
	return false
}

// 13: once the role holds its limit nothing at all is offered, and raising
// the limit brings offers back.
func TestQuotaLimitReached(t *testing.T) {
	m := startMaster(t, Config{Agents: []AgentConfig{
		{CPUs: 2, Mem: 4096, Disk: 10000, Ports: []Range{{31000, 31999}}, Attributes: map[string]string{"rack": "r1"}},
		{CPUs: 2, Mem: 4096, Disk: 10000, Ports: []Range{{31000, 31999}}, Attributes: map[string]string{"rack": "r2"}},
		{CPUs: 2, Mem: 4096, Disk: 10000, Ports: []Range{{31000, 31999}}, Attributes: map[string]string{"rack": "r3"}},
	}})
	operator(t, m, `{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"r1","guarantees":{"cpus":{"value":1}},"limits":{"cpus":{"value":2},"mem":{"value":1024}}}]}}`)
	s := subscribe(t, m, `{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"exp-b-quota","roles":["r1"],"capabilities":[{"type":"MULTI_ROLE"}],"hostname":"127.0.0.1"}}}`)
	s.subscribed()
	e := s.offer()
	sc := offerScalars(t, e)
	if len(sc) != 1 || !reflect.DeepEqual(sc[0], map[string]float64{"cpus": 2, "mem": 1024, "disk": 10000}) {
		t.Fatalf("want one offer cut to the limit, got %v", sc)
	}
	if attrs := fmt.Sprint(e.get("offers.offers").([]any)[0].(map[string]any)["attributes"]); attrs == "<nil>" {
		t.Fatal("no attributes in the offer")
	}
	oid, aid := firstOffer(e)
	s.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":%q}],"filters":{"refuse_seconds":1},"operations":[{"type":"LAUNCH","launch":{"task_infos":[
		{"name":"q1","task_id":{"value":"quota-task-1"},"agent_id":{"value":%q},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1},"allocation_info":{"role":"r1"}},{"name":"mem","type":"SCALAR","scalar":{"value":512},"allocation_info":{"role":"r1"}}],"command":{"shell":true,"value":"sleep 3600"}},
		{"name":"q2","task_id":{"value":"quota-task-2"},"agent_id":{"value":%q},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1},"allocation_info":{"role":"r1"}},{"name":"mem","type":"SCALAR","scalar":{"value":512},"allocation_info":{"role":"r1"}}],"command":{"shell":true,"value":"sleep 3600"}}]}}]}}`,
		s.fwID, oid, aid, aid)
	running := 0
	for running < 2 {
		u := s.nextUpdate()
		if u.str("update.status.uuid") != "" {
			s.ack(u)
		}
		if u.str("update.status.state") == "TASK_RUNNING" {
			running++
		}
	}
	if e := s.noEventOf("OFFERS", 2*quietFor); e != nil {
		t.Fatalf("offer while the role holds its limit: %v", e)
	}
	_, _, roles := operator(t, m, `{"type":"GET_ROLES"}`)
	want := fmt.Sprintf(`{"type":"GET_ROLES","get_roles":{"roles":[{"name":"*","weight":1.0},{"name":"r1","weight":1.0,"frameworks":[{"value":%q}],"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":2.0}},{"name":"mem","type":"SCALAR","scalar":{"value":1024.0}}]}]}}`, s.fwID)
	if roles != want {
		t.Fatalf("GET_ROLES\n got %s\nwant %s", roles, want)
	}
	// A forced lower cpu limit leaves mem unlimited: offers come without cpus.
	if code, _, text := operator(t, m, `{"type":"UPDATE_QUOTA","update_quota":{"force":true,"quota_configs":[{"role":"r1","limits":{"cpus":{"value":1}}}]}}`); code != 200 {
		t.Fatalf("%d %s", code, text)
	}
	for _, o := range offerScalars(t, s.offer()) {
		if _, ok := o["cpus"]; ok || o["mem"] == 0 {
			t.Fatalf("offer above the cpu limit: %v", o)
		}
	}
}

// SUBSCRIBE with suppressed_roles gets no offers; UPDATE_FRAMEWORK changes
// the roles and the suppression.
func TestSuppressedRolesAndUpdateFramework(t *testing.T) {
	m := startMaster(t, Config{})
	s := subscribe(t, m, `{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"x","roles":["sluice-job1"],"capabilities":[{"type":"MULTI_ROLE"}]},"suppressed_roles":["sluice-job1"]}}`)
	s.subscribed()
	if e := s.noEventOf("OFFERS", quietFor); e != nil {
		t.Fatalf("offer to a suppressed role: %v", e)
	}
	s.mustCall(`{"framework_id":{"value":%q},"type":"UPDATE_FRAMEWORK","update_framework":{"framework_info":{"user":"root","name":"x","id":{"value":%q},"roles":["other"],"capabilities":[{"type":"MULTI_ROLE"}]}}}`, s.fwID, s.fwID)
	e := s.offer()
	if role := evt(e.get("offers.offers").([]any)[0].(map[string]any)).str("allocation_info.role"); role != "other" {
		t.Fatalf("offer for role %q", role)
	}
}
