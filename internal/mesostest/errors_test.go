package mesostest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// 04-errors.txt and 15-stream-id-errors.txt: status codes and texts verbatim.
func TestSchedulerErrors(t *testing.T) {
	m := startMaster(t, Config{})
	s := subscribe(t, m, paBody)
	s.subscribed()
	fid := s.fwID
	url := m.URL() + "/api/v1/scheduler"
	revive := fmt.Sprintf(`{"framework_id":{"value":%q},"type":"REVIVE"}`, fid)
	subNoMulti := `{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"x","roles":["sluice-job1"],"capabilities":[{"type":"PARTITION_AWARE"}],"failover_timeout":60,"checkpoint":true}}}`
	cases := []struct {
		name string
		hdr  map[string]string
		body string
		code int
		text string
	}{
		{"no stream id", nil, revive, 400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header"},
		{"wrong stream id", map[string]string{"Mesos-Stream-Id": "11111111-2222-3333-4444-555555555555"}, revive, 400,
			"The stream ID '11111111-2222-3333-4444-555555555555' included in this request didn't match the stream ID currently associated with framework ID " + fid},
		{"malformed stream id", map[string]string{"Mesos-Stream-Id": "not-a-uuid"}, revive, 400,
			"The stream ID 'not-a-uuid' included in this request didn't match the stream ID currently associated with framework ID " + fid},
		{"unknown framework", map[string]string{"Mesos-Stream-Id": s.streamID}, `{"framework_id":{"value":"no-such-framework-0000"},"type":"REVIVE"}`, 400, "Framework cannot be found"},
		{"unknown framework no stream id", nil, `{"framework_id":{"value":"no-such-framework-0000"},"type":"REVIVE"}`, 400, "Framework cannot be found"},
		{"malformed JSON", map[string]string{"Mesos-Stream-Id": s.streamID}, revive[:len(revive)-1], 400, "Failed to parse body into JSON: syntax error at line 1 near: "},
		{"unknown type", map[string]string{"Mesos-Stream-Id": s.streamID}, fmt.Sprintf(`{"framework_id":{"value":%q},"type":"NO_SUCH_CALL"}`, fid), 400,
			"Failed to validate scheduler::Call: Expecting 'type' to be present"},
		{"no type", map[string]string{"Mesos-Stream-Id": s.streamID}, fmt.Sprintf(`{"framework_id":{"value":%q}}`, fid), 400,
			"Failed to validate scheduler::Call: Expecting 'type' to be present"},
		{"no framework_id", map[string]string{"Mesos-Stream-Id": s.streamID}, `{"type":"REVIVE"}`, 400,
			"Failed to validate scheduler::Call: Expecting 'framework_id' to be present"},
		{"text/plain", map[string]string{"Mesos-Stream-Id": s.streamID, "Content-Type": "text/plain"}, revive, 415,
			"Expecting 'Content-Type' of application/json or application/x-protobuf"},
		{"no content type", map[string]string{"Mesos-Stream-Id": s.streamID, "Content-Type": ""}, revive, 400, "Expecting 'Content-Type' to be present"},
		{"bad accept", map[string]string{"Accept": "text/html"}, subscribeBody("x", "MULTI_ROLE", "PARTITION_AWARE"), 406,
			"Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'"},
		{"subscribe with stream id", map[string]string{"Mesos-Stream-Id": s.streamID}, subscribeBody("x", "MULTI_ROLE", "PARTITION_AWARE"), 400,
			"Subscribe calls should not include the 'Mesos-Stream-Id' header"},
		{"no user", nil, `{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"x","roles":["sluice-job1"],"capabilities":[{"type":"MULTI_ROLE"},{"type":"PARTITION_AWARE"}],"failover_timeout":60,"checkpoint":true}}}`, 400,
			"Failed to convert JSON into Call protobuf: Missing required fields: subscribe.framework_info.user"},
		{"resubscribe without top-level id", nil, fmt.Sprintf(`{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"x","id":{"value":%q}}}}`, fid), 400,
			"Failed to validate scheduler::Call: 'framework_id' differs from 'subscribe.framework_info.id'"},
		{"bad uuid", map[string]string{"Mesos-Stream-Id": s.streamID}, fmt.Sprintf(`{"framework_id":{"value":%q},"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"x"},"uuid":"bm90LWEtdXVpZA=="}}`, fid), 400,
			"Failed to validate scheduler::Call: Not a valid UUID"},
		{"ack unknown task", map[string]string{"Mesos-Stream-Id": s.streamID}, fmt.Sprintf(`{"framework_id":{"value":%q},"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"no-such-task"},"uuid":"cPiB8mOdQM6kwUdrerhO+A=="}}`, fid), 202, ""},
		{"decline unknown offer", map[string]string{"Mesos-Stream-Id": s.streamID}, fmt.Sprintf(`{"framework_id":{"value":%q},"type":"DECLINE","decline":{"offer_ids":[{"value":"no-such-offer"}]}}`, fid), 202, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, hdr, body := post(t, url, c.hdr, c.body)
			if code != c.code || body != c.text {
				t.Fatalf("got %d %q, want %d %q", code, body, c.code, c.text)
			}
			if code >= 400 && hdr.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Fatalf("content type %q", hdr.Get("Content-Type"))
			}
			if code == 202 && (hdr.Get("Content-Length") != "0" || hdr.Get("Content-Type") != "") {
				t.Fatalf("202 headers %v", hdr)
			}
		})
	}

	t.Run("GET", func(t *testing.T) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
	})

	// 10a: 200 with a stream id, one ERROR record, then the end.
	t.Run("roles without MULTI_ROLE", func(t *testing.T) {
		e := subscribe(t, m, subNoMulti)
		if e.streamID == "" {
			t.Fatal("no stream id")
		}
		seen := e.ended()
		if len(seen) != 1 || seen[0].str("error.message") != "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable" {
			t.Fatalf("%v", seen)
		}
	})

	// 4a-4c: ACCEPT with an unknown offer: 202, then TASK_DROPPED (PA) or TASK_LOST.
	t.Run("unknown offer", func(t *testing.T) {
		s.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":"no-such-offer-O99"}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"bad-offer-task-1"},"agent_id":{"value":"x-S0"},"resources":[],"command":{"shell":true,"value":"echo hi"}}]}}]}}`, fid)
		u := s.nextUpdate()
		st := evt(u.get("update.status").(map[string]any))
		if st.str("state") != "TASK_DROPPED" || st.str("reason") != "REASON_INVALID_OFFERS" || st.str("source") != "SOURCE_MASTER" ||
			st.str("message") != "Task launched with invalid offers: Offer no-such-offer-O99 is no longer valid" || st.get("uuid") != nil {
			t.Fatalf("%v", u)
		}
		npa := subscribe(t, m, subscribeBody("npa", "MULTI_ROLE"))
		npa.subscribed()
		npa.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":"no-such-offer-O98"}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"bad-offer-task-2"},"agent_id":{"value":"x-S0"},"resources":[],"command":{"shell":true,"value":"echo hi"}}]}}]}}`, npa.fwID)
		if u := npa.nextUpdate(); u.str("update.status.state") != "TASK_LOST" {
			t.Fatalf("%v", u)
		}
	})
}

