package mesos

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

var uuidN byte

// newUUID: a 16-byte status uuid, as an agent sends.
func newUUID() []byte {
	uuidN++
	return bytes.Repeat([]byte{uuidN}, 16)
}

func bigOffer(id, host string) mesos.Offer {
	return mkOffer(offerSpec{id: id, host: host, cpus: 4, mem: 8192, disk: 1000, ports: [][2]uint64{{31000, 31010}}})
}

// sync sends an update carrying a uuid for a task nobody knows and waits
// for its acknowledgement: the events sent before it have been handled
// (one stream, handled in order).
func syncEvents(t *testing.T, f *fakeMaster, s *fakeStream) {
	t.Helper()
	u := newUUID()
	s.send(updateEvent("sync-task", "agent-sync", mesos.TASK_FINISHED, u))
	f.waitCall(t, scheduler.Call_ACKNOWLEDGE, func(c *scheduler.Call) bool { return bytes.Equal(c.Acknowledge.UUID, u) })
}

// launchedIDs waits for n launched tasks over the ACCEPT calls.
func launchedTasks(t *testing.T, f *fakeMaster, n int) []mesos.TaskInfo {
	t.Helper()
	var out []mesos.TaskInfo
	waitFor(t, "launches", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		out = nil
		for _, c := range f.calls {
			if c.Type == scheduler.Call_ACCEPT {
				out = append(out, launched(c)...)
			}
		}
		return len(out) >= n
	})
	return out
}

