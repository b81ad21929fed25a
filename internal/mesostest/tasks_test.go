package mesostest

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// 02-launch-and-acknowledge.txt
func TestLaunchAndAcknowledge(t *testing.T) {
	m := startMaster(t, Config{})
	s := subscribe(t, m, paBody)
	s.subscribed()
	oid, aid := firstOffer(s.offer())
	s.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":%q}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"hello","task_id":{"value":"hello-1"},"agent_id":{"value":%q},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1},"allocation_info":{"role":"sluice-job1"}},{"name":"mem","type":"SCALAR","scalar":{"value":32},"allocation_info":{"role":"sluice-job1"}}],"command":{"shell":true,"value":"echo hello; sleep 0.2"}}]}}],"filters":{"refuse_seconds":60}}}`,
		s.fwID, oid, aid)
	u := s.expectState("hello-1", "TASK_STARTING")
	st := evt(u.get("update.status").(map[string]any))
	if st.str("source") != "SOURCE_EXECUTOR" || st.str("executor_id.value") != "hello-1" || st.str("agent_id.value") != aid ||
		len(st.str("uuid")) != 24 || st.get("reason") != nil || st.get("container_status.network_infos") == nil ||
		st.get("container_status.executor_pid") == nil || st.str("container_status.container_id.value") == "" {
		t.Fatalf("STARTING %v", st)
	}
	s.expectState("hello-1", "TASK_RUNNING")
	fin := s.expectState("hello-1", "TASK_FINISHED")
	if fin.str("update.status.message") != "Command exited with status 0" {
		t.Fatalf("%v", fin)
	}
	out, _ := os.ReadFile(filepath.Join(m.WorkDir(), "slaves", aid, "frameworks", s.fwID, "executors", "hello-1", "runs", "latest", "stdout"))
	if string(out) != "hello\n" {
		t.Fatalf("stdout %q", out)
	}

	// B2: a role the offer is not allocated to; B3: more cpus than offered.
	oid, aid = firstOffer(s.offer())
	s.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":%q}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"w","task_id":{"value":"wrong-role-1"},"agent_id":{"value":%q},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1},"allocation_info":{"role":"some-other-role"}},{"name":"mem","type":"SCALAR","scalar":{"value":32},"allocation_info":{"role":"some-other-role"}}],"command":{"shell":true,"value":"echo hello"}}]}}],"filters":{"refuse_seconds":1}}}`,
		s.fwID, oid, aid)
	u = s.nextUpdate()
	want := "Total resources cpus(allocated: some-other-role):0.1; mem(allocated: some-other-role):32 required by task and its executor is more than available ports(allocated: sluice-job1):[31000-32000]; cpus(allocated: sluice-job1):2; mem(allocated: sluice-job1):2048; disk(allocated: sluice-job1):4096"
	if u.str("update.status.state") != "TASK_ERROR" || u.str("update.status.reason") != "REASON_TASK_INVALID" ||
		u.str("update.status.source") != "SOURCE_MASTER" || u.str("update.status.message") != want || u.get("update.status.uuid") != nil {
		t.Fatalf("%v\nwant message %s", u, want)
	}
	oid, aid = firstOffer(s.offer())
	s.launch(oid, aid, "too-big-1", "echo hello", `{"name":"cpus","type":"SCALAR","scalar":{"value":100}},{"name":"mem","type":"SCALAR","scalar":{"value":32}}`)
	u = s.nextUpdate()
	if u.str("update.status.state") != "TASK_ERROR" || !strings.HasPrefix(u.str("update.status.message"),
		"Total resources cpus(allocated: sluice-job1):100; mem(allocated: sluice-job1):32 required by task and its executor is more than available") {
		t.Fatalf("%v", u)
	}
}