// 14-http-framework-authentication.txt
func TestHTTPFrameworkAuthentication(t *testing.T) {
	m := startMaster(t, Config{Credentials: map[string]string{"alice": "s3cret", "bob": "b0b"}})
	body := `{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"exp-c-auth","principal":"alice","hostname":"127.0.0.1"}}}`
	url := m.URL() + "/api/v1/scheduler"
	for _, auth := range []string{"", "Basic YWxpY2U6d3Jvbmc=", "Basic Y2Fyb2w6eA==", "Basic !!!"} {
		code, hdr, text := post(t, url, map[string]string{"Authorization": auth}, body)
		if code != 401 || text != "401 Unauthorized." || hdr.Get("WWW-Authenticate") != `Basic realm="mesos-master-scheduler"` {
			t.Fatalf("%q: %d %q %v", auth, code, text, hdr)
		}
	}
	code, _, text := post(t, url, map[string]string{"Authorization": "Basic Ym9iOmIwYg=="}, body)
	if code != 400 || text != "Failed to validate scheduler::Call: Authenticated principal 'bob' does not match principal 'alice' set in `FrameworkInfo`" {
		t.Fatalf("%d %q", code, text)
	}
	s := subscribeWith(t, m, map[string]string{"Authorization": "Basic YWxpY2U6czNjcmV0"}, body)
	s.subscribed()
	revive := fmt.Sprintf(`{"framework_id":{"value":%q},"type":"REVIVE"}`, s.fwID)
	if code, _, text := post(t, url, map[string]string{"Mesos-Stream-Id": s.streamID}, revive); code != 401 {
		t.Fatalf("%d %q", code, text)
	}
	code, _, text = post(t, url, map[string]string{"Mesos-Stream-Id": s.streamID, "Authorization": "Basic Ym9iOmIwYg=="}, revive)
	if code != 400 || text != "Authenticated principal 'bob' does not match principal 'alice' set in `FrameworkInfo`" {
		t.Fatalf("%d %q", code, text)
	}
	if code, _, text := post(t, url, map[string]string{"Mesos-Stream-Id": s.streamID, "Authorization": "Basic YWxpY2U6czNjcmV0"}, revive); code != 202 {
		t.Fatalf("%d %q", code, text)
	}
	// Without a principal in FrameworkInfo an authenticated framework is accepted.
	noPrincipal := strings.Replace(body, `"principal":"alice",`, "", 1)
	s2 := subscribeWith(t, m, map[string]string{"Authorization": "Basic YWxpY2U6czNjcmV0"}, noPrincipal)
	s2.subscribed()
	// The operator API stays open.
	if code, _, text := operator(t, m, `{"type":"GET_QUOTA"}`); code != 200 || text != `{"type":"GET_QUOTA","get_quota":{"status":{}}}` {
		t.Fatalf("%d %q", code, text)
	}
}

