package mesostest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func resubscribeBody(fid string, failover int) string {
	return fmt.Sprintf(`{"framework_id":{"value":%q},"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"sluice-probe","roles":["sluice-job1"],"capabilities":[{"type":"MULTI_ROLE"},{"type":"PARTITION_AWARE"}],"failover_timeout":%d,"checkpoint":true,"id":{"value":%q}}}}`, fid, failover, fid)
}

// 06-failover.txt
func TestFailover(t *testing.T) {
	m := startMaster(t, Config{})
	a := subscribe(t, m, paBody)
	a.subscribed()
	a.runTask("long-1", "sleep 60")
	frameworkState := func() string {
		_, _, body := operator(t, m, `{"type":"GET_FRAMEWORKS"}`)
		var v struct {
			GetFrameworks struct {
				Frameworks []struct{ Active, Connected bool } `json:"frameworks"`
			} `json:"get_frameworks"`
		}
		json.Unmarshal([]byte(body), &v)
		return fmt.Sprint(v.GetFrameworks.Frameworks)
	}
	if st := frameworkState(); st != "[{true true}]" {
		t.Fatalf("before the drop: %s", st)
	}
	a.close()
	<-a.done
	for deadline := time.Now().Add(waitLimit); frameworkState() != "[{false false}]"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the drop: %s", frameworkState())
		}
	}

	// Without the top-level framework_id: 400.
	noTop := strings.Replace(resubscribeBody(a.fwID, 60), fmt.Sprintf(`{"framework_id":{"value":%q},`, a.fwID), "{", 1)
	if code, _, text := post(t, m.URL()+"/api/v1/scheduler", nil, noTop); code != 400 ||
		text != "Failed to validate scheduler::Call: 'framework_id' differs from 'subscribe.framework_info.id'" {
		t.Fatalf("%d %q", code, text)
	}
	b := subscribe(t, m, resubscribeBody(a.fwID, 60))
	b.subscribed()
	if b.fwID != a.fwID || b.streamID == a.streamID {
		t.Fatalf("ids: %s %s / %s %s", a.fwID, b.fwID, a.streamID, b.streamID)
	}
	b.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[]}}`, b.fwID)
	if u := b.nextUpdate(); u.str("update.status.task_id.value") != "long-1" || u.str("update.status.state") != "TASK_RUNNING" {
		t.Fatalf("task did not survive: %v", u)
	}
	revive := fmt.Sprintf(`{"framework_id":{"value":%q},"type":"REVIVE"}`, a.fwID)
	if code, text := a.call(revive); code != 400 || text != fmt.Sprintf("The stream ID '%s' included in this request didn't match the stream ID currently associated with framework ID %s", a.streamID, a.fwID) {
		t.Fatalf("%d %q", code, text)
	}

	// (b) A second SUBSCRIBE while B is connected: B gets ERROR and its end.
	c := subscribe(t, m, resubscribeBody(a.fwID, 60))
	c.subscribed()
	seen := b.ended()
	if len(seen) == 0 || seen[len(seen)-1].str("type") != "ERROR" || seen[len(seen)-1].str("error.message") != "Framework failed over" {
		t.Fatalf("old stream saw %v", seen)
	}
	if code, _ := b.call(revive); code != 400 {
		t.Fatalf("old stream id accepted: %d", code)
	}
	if code, text := c.call(revive); code != 202 {
		t.Fatalf("%d %q", code, text)
	}
	c.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[]}}`, c.fwID)
	if u := c.nextUpdate(); u.str("update.status.task_id.value") != "long-1" || u.str("update.status.state") != "TASK_RUNNING" {
		t.Fatalf("%v", u)
	}
}