func TestRMSubscribesLaunchesAcksAndSuppresses(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) {
		c.Principal, c.Client.Principal, c.Client.Secret = "alice", "alice", "s3cret"
		c.FailoverTimeout = time.Hour
		c.Args = []string{"--log-level", "debug"}
	})
	var ll lostLog
	if err := r.Start(context.Background(), "10.0.0.1:7000", 2, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	sub := f.subscriptions()[0]
	fi := sub.Subscribe.FrameworkInfo
	if sub.FrameworkID != nil || fi.ID != nil {
		t.Fatal("a first SUBSCRIBE carries no framework id")
	}
	if !slices.Equal(fi.Roles, []string{"job"}) || !fi.GetCheckpoint() || fi.GetFailoverTimeout() != 3600 || fi.GetPrincipal() != "alice" {
		t.Fatalf("framework info %+v", fi)
	}
	var caps []string
	for _, c := range fi.Capabilities {
		caps = append(caps, c.Type.String())
	}
	for _, want := range []string{"MULTI_ROLE", "PARTITION_AWARE", "TASK_KILLING_STATE"} {
		if !slices.Contains(caps, want) {
			t.Errorf("capability %s missing: %v", want, caps)
		}
	}
	if len(sub.Subscribe.SuppressedRoles) != 0 {
		t.Error("subscribed suppressed while TaskManagers are needed")
	}
	f.waitCall(t, scheduler.Call_RECONCILE, nil) // after every subscription
	if got := r.FrameworkID(); got != "fw-1" {
		t.Fatalf("framework id %q", got)
	}

	s.send(offersEvent(bigOffer("o1", "h1"), bigOffer("o2", "h2")))
	tis := launchedTasks(t, f, 2)
	acc := f.waitCall(t, scheduler.Call_ACCEPT, nil)
	if acc.Accept.Filters == nil || acc.Accept.Filters.GetRefuseSeconds() != 30 {
		t.Errorf("ACCEPT filters %v, want refuse_seconds 30", acc.Accept.Filters)
	}
	for _, ti := range tis {
		id := ti.TaskID.Value
		cmd := ti.Command
		if cmd.GetValue() != "./sluice" || cmd.GetShell() || len(cmd.URIs) != 1 || cmd.URIs[0].Value != "http://files/sluice" ||
			!cmd.URIs[0].GetExecutable() || cmd.URIs[0].GetExtract() {
			t.Errorf("command %+v", cmd)
		}
		if !hasArg(ti, "taskmanager", "--master", "10.0.0.1:7000") || !hasArg(ti, "--resource-id", id) || !hasArg(ti, "--log-level", "debug") ||
			!hasArg(ti, "--local-dir", "local") {
			t.Errorf("arguments %q", cmd.Arguments)
		}
		var port uint64
		for _, res := range ti.Resources {
			if res.AllocationInfo == nil || res.AllocationInfo.GetRole() != "job" {
				t.Errorf("resource %s without the role's allocation_info", res.Name)
			}
			if res.Name == "ports" {
				port = res.Ranges.Range[0].Begin
			}
		}
		host := strings.TrimPrefix(ti.AgentID.Value, "agent-")
		if !hasArg(ti, "--advertise", host+":"+itoa(port)) || !hasArg(ti, "--data", "0.0.0.0:"+itoa(port)) {
			t.Errorf("ports not on the command line (port %d): %q", port, cmd.Arguments)
		}
	}
	// It has all it needs: offers are suppressed.
	f.waitCall(t, scheduler.Call_SUPPRESS, nil)

	// Acknowledgements: an update with a uuid is acked with it; a
	// master-generated one (no uuid) is not.
	u := newUUID()
	s.send(updateEvent(tis[0].TaskID.Value, tis[0].AgentID.Value, mesos.TASK_STARTING, nil))
	s.send(updateEvent(tis[0].TaskID.Value, tis[0].AgentID.Value, mesos.TASK_RUNNING, u))
	s.send(updateEvent(tis[1].TaskID.Value, tis[1].AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	ack := f.waitCall(t, scheduler.Call_ACKNOWLEDGE, nil)
	if !bytes.Equal(ack.Acknowledge.UUID, u) || ack.Acknowledge.TaskID.Value != tis[0].TaskID.Value || ack.Acknowledge.AgentID.Value != tis[0].AgentID.Value {
		t.Fatalf("acknowledge %+v", ack.Acknowledge)
	}
	syncEvents(t, f, s)
	if n := f.count(scheduler.Call_ACKNOWLEDGE); n != 3 {
		t.Fatalf("%d acknowledgements, want 3", n)
	}
	if st := r.Status(); !strings.HasPrefix(st, "2 of 2 TaskManagers running on Mesos") {
		t.Fatalf("status %q", st)
	}
	if len(r.Tasks()) != 2 || len(ll.get()) != 0 {
		t.Fatalf("tasks %v, lost %v", r.Tasks(), ll.get())
	}
	// Offers that come anyway are declined.
	s.send(offersEvent(bigOffer("o3", "h3")))
	dec := f.waitCall(t, scheduler.Call_DECLINE, func(c *scheduler.Call) bool { return c.Decline.OfferIDs[0].Value == "o3" })
	if len(dec.Decline.OfferIDs) != 1 || dec.Decline.Filters.GetRefuseSeconds() != 30 {
		t.Fatalf("decline %+v", dec.Decline)
	}
}

func itoa(p uint64) string { return strconv.FormatUint(p, 10) }

// An offer too small is declined with the refuse filter, and the status
// says what is waited for and why.
func TestRMDeclinesUnfitOffersAndSaysWhy(t *testing.T) {
	f := newFakeMaster(t)
	var seen lostLog // the statuses OnStatus got
	r := testRM(t, f.srv.URL, func(c *Config) {
		c.RefuseSeconds = 5 * time.Second
		c.OnStatus = func(s string) { seen.lost(s, nil) }
	})
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(mkOffer(offerSpec{id: "small", host: "h1", cpus: 0.5, mem: 8192, disk: 1000, ports: [][2]uint64{{31000, 31010}}})))
	dec := f.waitCall(t, scheduler.Call_DECLINE, nil)
	if dec.Decline.OfferIDs[0].Value != "small" || dec.Decline.Filters.GetRefuseSeconds() != 5 {
		t.Fatalf("decline %+v", dec.Decline)
	}
	if f.count(scheduler.Call_ACCEPT) != 0 {
		t.Fatal("accepted an offer too small")
	}
	st := r.Status()
	if !strings.HasPrefix(st, "waiting for offers: 0 of 1 TaskManagers launched (role job") || !strings.Contains(st, "cpus") {
		t.Fatalf("status %q", st)
	}
	waitFor(t, "OnStatus", func() bool { return slices.Contains(seen.get(), st) })
	if got := seen.get(); !strings.HasPrefix(got[0], "connecting to the Mesos master") && !strings.HasPrefix(got[0], "waiting for offers") {
		t.Fatalf("statuses %q", got)
	}
}

// The role's quota limit keeps offers away: the status says so.
func TestRMStatusNamesTheQuotaLimit(t *testing.T) {
	f := newFakeMaster(t)
	f.set(func() { f.quota = map[string]float64{"cpus": 1.5} })
	r := testRM(t, f.srv.URL, nil)
	if err := r.Start(context.Background(), "m:1", 3, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the quota in the status", func() bool {
		return strings.Contains(r.Status(), "role job quota limit (cpus:1.5) allows 1 of 3 TaskManagers")
	})
}

