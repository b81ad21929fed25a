package framework_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/framework"
	pb "github.com/sluice-stream/sluice/internal/controlpb"
)

// lostRM is a resource manager that starts nothing and hands its lost
// callback to the test.
type lostRM struct{ lost chan func(string, error) }

func (r *lostRM) Start(_ context.Context, _ string, _ int, lost func(string, error)) error {
	r.lost <- lost
	return nil
}
func (r *lostRM) Lost(string) {}
func (r *lostRM) Close()      {}
func (r *lostRM) Abandon()    {}

// A TaskManager whose resource the resource manager reported ended (on
// Mesos: replaced after its agent stayed unreachable, while it runs on) is
// dropped and refused when it registers again: its replacement takes its
// place.
func TestRefusesTaskManagerOfEndedResource(t *testing.T) {
	dir := t.TempDir()
	j, err := spec.Parse([]byte(job), []string{"nodes.out.params.path=" + filepath.Join(dir, "out"),
		"checkpoint.storage=file://" + filepath.Join(dir, "checkpoints")})
	if err != nil {
		t.Fatal(err)
	}
	g, opts, err := plan.Prepare(j)
	if err != nil {
		t.Fatal(err)
	}
	rm := &lostRM{lost: make(chan func(string, error), 1)}
	m, err := framework.New(framework.Config{Job: j, Graph: g, TaskManagers: 2, Slots: 1, RM: rm, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts.Log = quiet()
	go func() { _, _ = m.Run(ctx, opts) }()
	lost := <-rm.lost

	cc, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	register := func() pb.Control_SessionClient {
		s, err := pb.NewControlClient(cc).Session(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Register{Register: &pb.Register{Slots: 1, DataAddress: "127.0.0.1:1", ResourceId: "task-1"}}}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := register()
	if r, err := s.Recv(); err != nil || r.GetRegistered() == nil {
		t.Fatalf("first registration: %v %v", r, err)
	}
	lost("task-1", errors.New("its agent has been unreachable for 3s"))
	// The session ends.
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
	r, err := register().Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ref := r.GetRefused(); ref == nil || !strings.Contains(ref.Reason, "task-1") {
		t.Fatalf("registering again: %v, want Refused for its ended resource", r)
	}
}