// 02 part C: an un-acked update is re-sent with the same uuid and the later
// ones wait behind it.
func TestUnackedUpdateIsResent(t *testing.T) {
	m := startMaster(t, Config{StatusUpdateRetry: 200 * time.Millisecond})
	s := subscribe(t, m, paBody)
	s.subscribed()
	oid, aid := firstOffer(s.offer())
	s.launch(oid, aid, "hello-noack-1", "echo hello", "")
	first := s.nextUpdate()
	if first.str("update.status.state") != "TASK_STARTING" {
		t.Fatalf("%v", first)
	}
	again := s.nextUpdate()
	if again.str("update.status.state") != "TASK_STARTING" || again.str("update.status.uuid") != first.str("update.status.uuid") {
		t.Fatalf("re-sent %v", again)
	}
	s.ack(again)
	s.expectState("hello-noack-1", "TASK_RUNNING")
	s.expectState("hello-noack-1", "TASK_FINISHED")
}

// 05-kill-and-reconcile.txt
func TestKillAndReconcile(t *testing.T) {
	m := startMaster(t, Config{KillGracePeriod: 5 * time.Second})
	s := subscribe(t, m, subscribeBody("sluice-probe", "MULTI_ROLE", "PARTITION_AWARE", "TASK_KILLING_STATE"))
	s.subscribed()
	aid := s.runTask("sleep-kill-1", "sleep 60")
	s.runTask("sleep-keep-1", "sleep 60")
	s.mustCall(`{"framework_id":{"value":%q},"type":"KILL","kill":{"task_id":{"value":"sleep-kill-1"},"agent_id":{"value":%q}}}`, s.fwID, aid)
	s.expectState("sleep-kill-1", "TASK_KILLING")
	k := s.expectState("sleep-kill-1", "TASK_KILLED")
	if k.str("update.status.message") != "Command terminated with signal Terminated" || k.str("update.status.source") != "SOURCE_EXECUTOR" {
		t.Fatalf("%v", k)
	}
	// Implicit: only the running task.
	s.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[]}}`, s.fwID)
	r := s.nextUpdate()
	if r.str("update.status.task_id.value") != "sleep-keep-1" || r.str("update.status.state") != "TASK_RUNNING" ||
		r.str("update.status.message") != "Reconciliation: Latest task state" || r.str("update.status.reason") != "REASON_RECONCILIATION" ||
		r.get("update.status.uuid") != nil || r.get("update.status.container_status") == nil {
		t.Fatalf("%v", r)
	}
	s.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"sleep-keep-1"},"agent_id":{"value":%q}},{"task_id":{"value":"never-launched-1"},"agent_id":{"value":%q}},{"task_id":{"value":"never-launched-2"}},{"task_id":{"value":"sleep-kill-1"},"agent_id":{"value":%q}}]}}`,
		s.fwID, aid, aid, aid)
	for _, w := range []struct{ task, state, msg string }{
		{"sleep-keep-1", "TASK_RUNNING", "Reconciliation: Latest task state"},
		{"never-launched-1", "TASK_GONE", "Reconciliation: Task is unknown to the agent"},
		{"never-launched-2", "TASK_UNKNOWN", "Reconciliation: Task is unknown"},
		{"sleep-kill-1", "TASK_GONE", "Reconciliation: Task is unknown to the agent"},
	} {
		u := s.nextUpdate()
		if u.str("update.status.task_id.value") != w.task || u.str("update.status.state") != w.state || u.str("update.status.message") != w.msg {
			t.Fatalf("want %v, got %v", w, u)
		}
		if w.task == "never-launched-2" && u.get("update.status.agent_id") != nil {
			t.Fatalf("agent_id on %v", u)
		}
	}
	s.mustCall(`{"framework_id":{"value":%q},"type":"KILL","kill":{"task_id":{"value":"never-launched-3"},"agent_id":{"value":%q}}}`, s.fwID, aid)
	if u := s.nextUpdate(); u.str("update.status.state") != "TASK_GONE" || u.str("update.status.task_id.value") != "never-launched-3" {
		t.Fatalf("%v", u)
	}

	// Part B: without TASK_KILLING_STATE and PARTITION_AWARE. A's connection
	// drops first, which frees the offers it holds.
	s.close()
	b := subscribe(t, m, subscribeBody("sluice-probe-2", "MULTI_ROLE"))
	b.subscribed()
	b.runTask("sleep-kill-2", "sleep 60")
	b.mustCall(`{"framework_id":{"value":%q},"type":"KILL","kill":{"task_id":{"value":"sleep-kill-2"},"agent_id":{"value":%q}}}`, b.fwID, aid)
	b.expectState("sleep-kill-2", "TASK_KILLED")
	b.mustCall(`{"framework_id":{"value":%q},"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"never-launched-1"},"agent_id":{"value":%q}},{"task_id":{"value":"never-launched-2"}}]}}`, b.fwID, aid)
	for _, msg := range []string{"Reconciliation: Task is unknown to the agent", "Reconciliation: Task is unknown"} {
		if u := b.nextUpdate(); u.str("update.status.state") != "TASK_LOST" || u.str("update.status.message") != msg {
			t.Fatalf("%v", u)
		}
	}
}