// A TaskManager that fails is reported lost and replaced; one the master
// dropped (Lost) is killed and replaced, and its TASK_KILLED is no loss.
func TestRMReplacesFailedAndDroppedTaskManagers(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, nil)
	var ll lostLog
	if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	f.waitCount(t, scheduler.Call_SUPPRESS, 1)

	failed := mesos.TASK_FAILED
	reason := mesos.REASON_COMMAND_EXECUTOR_FAILED
	msg := "Command exited with status 1"
	st := mesos.TaskStatus{TaskID: t1.TaskID, State: &failed, AgentID: &t1.AgentID, UUID: newUUID(), Reason: &reason, Message: &msg}
	s.send(&scheduler.Event{Type: scheduler.Event_UPDATE, Update: &scheduler.Event_Update{Status: st}})
	waitFor(t, "the failed task reported lost", func() bool { return slices.Equal(ll.get(), []string{t1.TaskID.Value}) })
	f.waitCount(t, scheduler.Call_REVIVE, 1)
	s.send(offersEvent(bigOffer("o2", "h2")))
	t2 := launchedTasks(t, f, 2)[1]
	if t2.TaskID.Value == t1.TaskID.Value {
		t.Fatal("the replacement has the lost task's id")
	}
	s.send(updateEvent(t2.TaskID.Value, t2.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	f.waitCount(t, scheduler.Call_SUPPRESS, 2)

	// The master drops t2 (its session ended): KILL, and a replacement.
	r.Lost(t2.TaskID.Value)
	kill := f.waitCount(t, scheduler.Call_KILL, 1)
	if kill.Kill.TaskID.Value != t2.TaskID.Value || kill.Kill.AgentID.Value != t2.AgentID.Value {
		t.Fatalf("kill %+v", kill.Kill)
	}
	f.waitCount(t, scheduler.Call_REVIVE, 2)
	s.send(updateEvent(t2.TaskID.Value, t2.AgentID.Value, mesos.TASK_KILLED, newUUID()))
	s.send(offersEvent(bigOffer("o3", "h3")))
	t3 := launchedTasks(t, f, 3)[2]
	syncEvents(t, f, s)
	if got := ll.get(); len(got) != 1 {
		t.Fatalf("lost reports %v: the asked-for kill counted as a loss", got)
	}
	if got := r.Tasks(); !slices.Equal(got, []string{t3.TaskID.Value}) {
		t.Fatalf("tasks %v, want [%s]", got, t3.TaskID.Value)
	}
}

// Every terminal state not asked for is a loss: LOST, GONE, DROPPED, KILLED.
func TestRMReplacesOnEveryUnaskedEnd(t *testing.T) {
	for _, state := range []mesos.TaskState{mesos.TASK_LOST, mesos.TASK_GONE, mesos.TASK_DROPPED, mesos.TASK_KILLED, mesos.TASK_ERROR} {
		t.Run(state.String(), func(t *testing.T) {
			f := newFakeMaster(t)
			r := testRM(t, f.srv.URL, nil)
			var ll lostLog
			if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
				t.Fatal(err)
			}
			s := f.stream(t)
			s.send(offersEvent(bigOffer("o1", "h1")))
			t1 := launchedTasks(t, f, 1)[0]
			s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
			s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, state, nil))
			waitFor(t, "the loss", func() bool { return len(ll.get()) == 1 })
			s.send(offersEvent(bigOffer("o2", "h2")))
			launchedTasks(t, f, 2)
		})
	}
}

