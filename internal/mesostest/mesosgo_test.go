package mesostest

import (
	"context"
	"testing"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/encoding/codecs"
	"github.com/mesos/mesos-go/api/v1/lib/httpcli"
	"github.com/mesos/mesos-go/api/v1/lib/httpcli/httpsched"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler/calls"
)

// The framework will use mesos-go's own client: subscribe with protobuf,
// launch a task, acknowledge its updates, reconcile and tear down.
func TestMesosGoClient(t *testing.T) {
	m := startMaster(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cli := httpcli.New(
		httpcli.Endpoint(m.URL()+"/api/v1/scheduler"),
		httpcli.Codec(codecs.ByMediaType[codecs.MediaTypeProtobuf]),
		httpcli.Do(httpcli.With(httpcli.Timeout(waitLimit))),
	)
	caller := httpsched.NewCaller(cli)
	info := &mesos.FrameworkInfo{
		User: "root", Name: "mesos-go", Roles: []string{"sluice-job1"},
		Capabilities: []mesos.FrameworkInfo_Capability{
			{Type: mesos.FrameworkInfo_Capability_MULTI_ROLE}, {Type: mesos.FrameworkInfo_Capability_PARTITION_AWARE},
		},
		FailoverTimeout: ptr(60.0), Checkpoint: ptr(true),
	}
	resp, err := caller.Call(ctx, calls.Subscribe(info))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	events := make(chan *scheduler.Event, 100)
	go func() {
		defer close(events)
		for {
			var ev scheduler.Event
			if err := resp.Decode(&ev); err != nil {
				return
			}
			if ev.Type != scheduler.Event_HEARTBEAT {
				events <- &ev
			}
		}
	}()
	next := func(want scheduler.Event_Type) *scheduler.Event {
		t.Helper()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatal("stream ended")
				}
				if ev.Type == want {
					return ev
				}
			case <-time.After(waitLimit):
				t.Fatalf("no %s", want)
			}
		}
	}
	sub := next(scheduler.Event_SUBSCRIBED)
	fid := sub.Subscribed.FrameworkID.Value
	if sub.Subscribed.MasterInfo.GetVersion() != "1.12.0" {
		t.Fatalf("%v", sub.Subscribed.MasterInfo)
	}
	offer := next(scheduler.Event_OFFERS).Offers.Offers[0]
	if offer.AllocationInfo.GetRole() != "sluice-job1" {
		t.Fatalf("offer %v", offer)
	}
	alloc := &mesos.Resource_AllocationInfo{Role: ptr("sluice-job1")}
	task := mesos.TaskInfo{
		Name: "mesos-go-task", TaskID: mesos.TaskID{Value: "mg-1"}, AgentID: offer.AgentID,
		Resources: []mesos.Resource{
			{Name: "cpus", Type: mesos.SCALAR.Enum(), Scalar: &mesos.Value_Scalar{Value: 0.1}, AllocationInfo: alloc},
			{Name: "mem", Type: mesos.SCALAR.Enum(), Scalar: &mesos.Value_Scalar{Value: 32}, AllocationInfo: alloc},
		},
		Command: &mesos.CommandInfo{Value: ptr("echo mesos-go")},
	}
	accept := calls.Accept(calls.OfferOperations{calls.OpLaunch(task)}.WithOffers(offer.ID)).
		With(calls.Framework(fid), calls.RefuseSeconds(time.Hour))
	if r, err := caller.Call(ctx, accept); err != nil {
		t.Fatal(err)
	} else if r != nil {
		r.Close()
	}
	for _, want := range []mesos.TaskState{mesos.TASK_STARTING, mesos.TASK_RUNNING, mesos.TASK_FINISHED} {
		st := next(scheduler.Event_UPDATE).Update.Status
		if st.GetState() != want || st.TaskID.Value != "mg-1" {
			t.Fatalf("want %s, got %v", want, st)
		}
		ack := calls.Acknowledge(st.AgentID.Value, st.TaskID.Value, st.UUID).With(calls.Framework(fid))
		if r, err := caller.Call(ctx, ack); err != nil {
			t.Fatal(err)
		} else if r != nil {
			r.Close()
		}
	}
	rec := calls.Reconcile(calls.ReconcileTasks(map[string]string{"mg-1": offer.AgentID.Value})).With(calls.Framework(fid))
	if r, err := caller.Call(ctx, rec); err != nil {
		t.Fatal(err)
	} else if r != nil {
		r.Close()
	}
	if st := next(scheduler.Event_UPDATE).Update.Status; st.GetState() != mesos.TASK_GONE || st.GetReason() != mesos.REASON_RECONCILIATION {
		t.Fatalf("%v", st)
	}
	td := &scheduler.Call{Type: scheduler.Call_TEARDOWN, FrameworkID: &mesos.FrameworkID{Value: fid}}
	if r, err := caller.Call(ctx, td); err != nil {
		t.Fatal(err)
	} else if r != nil {
		r.Close()
	}
	for range events {
	}
	if !m.FrameworkRemoved(fid) {
		t.Fatal("framework not removed")
	}
}

// httpsched follows the non-leading master's 307 for SUBSCRIBE.
func TestMesosGoClientRedirect(t *testing.T) {
	leader := startMaster(t, Config{})
	follower := startMaster(t, Config{Leader: leader.Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cli := httpcli.New(
		httpcli.Endpoint(follower.URL()+"/api/v1/scheduler"),
		httpcli.Codec(codecs.ByMediaType[codecs.MediaTypeProtobuf]),
		httpcli.Do(httpcli.With(httpcli.Timeout(waitLimit))),
	)
	resp, err := httpsched.NewCaller(cli).Call(ctx, calls.Subscribe(&mesos.FrameworkInfo{User: "root", Name: "redirected"}))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	var ev scheduler.Event
	if err := resp.Decode(&ev); err != nil || ev.Type != scheduler.Event_SUBSCRIBED {
		t.Fatalf("%v %v", ev, err)
	}
	if fws := leader.Frameworks(); len(fws) != 1 || fws[0].Name != "redirected" {
		t.Fatalf("%v", fws)
	}
}

// As with the real 1.12 master, mesos-go's JSON codec cannot decode
// SUBSCRIBED: master_info.capabilities carries QUOTA_V2, newer than the library.
func TestMesosGoJSONCannotDecodeSubscribed(t *testing.T) {
	m := startMaster(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cli := httpcli.New(
		httpcli.Endpoint(m.URL()+"/api/v1/scheduler"),
		httpcli.Codec(codecs.ByMediaType[codecs.MediaTypeJSON]),
		httpcli.Do(httpcli.With(httpcli.Timeout(waitLimit))),
	)
	resp, err := httpsched.NewCaller(cli).Call(ctx, calls.Subscribe(&mesos.FrameworkInfo{User: "root", Name: "json"}))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	var ev scheduler.Event
	if err := resp.Decode(&ev); err == nil {
		t.Fatalf("mesos-go decoded SUBSCRIBED with QUOTA_V2: %v", ev)
	}
}