// 07-teardown-and-removed-framework.txt
func TestTeardownAndRemovedFramework(t *testing.T) {
	m := startMaster(t, Config{})
	a := subscribe(t, m, paBody)
	a.subscribed()
	a.runTask("long-1", "sleep 60")
	pid := taskPID(t, m, "long-1")
	a.mustCall(`{"framework_id":{"value":%q},"type":"TEARDOWN"}`, a.fwID)
	for _, e := range a.ended() {
		if e.str("type") == "UPDATE" || e.str("type") == "ERROR" {
			t.Fatalf("event after TEARDOWN: %v", e)
		}
	}
	for deadline := time.Now().Add(waitLimit); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("TEARDOWN left the task running")
		}
	}
	// The removed id: 200 + ERROR + end; other calls: Framework cannot be found.
	b := subscribe(t, m, resubscribeBody(a.fwID, 60))
	seen := b.ended()
	if len(seen) != 1 || seen[0].str("error.message") != "Framework has been removed" {
		t.Fatalf("%v", seen)
	}
	if code, text := a.call(fmt.Sprintf(`{"framework_id":{"value":%q},"type":"REVIVE"}`, a.fwID)); code != 400 || text != "Framework cannot be found" {
		t.Fatalf("%d %q", code, text)
	}
	// Removal by failover_timeout expiry.
	c := subscribe(t, m, strings.Replace(paBody, `"failover_timeout":60`, `"failover_timeout":0.2`, 1))
	c.subscribed()
	c.close()
	<-c.done
	var gone bool
	for deadline := time.Now().Add(waitLimit); !gone && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		gone = m.FrameworkRemoved(c.fwID)
	}
	d := subscribe(t, m, resubscribeBody(c.fwID, 1))
	if seen := d.ended(); len(seen) != 1 || seen[0].str("error.message") != "Framework has been removed" {
		t.Fatalf("%v", seen)
	}
	// A never-seen framework id is accepted and kept.
	e := subscribe(t, m, resubscribeBody("12345678-aaaa-bbbb-cccc-1234567890ab-0042", 60))
	e.subscribed()
	if e.fwID != "12345678-aaaa-bbbb-cccc-1234567890ab-0042" {
		t.Fatalf("framework id %s", e.fwID)
	}
	// The connection that carried an ended stream is reused by the client.
	if code, text := e.call(fmt.Sprintf(`{"framework_id":{"value":%q},"type":"REVIVE"}`, e.fwID)); code != 202 {
		t.Fatalf("%d %q", code, text)
	}
}

// Teardown by the operator (TEARDOWN on /api/v1), behind the framework's back.
func TestOperatorTeardown(t *testing.T) {
	m := startMaster(t, Config{})
	a := subscribe(t, m, paBody)
	a.subscribed()
	if code, _, text := operator(t, m, fmt.Sprintf(`{"type":"TEARDOWN","teardown":{"framework_id":{"value":%q}}}`, a.fwID)); code != 200 {
		t.Fatalf("%d %q", code, text)
	}
	a.ended()
	b := subscribe(t, m, resubscribeBody(a.fwID, 60))
	if seen := b.ended(); len(seen) != 1 || seen[0].str("error.message") != "Framework has been removed" {
		t.Fatalf("%v", seen)
	}
}