// TASK_UNREACHABLE: the task is waited for; after UnreachableTimeout it is
// replaced, and killed when its agent comes back.
func TestRMUnreachableReplacedThenKilledWhenBack(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.UnreachableTimeout = 50 * time.Millisecond })
	var ll lostLog
	if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_UNREACHABLE, nil))
	waitFor(t, "the unreachable task reported lost", func() bool { return slices.Equal(ll.get(), []string{t1.TaskID.Value}) })
	s.send(offersEvent(bigOffer("o2", "h2")))
	t2 := launchedTasks(t, f, 2)[1]
	if t2.AgentID.Value == t1.AgentID.Value {
		t.Fatal("replaced on the unreachable agent")
	}
	// The agent comes back with the old task running: it is killed.
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	kill := f.waitCount(t, scheduler.Call_KILL, 1)
	if kill.Kill.TaskID.Value != t1.TaskID.Value {
		t.Fatalf("killed %s, want %s", kill.Kill.TaskID.Value, t1.TaskID.Value)
	}
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_KILLED, newUUID()))
	syncEvents(t, f, s)
	if len(ll.get()) != 1 || !slices.Equal(r.Tasks(), []string{t2.TaskID.Value}) {
		t.Fatalf("lost %v, tasks %v", ll.get(), r.Tasks())
	}
}

// An agent that returns within UnreachableTimeout keeps its task.
func TestRMUnreachableBackInTime(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.UnreachableTimeout = time.Hour })
	var ll lostLog
	if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_UNREACHABLE, nil))
	s.send(offersEvent(bigOffer("o2", "h2")))
	f.waitCall(t, scheduler.Call_DECLINE, nil) // no replacement while it is waited for
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	syncEvents(t, f, s)
	if f.count(scheduler.Call_KILL) != 0 || len(ll.get()) != 0 || f.count(scheduler.Call_ACCEPT) != 1 {
		t.Fatalf("kills %d, lost %v, accepts %d", f.count(scheduler.Call_KILL), ll.get(), f.count(scheduler.Call_ACCEPT))
	}
}

// The heartbeat watchdog: a stream silent for about twice the heartbeat
// interval is dropped, and the framework subscribes again with its id.
func TestRMWatchdogResubscribes(t *testing.T) {
	f := newFakeMaster(t)
	f.set(func() { f.heartbeat = 0.05 })
	r := testRM(t, f.srv.URL, nil)
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	f.stream(t) // SUBSCRIBED, then silence
	f.stream(t)
	subs := f.subscriptions()
	if len(subs) < 2 || subs[1].FrameworkID.GetValue() != "fw-1" || subs[1].Subscribe.FrameworkInfo.ID.GetValue() != "fw-1" {
		t.Fatalf("re-subscription without the framework id: %+v", subs[1])
	}
}

