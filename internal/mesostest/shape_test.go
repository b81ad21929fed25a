package mesostest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Records from the transcripts; only their keys and key order are compared.
var transcriptRecords = map[string]string{
	"UPDATE TASK_STARTING":                          `{"type":"UPDATE","update":{"status":{"task_id":{"value":"hello-1"},"state":"TASK_STARTING","source":"SOURCE_EXECUTOR","agent_id":{"value":"9bc9497a-15a4-4f09-83f5-69765dd5833b-S0"},"executor_id":{"value":"hello-1"},"timestamp":1795463636.073888,"uuid":"3NLWHND8Tk+P75yyY7R4Dg==","container_status":{"container_id":{"value":"cc6147d8-331b-4900-aeff-42328fbfe1ea"},"network_infos":[{"ip_addresses":[{"protocol":"IPv4","ip_address":"127.0.0.1"}]}],"executor_pid":14425}}}}`,
	"UPDATE TASK_FINISHED":                          `{"type":"UPDATE","update":{"status":{"task_id":{"value":"hello-1"},"state":"TASK_FINISHED","message":"Command exited with status 0","source":"SOURCE_EXECUTOR","agent_id":{"value":"9bc9497a-15a4-4f09-83f5-69765dd5833b-S0"},"executor_id":{"value":"hello-1"},"timestamp":1795463638.271588,"uuid":"VnFp9Kw4SGWeZzm94eWj7A==","container_status":{"container_id":{"value":"cc6147d8-331b-4900-aeff-42328fbfe1ea"},"network_infos":[{"ip_addresses":[{"protocol":"IPv4","ip_address":"127.0.0.1"}]}],"executor_pid":14425}}}}`,
	"UPDATE TASK_ERROR REASON_TASK_INVALID":         `{"type":"UPDATE","update":{"status":{"task_id":{"value":"too-big-1"},"state":"TASK_ERROR","message":"Total resources","source":"SOURCE_MASTER","reason":"REASON_TASK_INVALID","agent_id":{"value":"9bc9497a-15a4-4f09-83f5-69765dd5833b-S0"},"timestamp":1795463639.853514}}}`,
	"UPDATE TASK_DROPPED REASON_INVALID_OFFERS":     `{"type":"UPDATE","update":{"status":{"task_id":{"value":"bad-offer-task-1"},"state":"TASK_DROPPED","message":"Task launched with invalid offers: Offer no-such-offer-O99 is no longer valid","source":"SOURCE_MASTER","reason":"REASON_INVALID_OFFERS","agent_id":{"value":"61578d8b-73e6-41e1-ab2f-33bf5ff0e5df-S0"},"timestamp":1795463627.166031}}}`,
	"UPDATE TASK_RUNNING REASON_RECONCILIATION":     `{"type":"UPDATE","update":{"status":{"task_id":{"value":"sleep-keep-1"},"state":"TASK_RUNNING","message":"Reconciliation: Latest task state","source":"SOURCE_MASTER","reason":"REASON_RECONCILIATION","agent_id":{"value":"98c90424-3287-4197-a7c9-31808c3c42e5-S0"},"timestamp":1795462785.333728,"container_status":{"container_id":{"value":"d6172294-374d-43eb-949f-7d417f8cf55a"},"network_infos":[{"ip_addresses":[{"protocol":"IPv4","ip_address":"127.0.0.1"}]}],"executor_pid":8724}}}}`,
	"UPDATE TASK_UNKNOWN REASON_RECONCILIATION":     `{"type":"UPDATE","update":{"status":{"task_id":{"value":"never-launched-2"},"state":"TASK_UNKNOWN","message":"Reconciliation: Task is unknown","source":"SOURCE_MASTER","reason":"REASON_RECONCILIATION","timestamp":1795462787.343172}}}`,
	"UPDATE TASK_UNREACHABLE REASON_AGENT_REMOVED":  `{"type":"UPDATE","update":{"status":{"task_id":{"value":"pa-task-1"},"state":"TASK_UNREACHABLE","message":"health check timed out","source":"SOURCE_MASTER","reason":"REASON_AGENT_REMOVED","agent_id":{"value":"d8359848-4971-4b74-97a5-9b11f65c3da5-S0"},"timestamp":1795463515.342893,"unreachable_time":{"nanoseconds":1795463515329085952}}}}`,
	"UPDATE TASK_UNREACHABLE REASON_RECONCILIATION": `{"type":"UPDATE","update":{"status":{"task_id":{"value":"pa-task-1"},"state":"TASK_UNREACHABLE","message":"Reconciliation: Task is unreachable","source":"SOURCE_MASTER","reason":"REASON_RECONCILIATION","agent_id":{"value":"d8359848-4971-4b74-97a5-9b11f65c3da5-S0"},"timestamp":1795463517.374575,"unreachable_time":{"nanoseconds":1795463515329085952}}}}`,
	"UPDATE TASK_FAILED REASON_AGENT_REREGISTERED":  `{"type":"UPDATE","update":{"status":{"task_id":{"value":"pa-task-2"},"state":"TASK_FAILED","message":"Unreachable agent re-reregistered","source":"SOURCE_MASTER","reason":"REASON_AGENT_REREGISTERED","agent_id":{"value":"62c6ed01-c375-4133-923f-09602b73ceff-S0"},"timestamp":1795463409.718522,"container_status":{"container_id":{"value":"e5a1c8c6-70b2-4dfb-8653-38277fe12a3d"},"network_infos":[{"ip_addresses":[{"protocol":"IPv4","ip_address":"127.0.0.1"}]}],"executor_pid":12673}}}}`,
	"UPDATE TASK_FAILED REASON_EXECUTOR_TERMINATED": `{"type":"UPDATE","update":{"status":{"task_id":{"value":"pa-task-2"},"state":"TASK_FAILED","message":"Executor terminated","source":"SOURCE_AGENT","reason":"REASON_EXECUTOR_TERMINATED","agent_id":{"value":"62c6ed01-c375-4133-923f-09602b73ceff-S0"},"executor_id":{"value":"pa-task-2"},"timestamp":1795463406.866571,"uuid":"1Zkn0nc6QeS705YqEFMEdg=="}}}`,
	"FAILURE": `{"type":"FAILURE","failure":{"agent_id":{"value":"d8359848-4971-4b74-97a5-9b11f65c3da5-S0"}}}`,
	"RESCIND": `{"type":"RESCIND","rescind":{"offer_id":{"value":"d8359848-4971-4b74-97a5-9b11f65c3da5-O2"}}}`,
}