// A failing command and the exit status in the message.
func TestFailedTask(t *testing.T) {
	m := startMaster(t, Config{})
	s := subscribe(t, m, paBody)
	s.subscribed()
	oid, aid := firstOffer(s.offer())
	s.launch(oid, aid, "fail-1", "exit 3", "")
	s.expectState("fail-1", "TASK_STARTING")
	s.expectState("fail-1", "TASK_RUNNING")
	if u := s.expectState("fail-1", "TASK_FAILED"); u.str("update.status.message") != "Command exited with status 3" {
		t.Fatalf("%v", u)
	}
}

// 12-task-environment-and-fetcher.txt
func TestTaskEnvironmentAndFetcher(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello.sh"), []byte("#!/bin/sh\necho hello.sh running in $(pwd)\n"), 0o644)
	makeTarGz(t, filepath.Join(dir, "bundle.tar.gz"), map[string]string{"bundle/data.txt": "some data", "bundle/sub/x.txt": "x"})
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()

	m := startMaster(t, Config{ExecutorEnvironment: map[string]string{"EXTRA": "1"}})
	s := subscribe(t, m, `{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"exp-a-fetch","hostname":"127.0.0.1","checkpoint":true}}}`)
	s.subscribed()
	offer := s.offer()
	if strings.Contains(fmt.Sprint(offer), "allocation_info") {
		t.Fatalf("allocation_info offered to a framework without MULTI_ROLE: %v", offer)
	}
	oid, aid := firstOffer(offer)
	s.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":%q}],"filters":{"refuse_seconds":1},"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"task-a1","task_id":{"value":"task-a1"},"agent_id":{"value":%q},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.5}},{"name":"mem","type":"SCALAR","scalar":{"value":128}},{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":31001}]}}],"command":{"shell":true,"value":"env | sort > env.txt; ./hello.sh; cat bundle/data.txt","uris":[{"value":"file://%s/hello.sh","executable":true},{"value":"%s/bundle.tar.gz","extract":true},{"value":"file://%s/hello.sh","executable":true,"output_file":"tools/renamed.sh"}],"environment":{"variables":[{"name":"MY_VAR","type":"VALUE","value":"hello"}]}}}]}}]}}`,
		s.fwID, oid, aid, dir, srv.URL, dir)
	s.expectState("task-a1", "TASK_STARTING")
	s.expectState("task-a1", "TASK_RUNNING")
	s.expectState("task-a1", "TASK_FINISHED")
	sandbox, _ := filepath.EvalSymlinks(filepath.Join(m.WorkDir(), "slaves", aid, "frameworks", s.fwID, "executors", "task-a1", "runs", "latest"))
	env, _ := os.ReadFile(filepath.Join(sandbox, "env.txt"))
	for _, want := range []string{
		"MESOS_SANDBOX=" + sandbox, "MESOS_DIRECTORY=" + sandbox, "MESOS_FRAMEWORK_ID=" + s.fwID, "MESOS_EXECUTOR_ID=task-a1",
		"MESOS_SLAVE_ID=" + aid, "MESOS_CHECKPOINT=1", "MESOS_ALLOCATION_ROLE=*", "MY_VAR=hello", "EXTRA=1",
		"MESOS_RECOVERY_TIMEOUT=15mins", "LIBPROCESS_IP=127.0.0.1",
	} {
		if !strings.Contains(string(env), want+"\n") {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
	for _, absent := range []string{"PORT0=", "PORTS=", "MESOS_TASK_ID=", "HOST="} {
		if strings.Contains(string(env), "\n"+absent) {
			t.Errorf("env has %s", absent)
		}
	}
	if fi, err := os.Stat(filepath.Join(sandbox, "hello.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("hello.sh: %v %v", fi, err)
	}
	// output_file names the fetched file, in a directory of the sandbox.
	if fi, err := os.Stat(filepath.Join(sandbox, "tools", "renamed.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("tools/renamed.sh: %v %v", fi, err)
	}
	for _, f := range []string{"bundle.tar.gz", "bundle/data.txt", "bundle/sub/x.txt"} {
		if _, err := os.Stat(filepath.Join(sandbox, f)); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := os.ReadFile(filepath.Join(sandbox, "stdout"))
	if !strings.Contains(string(out), "hello.sh running in "+sandbox) || !strings.Contains(string(out), "some data") {
		t.Fatalf("stdout %q", out)
	}

	// A missing URI: no STARTING, one TASK_FAILED from the agent.
	oid, aid = firstOffer(s.offer())
	s.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":%q}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"task-a2","task_id":{"value":"task-a2"},"agent_id":{"value":%q},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.5}}],"command":{"shell":true,"value":"echo should-not-run","uris":[{"value":"file://%s/hello.sh","executable":true},{"value":"file://%s/does-not-exist.sh","executable":true}]}}]}}]}}`,
		s.fwID, oid, aid, dir, dir)
	u := s.expectState("task-a2", "TASK_FAILED")
	if u.str("update.status.reason") != "REASON_CONTAINER_LAUNCH_FAILED" || u.str("update.status.source") != "SOURCE_AGENT" ||
		!strings.HasPrefix(u.str("update.status.message"), "Failed to launch container: Failed to fetch all URIs for container '") ||
		!strings.HasSuffix(u.str("update.status.message"), "': exited with status 1") {
		t.Fatalf("%v", u)
	}
}

func makeTarGz(t *testing.T, path string, files map[string]string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	f.Close()
}

// Close kills every task process group.
func TestCloseKillsTasks(t *testing.T) {
	m := startMaster(t, Config{})
	s := subscribe(t, m, paBody)
	s.subscribed()
	oid, aid := firstOffer(s.offer())
	s.launch(oid, aid, "long", "sleep 600 & echo $! > child.pid; wait", "")
	u := s.expectState("long", "TASK_STARTING")
	pid := int(u.get("update.status.container_status.executor_pid").(float64))
	s.expectState("long", "TASK_RUNNING")
	pidFile := filepath.Join(m.WorkDir(), "slaves", aid, "frameworks", s.fwID, "executors", "long", "runs", "latest", "child.pid")
	var child int
	for deadline := time.Now().Add(waitLimit); child == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(pidFile)
		fmt.Sscan(string(b), &child)
	}
	if !alive(pid) || !alive(child) {
		t.Fatalf("task processes %d %d not running", pid, child)
	}
	m.Close()
	for _, p := range []int{pid, child} {
		for deadline := time.Now().Add(waitLimit); alive(p); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d outlived the master", p)
			}
		}
	}
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