// Registration backoff: a master that ends every stream at once, or
// refuses SUBSCRIBE, is tried again with growing pauses, and a failing
// loop never registers a new framework per attempt.
func TestRMSubscribeBackoff(t *testing.T) {
	for _, mode := range []string{"stream ends", "refused"} {
		t.Run(mode, func(t *testing.T) {
			f := newFakeMaster(t)
			if mode == "refused" {
				f.set(func() { f.reject = 503 })
			} else {
				f.set(func() { f.endAfterSubscribed = true })
			}
			minB, maxB := 20*time.Millisecond, 80*time.Millisecond
			r := testRM(t, f.srv.URL, func(c *Config) { c.BackoffMin, c.BackoffMax = minB, maxB })
			if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "6 attempts", func() bool { return len(f.subscriptions()) >= 6 })
			if st := r.Status(); mode == "refused" && !strings.Contains(st, "503") {
				t.Errorf("status %q does not say why", st)
			}
			f.mu.Lock()
			times, registered := append([]time.Time(nil), f.subTimes...), f.seq
			f.mu.Unlock()
			r.Close()
			// Lower bounds only: a pause is at least half its backoff.
			b := minB
			for i := 1; i < len(times); i++ {
				if gap := times[i].Sub(times[i-1]); gap < b/2 {
					t.Errorf("attempt %d came %s after the one before, less than half the backoff %s", i, gap, b)
				}
				b = min(2*b, maxB)
			}
			if mode == "stream ends" {
				if registered != 1 {
					t.Fatalf("%d frameworks registered, want 1", registered)
				}
				for i, s := range f.subscriptions()[1:len(times)] {
					if s.FrameworkID.GetValue() != "fw-1" {
						t.Fatalf("attempt %d subscribed as %q", i+1, s.FrameworkID.GetValue())
					}
				}
			}
		})
	}
}

// A restarted master subscribes with the framework ID kept in the HA
// directory, is subscribed suppressed when it needs nothing, and adopts
// the running tasks reconciliation reports.
func TestRMRestartKeepsFrameworkIDAndAdoptsTasks(t *testing.T) {
	dir := t.TempDir()
	store, err := OpenHAStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeMaster(t)
	r1 := testRM(t, f.srv.URL, func(c *Config) { c.IDs = store })
	if err := r1.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	if id, err := store.Load(context.Background()); err != nil || id != "fw-1" {
		t.Fatalf("kept framework id %q, %v", id, err)
	}
	r1.Abandon() // the process dies: nothing is killed or torn down
	if f.count(scheduler.Call_KILL) != 0 || f.count(scheduler.Call_TEARDOWN) != 0 {
		t.Fatal("Abandon killed or tore down")
	}

	// The new master: its TaskManager re-registered, it needs none more.
	var ll lostLog
	r2 := testRM(t, f.srv.URL, func(c *Config) { c.IDs = store })
	if err := r2.Start(context.Background(), "m:2", 0, ll.lost); err != nil {
		t.Fatal(err)
	}
	s2 := f.stream(t)
	sub := f.subscriptions()[1]
	if sub.FrameworkID.GetValue() != "fw-1" || !slices.Equal(sub.Subscribe.SuppressedRoles, []string{"job"}) {
		t.Fatalf("re-subscription %+v", sub)
	}
	rec := f.waitCount(t, scheduler.Call_RECONCILE, 2)
	if len(rec.Reconcile.Tasks) != 0 {
		t.Fatalf("reconciliation after a restart should be implicit: %+v", rec.Reconcile)
	}
	// The master answers the implicit reconciliation.
	s2.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, nil))
	waitFor(t, "adoption", func() bool { return slices.Equal(r2.Tasks(), []string{t1.TaskID.Value}) })
	if !strings.HasPrefix(r2.Status(), "1 of 1 TaskManagers running") {
		t.Fatalf("status %q", r2.Status())
	}
	// The adopted task fails later: it is replaced.
	s2.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_FAILED, newUUID()))
	waitFor(t, "the loss", func() bool { return len(ll.get()) == 1 })
	f.waitCount(t, scheduler.Call_REVIVE, 1)
}