// 11-redirect.txt
func TestRedirect(t *testing.T) {
	m := startMaster(t, Config{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/master/redirect", "/redirect", "/master/redirect?foo=bar"} {
		resp, err := client.Get(m.URL() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 307 || resp.Header.Get("Location") != "//"+m.Addr() || resp.Header.Get("Content-Length") != "0" {
			t.Fatalf("%s: %d %v", p, resp.StatusCode, resp.Header)
		}
	}
	resp, err := client.Get(m.URL() + "/master/redirect/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("%d", resp.StatusCode)
	}
	// A non-leading master sends schedulers to the leader.
	nl := startMaster(t, Config{Leader: m.Addr()})
	req, _ := http.NewRequest(http.MethodPost, nl.URL()+"/api/v1/scheduler", strings.NewReader(paBody))
	req.Header.Set("Content-Type", "application/json")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 307 || resp.Header.Get("Location") != "//"+m.Addr()+"/api/v1/scheduler" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	none := startMaster(t, Config{NoLeader: true})
	code, _, text := post(t, none.URL()+"/api/v1/scheduler", nil, paBody)
	if code != 503 || text != "No leader elected" {
		t.Fatalf("%d %q", code, text)
	}
	if code, _, text := operator(t, m, `{"type":"GET_HEALTH"}`); code != 200 || text != `{"type":"GET_HEALTH","get_health":{"healthy":true}}` {
		t.Fatalf("%d %q", code, text)
	}
	if code, _, text := operator(t, m, `{"type":"GET_VERSION"}`); code != 200 ||
		text != `{"type":"GET_VERSION","get_version":{"version_info":{"version":"1.12.0","build_date":"2026-11-23 19:02:17","build_time":1795460537.0,"build_user":"","git_sha":"c1b42f79d157aa900be5cbb0c1023f1479962aa7","git_branch":"refs/heads/master"}}}` {
		t.Fatalf("%d %q", code, text)
	}
}