// The records mesostest writes have the transcripts' keys in their order.
func TestRecordShapes(t *testing.T) {
	m := startMaster(t, Config{AgentPingTimeout: 200 * time.Millisecond})
	s := subscribe(t, m, paBody)
	s.subscribed()
	oid, aid := firstOffer(s.offer())
	s.launchRefuse(oid, aid, "hello-1", "echo hello", "", 0)
	s.expectState("hello-1", "TASK_STARTING")
	s.expectState("hello-1", "TASK_RUNNING")
	s.expectState("hello-1", "TASK_FINISHED")
	oid, aid = firstOffer(s.offer())
	s.launchRefuse(oid, aid, "too-big-1", "true", `{"name":"cpus","type":"SCALAR","scalar":{"value":100}}`, 0)
	s.nextUpdate()
	s.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":"no-such-offer-O99"}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"bad-offer-task-1"},"agent_id":{"value":%q},"resources":[],"command":{"shell":true,"value":"echo hi"}}]}}]}}`, s.fwID, aid)
	s.nextUpdate()
	oid, aid = firstOffer(s.offer())
	s.launchRefuse(oid, aid, "pa-task-1", "sleep 60", "", 0)
	s.expectState("pa-task-1", "TASK_STARTING")
	s.expectState("pa-task-1", "TASK_RUNNING")
	s.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"pa-task-1"},"agent_id":{"value":%q}},{"task_id":{"value":"never-launched-2"}}]}}`, s.fwID, aid)
	s.nextUpdate()
	s.nextUpdate()
	s.offer() // held while the agent dies: RESCIND
	if err := m.KillAgent(aid); err != nil {
		t.Fatal(err)
	}
	s.nextType("RESCIND")
	s.nextUpdate() // UNREACHABLE
	s.nextUpdate() // FAILURE
	s.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"pa-task-1"},"agent_id":{"value":%q}}]}}`, s.fwID, aid)
	s.nextUpdate()
	if err := m.RestoreAgent(aid); err != nil {
		t.Fatal(err)
	}
	s.nextUpdate()
	s.expectState("pa-task-1", "TASK_FAILED")
	for key, want := range transcriptRecords {
		got, ok := s.raws[key]
		if !ok {
			t.Errorf("no %s record seen (have %v)", key, keys(s.raws))
			continue
		}
		if shape(got) != shape(want) {
			t.Errorf("%s:\n got %s\nwant %s", key, shape(got), shape(want))
		}
	}
}

func keys(m map[string]string) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return fmt.Sprint(strings.Join(out, "; "))
}