// "Framework has been removed" (torn down behind its back, or its failover
// timeout passed): the stale ID is cleared and a new framework registered
// and kept.
func TestRMRemovedFrameworkRegistersAnew(t *testing.T) {
	dir := t.TempDir()
	store, err := OpenHAStore("file://" + dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(context.Background(), "fw-old"); err != nil {
		t.Fatal(err)
	}
	f := newFakeMaster(t)
	f.set(func() { f.removed["fw-old"] = true })
	// A long backoff: registering anew after the removal waits for none.
	r := testRM(t, f.srv.URL, func(c *Config) { c.IDs = store; c.BackoffMin, c.BackoffMax = time.Hour, time.Hour })
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	subs := f.subscriptions()
	if subs[0].FrameworkID.GetValue() != "fw-old" || subs[1].FrameworkID != nil || subs[1].Subscribe.FrameworkInfo.ID != nil {
		t.Fatalf("subscriptions %v then %v", subs[0].FrameworkID, subs[1].FrameworkID)
	}
	waitFor(t, "the new id kept", func() bool { id, _ := store.Load(context.Background()); return id == "fw-1" })
	s.send(offersEvent(bigOffer("o1", "h1")))
	launchedTasks(t, f, 1)
}

// Removed while running: its tasks are gone with it, reported lost, and
// launched again under the new framework.
func TestRMRemovedWhileRunning(t *testing.T) {
	ids := &memIDs{}
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.IDs = ids })
	var ll lostLog
	if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	// Torn down behind its back: the stream ends; the re-subscription is
	// answered "Framework has been removed".
	f.set(func() { f.removed["fw-1"] = true })
	s.close()
	s2 := f.stream(t)
	if s2.fid != "fw-2" {
		t.Fatalf("new framework %q", s2.fid)
	}
	waitFor(t, "the new id kept", func() bool { return ids.get() == "fw-2" })
	if !slices.Equal(ll.get(), []string{t1.TaskID.Value}) {
		t.Fatalf("lost %v", ll.get())
	}
	s2.send(offersEvent(bigOffer("o2", "h2")))
	launchedTasks(t, f, 2)
}

// Close: the job is over; its tasks are killed, the framework torn down
// and its ID forgotten.
func TestRMCloseKillsAndTearsDown(t *testing.T) {
	ids := &memIDs{}
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.IDs = ids })
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	f.waitCount(t, scheduler.Call_SUPPRESS, 1)
	r.Close()
	kill := f.waitCount(t, scheduler.Call_KILL, 1)
	td := f.waitCount(t, scheduler.Call_TEARDOWN, 1)
	if kill.Kill.TaskID.Value != t1.TaskID.Value || td.FrameworkID.GetValue() != "fw-1" || ids.get() != "" {
		t.Fatalf("kill %v, teardown %v, kept id %q", kill.Kill.TaskID, td.FrameworkID, ids.get())
	}
	if err := r.Start(context.Background(), "m:1", 1, nil); err == nil {
		t.Fatal("Start after Close")
	}
}

// Abandon: a newer master owns the framework. Nothing is killed or torn
// down, the ID stays, and nothing is replaced after.
func TestRMAbandon(t *testing.T) {
	ids := &memIDs{}
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.IDs = ids })
	var ll lostLog
	if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	f.waitCount(t, scheduler.Call_SUPPRESS, 1)
	r.Abandon()
	r.Lost(t1.TaskID.Value)
	r.Close() // the master's Close after Abandon changes nothing
	if f.count(scheduler.Call_KILL) != 0 || f.count(scheduler.Call_TEARDOWN) != 0 || ids.get() != "fw-1" {
		t.Fatalf("kills %d, teardowns %d, kept id %q", f.count(scheduler.Call_KILL), f.count(scheduler.Call_TEARDOWN), ids.get())
	}
	if n := len(f.subscriptions()); n != 1 {
		t.Fatalf("%d subscriptions", n)
	}
}

// Another scheduler subscribed with the framework's ID (a newer master):
// Close must not kill the newer master's tasks or tear its framework down.
func TestRMFailedOverIsFenced(t *testing.T) {
	ids := &memIDs{}
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.IDs = ids; c.RetakeAfter = time.Hour })
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	launchedTasks(t, f, 1)
	s.send(&scheduler.Event{Type: scheduler.Event_ERROR, Error: &scheduler.Event_Error{Message: "Framework failed over"}})
	waitFor(t, "fenced", func() bool { return strings.HasPrefix(r.Status(), "taken over: ") })
	r.Close()
	if f.count(scheduler.Call_KILL) != 0 || f.count(scheduler.Call_TEARDOWN) != 0 || ids.get() != "fw-1" {
		t.Fatalf("kills %d, teardowns %d, kept id %q", f.count(scheduler.Call_KILL), f.count(scheduler.Call_TEARDOWN), ids.get())
	}
	if n := len(f.subscriptions()); n != 1 {
		t.Fatalf("%d subscriptions after the failover", n)
	}
}