// 09-agent-loss.txt part 1 and 2, 16-agent-sigkill-partition-aware.txt.
func TestKillAgent(t *testing.T) {
	m := startMaster(t, Config{AgentPingTimeout: 300 * time.Millisecond})
	pa := subscribe(t, m, paBody)
	pa.subscribed()
	aid := pa.runTaskRefuse("pa-task-1", "sleep 300", 3600)
	npa := subscribe(t, m, subscribeBody("npa", "MULTI_ROLE"))
	npa.subscribed()
	npa.runTaskRefuse("npa-task-1", "sleep 300", 3600)
	nock := subscribe(t, m, `{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"nock","capabilities":[{"type":"PARTITION_AWARE"}],"checkpoint":false}}}`)
	nock.subscribed()
	nock.runTask("nock-task-1", "sleep 300")
	pid := taskPID(t, m, "pa-task-1")
	// nock holds the agent's remaining resources now.
	nockOffer := nock.offer()
	heldOffer, _ := firstOffer(nockOffer)

	if err := m.KillAgent(aid); err != nil {
		t.Fatal(err)
	}
	// At once: the non-checkpointing framework's task is lost, the offer rescinded.
	var lost, rescinded bool
	for !lost || !rescinded {
		e := nock.next()
		switch e.str("type") {
		case "RESCIND":
			if e.str("rescind.offer_id.value") != heldOffer {
				t.Fatalf("%v", e)
			}
			rescinded = true
		case "UPDATE":
			if e.str("update.status.state") != "TASK_LOST" || e.str("update.status.reason") != "REASON_AGENT_DISCONNECTED" ||
				e.str("update.status.message") != "Agent 127.0.0.1 disconnected" {
				t.Fatalf("%v", e)
			}
			lost = true
		}
	}
	for _, c := range []struct {
		s     *sub
		task  string
		state string
	}{{pa, "pa-task-1", "TASK_UNREACHABLE"}, {npa, "npa-task-1", "TASK_LOST"}} {
		u := c.s.nextUpdate()
		if u.str("update.status.task_id.value") != c.task || u.str("update.status.state") != c.state ||
			u.str("update.status.reason") != "REASON_AGENT_REMOVED" || u.str("update.status.message") != "health check timed out" ||
			u.get("update.status.unreachable_time.nanoseconds") == nil || u.get("update.status.uuid") != nil {
			t.Fatalf("%v", u)
		}
		if f := c.s.nextUpdate(); f.str("type") != "FAILURE" || f.str("failure.agent_id.value") != aid {
			t.Fatalf("%v", f)
		}
	}
	if f := nock.nextUpdate(); f.str("type") != "FAILURE" {
		t.Fatalf("%v", f)
	}
	if alive(pid) {
		t.Fatalf("task process %d survived its agent", pid)
	}
	if _, _, body := operator(t, m, `{"type":"GET_AGENTS"}`); body != `{"type":"GET_AGENTS","get_agents":{}}` {
		t.Fatalf("GET_AGENTS lists the unreachable agent: %s", body)
	}
	pa.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"pa-task-1"},"agent_id":{"value":%q}}]}}`, pa.fwID, aid)
	if u := pa.nextUpdate(); u.str("update.status.state") != "TASK_UNREACHABLE" || u.str("update.status.message") != "Reconciliation: Task is unreachable" {
		t.Fatalf("%v", u)
	}
	npa.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"npa-task-1"},"agent_id":{"value":%q}}]}}`, npa.fwID, aid)
	if u := npa.nextUpdate(); u.str("update.status.state") != "TASK_LOST" || u.str("update.status.message") != "Reconciliation: Task is unreachable" {
		t.Fatalf("%v", u)
	}
	// Implicit reconciliation leaves out tasks on unreachable agents.
	pa.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[]}}`, pa.fwID)
	if e := pa.noEventOf("UPDATE", quietFor); e != nil {
		t.Fatalf("%v", e)
	}

	// Part 2: the agent restarts with its work dir.
	if err := m.RestoreAgent(aid); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    *sub
		task string
	}{{pa, "pa-task-1"}, {npa, "npa-task-1"}} {
		u := c.s.nextUpdate()
		if u.str("update.status.state") != "TASK_FAILED" || u.str("update.status.reason") != "REASON_AGENT_REREGISTERED" ||
			u.str("update.status.message") != "Unreachable agent re-reregistered" || u.get("update.status.uuid") != nil {
			t.Fatalf("%v", u)
		}
		u = c.s.expectState(c.task, "TASK_FAILED")
		if u.str("update.status.reason") != "REASON_EXECUTOR_TERMINATED" || u.str("update.status.message") != "Executor terminated" ||
			u.str("update.status.source") != "SOURCE_AGENT" || u.str("update.status.uuid") == "" {
			t.Fatalf("%v", u)
		}
	}
	// The agent offers again.
	pa.offer()
	pa.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"pa-task-1"},"agent_id":{"value":%q}}]}}`, pa.fwID, aid)
	if u := pa.nextUpdate(); u.str("update.status.state") != "TASK_GONE" {
		t.Fatalf("%v", u)
	}
}

// A partitioned agent's tasks run on; when it comes back they are RUNNING again.
func TestPartitionAgent(t *testing.T) {
	m := startMaster(t, Config{AgentPingTimeout: 300 * time.Millisecond})
	pa := subscribe(t, m, paBody)
	pa.subscribed()
	aid := pa.runTask("pa-task-1", "sleep 300")
	pid := taskPID(t, m, "pa-task-1")
	if err := m.PartitionAgent(aid); err != nil {
		t.Fatal(err)
	}
	if u := pa.nextUpdate(); u.str("update.status.state") != "TASK_UNREACHABLE" || u.str("update.status.reason") != "REASON_AGENT_REMOVED" {
		t.Fatalf("%v", u)
	}
	if f := pa.nextUpdate(); f.str("type") != "FAILURE" {
		t.Fatalf("%v", f)
	}
	if !alive(pid) {
		t.Fatal("task process died in a partition")
	}
	if err := m.RestoreAgent(aid); err != nil {
		t.Fatal(err)
	}
	u := pa.nextUpdate()
	if u.str("update.status.state") != "TASK_RUNNING" || u.str("update.status.reason") != "REASON_AGENT_REREGISTERED" ||
		u.str("update.status.message") != "Unreachable agent re-reregistered" {
		t.Fatalf("%v", u)
	}
	// The framework can kill the task that came back.
	pa.mustCall(`{"framework_id":{"value":%q},"type":"KILL","kill":{"task_id":{"value":"pa-task-1"},"agent_id":{"value":%q}}}`, pa.fwID, aid)
	pa.expectState("pa-task-1", "TASK_KILLED")
}