// Taken over by a scheduler that was not the newer master (a superseded
// one that subscribed late): this master, not superseded, takes the
// framework back after RetakeAfter, with the same ID.
func TestRMFailedOverTakesBack(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.RetakeAfter = 20 * time.Millisecond })
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(&scheduler.Event{Type: scheduler.Event_ERROR, Error: &scheduler.Event_Error{Message: "Framework failed over"}})
	s2 := f.stream(t)
	if s2.fid != "fw-1" || f.subscriptions()[1].FrameworkID.GetValue() != "fw-1" {
		t.Fatalf("subscribed again as %q", s2.fid)
	}
	waitFor(t, "subscribed", func() bool { return strings.HasPrefix(r.Status(), "waiting for offers") })
}

// Taken over while this master is paused past its successor's takeover:
// when it resumes, its fencing check says it is superseded, so it does not
// take the framework back (nor kill or tear down anything): it abandons.
func TestRMFailedOverSupersededAbandons(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.RetakeAfter = 20 * time.Millisecond })
	var asked atomic.Int32
	r.SetSuperseded(func() bool { asked.Add(1); return true })
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(&scheduler.Event{Type: scheduler.Event_ERROR, Error: &scheduler.Event_Error{Message: "Framework failed over"}})
	waitFor(t, "the fencing check", func() bool { return asked.Load() > 0 })
	r.Close() // the master's Close after: changes nothing
	if n := len(f.subscriptions()); n != 1 {
		t.Fatalf("%d subscriptions: a superseded master took the framework back", n)
	}
	if f.count(scheduler.Call_KILL) != 0 || f.count(scheduler.Call_TEARDOWN) != 0 {
		t.Fatalf("kills %d, teardowns %d", f.count(scheduler.Call_KILL), f.count(scheduler.Call_TEARDOWN))
	}
}

// More TaskManagers asked for later (Start again): offers are revived.
func TestRMStartAgainRevives(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, nil)
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	launchedTasks(t, f, 1)
	f.waitCount(t, scheduler.Call_SUPPRESS, 1)
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	f.waitCount(t, scheduler.Call_REVIVE, 1)
	s.send(offersEvent(bigOffer("o2", "h2")))
	launchedTasks(t, f, 2)
}

// The master drops a TaskManager whose task already ended (it calls Lost
// for every session that ends, also after the lost callback): it is
// replaced once, not twice.
func TestRMLostAfterTheTaskEndedReplacesOnce(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, nil)
	var ll lostLog
	if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_FAILED, newUUID()))
	waitFor(t, "the loss", func() bool { return len(ll.get()) == 1 })
	r.Lost(t1.TaskID.Value) // its session ended
	syncEvents(t, f, s)
	s.send(offersEvent(bigOffer("o2", "h2"))) // room for 4
	tis := launchedTasks(t, f, 2)
	syncEvents(t, f, s)
	if len(tis) != 2 || len(launchedTasks(t, f, 2)) != 2 {
		t.Fatalf("%d tasks launched in all, want 2", len(launchedTasks(t, f, 2)))
	}
}

// A task reported LOST (and replaced) that turns up running after all (a
// non-partition-aware report, 16-agent-sigkill-partition-aware) is killed,
// not adopted.
func TestRMEndedTaskThatReturnsIsKilled(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, nil)
	var ll lostLog
	if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_LOST, nil))
	s.send(offersEvent(bigOffer("o2", "h2")))
	t2 := launchedTasks(t, f, 2)[1]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	kill := f.waitCount(t, scheduler.Call_KILL, 1)
	if kill.Kill.TaskID.Value != t1.TaskID.Value {
		t.Fatalf("killed %s", kill.Kill.TaskID.Value)
	}
	syncEvents(t, f, s)
	if got := r.Tasks(); !slices.Equal(got, []string{t2.TaskID.Value}) {
		t.Fatalf("tasks %v", got)
	}
}

// Close while the master is away (no subscription now): it subscribes
// once more to send TEARDOWN, which needs a current stream.
func TestRMCloseWhileDisconnectedTearsDown(t *testing.T) {
	ids := &memIDs{}
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.IDs = ids; c.BackoffMin, c.BackoffMax = time.Hour, time.Hour })
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	waitFor(t, "the id kept", func() bool { return ids.get() == "fw-1" })
	s.close()
	waitFor(t, "the subscription's end", func() bool { return strings.HasPrefix(r.Status(), "connecting") })
	r.Close()
	td := f.waitCount(t, scheduler.Call_TEARDOWN, 1)
	subs := f.subscriptions()
	if td.FrameworkID.GetValue() != "fw-1" || len(subs) != 2 || subs[1].FrameworkID.GetValue() != "fw-1" || ids.get() != "" {
		t.Fatalf("teardown %v, %d subscriptions, kept id %q", td.FrameworkID, len(subs), ids.get())
	}
}

// A master that takes SUBSCRIBE and never answers does not hold the loop:
// the attempt times out and the next one follows, with backoff.
func TestRMSubscribeAnswerTimeout(t *testing.T) {
	f := newFakeMaster(t)
	f.set(func() { f.hang = true })
	r := testRM(t, f.srv.URL, func(c *Config) { c.SubscribeTimeout = 50 * time.Millisecond })
	if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 attempts", func() bool { return len(f.subscriptions()) >= 3 })
	waitFor(t, "the status", func() bool { return strings.Contains(r.Status(), "no answer from the master") })
}

// A master that answers garbage: a clear error in the status, retries
// with backoff, and no framework registered.
func TestRMGarbageAnswers(t *testing.T) {
	for _, c := range []struct{ body, ctype, want string }{
		{"<html>hello</html>", "text/html", `Content-Type "text/html"`},
		{"not-recordio\n", "application/x-protobuf", "mesos event stream"},
		{"5\n\xff\xff\xff\xff\xff", "application/x-protobuf", "decoding an event"},
	} {
		t.Run(c.ctype, func(t *testing.T) {
			f := newFakeMaster(t)
			f.set(func() { f.garbage, f.garbageType = c.body, c.ctype })
			r := testRM(t, f.srv.URL, nil)
			if err := r.Start(context.Background(), "m:1", 1, (&lostLog{}).lost); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "3 attempts", func() bool { return len(f.subscriptions()) >= 3 })
			waitFor(t, "the status", func() bool { return strings.Contains(r.Status(), c.want) })
			if r.FrameworkID() != "" {
				t.Fatalf("framework id %q", r.FrameworkID())
			}
		})
	}
}

// Tasks that end right after they start (here: refused by the job master
// and exiting) are not relaunched in a loop: launches are held, and offers
// declined meanwhile only until the hold ends.
func TestRMQuickEndsHoldLaunches(t *testing.T) {
	f := newFakeMaster(t)
	r := testRM(t, f.srv.URL, func(c *Config) { c.LaunchHold = time.Hour })
	var ll lostLog
	if err := r.Start(context.Background(), "m:1", 1, ll.lost); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t)
	s.send(offersEvent(bigOffer("o1", "h1")))
	t1 := launchedTasks(t, f, 1)[0]
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_RUNNING, newUUID()))
	s.send(updateEvent(t1.TaskID.Value, t1.AgentID.Value, mesos.TASK_FAILED, newUUID()))
	s.send(offersEvent(bigOffer("o2", "h2")))
	dec := f.waitCall(t, scheduler.Call_DECLINE, func(c *scheduler.Call) bool { return c.Decline.OfferIDs[0].Value == "o2" })
	if got := dec.Decline.Filters.GetRefuseSeconds(); got != 30 {
		t.Errorf("refuse_seconds %v while held for an hour, want the configured 30", got)
	}
	if n := f.count(scheduler.Call_ACCEPT); n != 1 {
		t.Fatalf("%d ACCEPTs during the hold", n)
	}
	if len(ll.get()) != 1 {
		t.Fatalf("lost %v", ll.get())
	}
}