// RestartAgent: checkpointed tasks survive a quick agent restart.
func TestRestartAgent(t *testing.T) {
	m := startMaster(t, Config{})
	pa := subscribe(t, m, paBody)
	pa.subscribed()
	aid := pa.runTask("pa-task-1", "sleep 300")
	o, _ := firstOffer(pa.offer())
	if err := m.RestartAgent(aid); err != nil {
		t.Fatal(err)
	}
	if e := pa.nextType("RESCIND"); e.str("rescind.offer_id.value") != o {
		t.Fatalf("%v", e)
	}
	pa.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[]}}`, pa.fwID)
	if u := pa.nextUpdate(); u.str("update.status.state") != "TASK_RUNNING" {
		t.Fatalf("%v", u)
	}
}

func taskPID(t *testing.T, m *Master, taskID string) int {
	t.Helper()
	for _, ti := range m.Tasks() {
		if ti.ID == taskID {
			return ti.PID
		}
	}
	t.Fatalf("no task %s", taskID)
	return 0
}

// 16: the agent process dies, checkpointed tasks run on and come back RUNNING.
func TestCrashAgent(t *testing.T) {
	m := startMaster(t, Config{AgentPingTimeout: 300 * time.Millisecond})
	ck := subscribe(t, m, paBody)
	ck.subscribed()
	aid := ck.runTaskRefuse("ck-task", "sleep 300", 3600)
	nock := subscribe(t, m, `{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"nock","capabilities":[{"type":"PARTITION_AWARE"}],"checkpoint":false}}}`)
	nock.subscribed()
	nock.runTaskRefuse("nock-task", "sleep 300", 3600)
	ckPID, nockPID := taskPID(t, m, "ck-task"), taskPID(t, m, "nock-task")
	if err := m.CrashAgent(aid); err != nil {
		t.Fatal(err)
	}
	if u := nock.nextUpdate(); u.str("update.status.state") != "TASK_LOST" || u.str("update.status.reason") != "REASON_AGENT_DISCONNECTED" {
		t.Fatalf("%v", u)
	}
	if u := ck.nextUpdate(); u.str("update.status.state") != "TASK_UNREACHABLE" {
		t.Fatalf("%v", u)
	}
	if f := nock.nextUpdate(); f.str("type") != "FAILURE" {
		t.Fatalf("%v", f)
	}
	for deadline := time.Now().Add(waitLimit); alive(nockPID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the task of the framework without checkpointing survived")
		}
	}
	if !alive(ckPID) {
		t.Fatal("the checkpointed task died")
	}
	if err := m.RestoreAgent(aid); err != nil {
		t.Fatal(err)
	}
	if f := ck.nextUpdate(); f.str("type") != "FAILURE" {
		t.Fatalf("%v", f)
	}
	if u := ck.nextUpdate(); u.str("update.status.state") != "TASK_RUNNING" || u.str("update.status.reason") != "REASON_AGENT_REREGISTERED" {
		t.Fatalf("%v", u)
	}
}

// CloseStream ends a subscription as the master would; the framework is
// disconnected, keeps its tasks and subscribes again with its ID.
func TestCloseStream(t *testing.T) {
	m := startMaster(t, Config{})
	a := subscribe(t, m, paBody)
	a.subscribed()
	a.runTask("long-1", "sleep 60")
	if err := m.CloseStream(a.fwID); err != nil {
		t.Fatal(err)
	}
	for _, e := range a.ended() {
		if e.str("type") == "ERROR" || e.str("type") == "UPDATE" {
			t.Fatalf("%v", e)
		}
	}
	for deadline := time.Now().Add(waitLimit); m.Frameworks()[0].Connected; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("framework still connected")
		}
	}
	b := subscribe(t, m, resubscribeBody(a.fwID, 60))
	b.subscribed()
	b.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[]}}`, b.fwID)
	if u := b.nextUpdate(); u.str("update.status.state") != "TASK_RUNNING" {
		t.Fatalf("%v", u)
	}
}
