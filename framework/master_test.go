package framework_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
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
	"github.com/sluice-stream/sluice/taskmanager"
)

const job = `{
  "name": "fw", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "100ms", "mode": "exactly-once"},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "sequence", "params": {"rows": 30000, "keys": 50, "intervalMs": 1, "rate": 60000}},
    {"id": "win", "type": "window", "inputs": ["src"], "params": {
      "keys": ["key"], "type": "tumbling", "size": "1s",
      "aggregates": [{"name": "count", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "id"}]}},
    {"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}}
  ]
}`

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startMaster plans the job into dir and starts a master with no resource
// manager: the test starts the TaskManagers.
func startMaster(t *testing.T, dir string, tms int) (*framework.Master, *spec.Job) {
	t.Helper()
	j, err := spec.Parse([]byte(job), []string{"nodes.out.params.path=" + filepath.Join(dir, "out"),
		"checkpoint.storage=file://" + filepath.Join(dir, "checkpoints")})
	if err != nil {
		t.Fatal(err)
	}
	g, _, err := plan.Prepare(j)
	if err != nil {
		t.Fatal(err)
	}
	m, err := framework.New(framework.Config{Job: j, Graph: g, TaskManagers: tms, Slots: 1, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, j
}

func startTaskManagers(t *testing.T, ctx context.Context, master string, n int) {
	t.Helper()
	for i := range n {
		tm, err := taskmanager.New(taskmanager.Config{Master: master, Slots: 1, LocalDir: t.TempDir(),
			ResourceID: "test-" + string(rune('a'+i)), ConnectTimeout: 5 * time.Second, Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = tm.Run(ctx) }()
		t.Cleanup(func() { <-done })
	}
}

type window struct{ key, start int64 }

// windows reads the committed part files: (key, window) → count, failing
// on a duplicate.
func windows(t *testing.T, dir string) map[window]int64 {
	t.Helper()
	got := map[window]int64{}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), "part-") {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r struct {
				Key         int64 `json:"key"`
				WindowStart int64 `json:"window_start"`
				Count       int64 `json:"count"`
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", e.Name(), err)
			}
			k := window{r.Key, r.WindowStart}
			if _, dup := got[k]; dup {
				t.Fatalf("key %d window %d written twice", k.key, k.start)
			}
			got[k] = r.Count
		}
		f.Close()
	}
	return got
}

// TestJobOnTaskManagers runs a job with a hash shuffle on two TaskManagers
// (in this process, over the real control and data planes): every window
// is right and written once, and the master's counters add up.
func TestJobOnTaskManagers(t *testing.T) {
	dir := t.TempDir()
	m, j := startMaster(t, dir, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Garbage on the control port first: refused, the master serves on.
	if c, err := net.Dial("tcp", m.Addr()); err == nil {
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02 not grpc"))
		c.Close()
	}
	startTaskManagers(t, ctx, m.Addr(), 2)
	_, opts, err := plan.Prepare(j)
	if err != nil {
		t.Fatal(err)
	}
	opts.Log = quiet()
	res, err := m.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	got := windows(t, filepath.Join(dir, "out"))
	want := map[window]int64{}
	for id := int64(0); id < 30000; id++ {
		want[window{id % 50, id / 1000 * 1000}]++
	}
	if len(got) != len(want) {
		t.Fatalf("%d windows, want %d", len(got), len(want))
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("key %d window %d: count %d, want %d", k.key, k.start, got[k], n)
		}
	}
	if n := res.Metrics["src"].RowsOut.Load(); n != 30000 {
		t.Errorf("the master counts %d rows out of src, want 30000", n)
	}
	if res.Checkpoints == 0 {
		t.Error("no checkpoint completed")
	}
}

// TestRefusesStaleMaster: a TaskManager that served epoch 5 registering
// with a master of epoch 1 is refused, and told why.
func TestRefusesStaleMaster(t *testing.T) {
	m, _ := startMaster(t, t.TempDir(), 2)
	cc, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := pb.NewControlClient(cc).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&pb.FromTaskManager{Epoch: 5, Msg: &pb.FromTaskManager_Register{Register: &pb.Register{Slots: 1, DataAddress: "127.0.0.1:1"}}}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ref := r.GetRefused(); ref == nil || !strings.Contains(ref.Reason, "stale") {
		t.Fatalf("answer %v, want Refused as stale", r)
	}
	// And a session that does not start with Register.
	s2, err := pb.NewControlClient(cc).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s2.Send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
	if r, err := s2.Recv(); err != nil || r.GetRefused() == nil {
		t.Fatalf("heartbeat first: %v %v, want Refused", r, err)
	}
}

// recordingRM records what the master tells it.
type recordingRM struct{ lost chan string }

func (r *recordingRM) Start(context.Context, string, int, func(string, error)) error { return nil }
func (r *recordingRM) Lost(id string)                                                { r.lost <- id }
func (r *recordingRM) Close()                                                        {}
func (r *recordingRM) Abandon()                                                      {}

// TestRefusesReplacedTaskManager: a TaskManager the master dropped (its
// session ended: hung, or cut off) is replaced through the resource
// manager; when it comes back under the same resource id it is refused,
// so the replacement and the old one never both take slots.
func TestRefusesReplacedTaskManager(t *testing.T) {
	j, err := spec.Parse([]byte(job), []string{"checkpoint.storage=file://" + t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	g, _, err := plan.Prepare(j)
	if err != nil {
		t.Fatal(err)
	}
	rm := &recordingRM{lost: make(chan string, 1)}
	m, err := framework.New(framework.Config{Job: j, Graph: g, TaskManagers: 2, Slots: 1, RM: rm, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	cc, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	register := func(sctx context.Context) *pb.FromMaster {
		t.Helper()
		s, err := pb.NewControlClient(cc).Session(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Register{Register: &pb.Register{Slots: 1, DataAddress: "127.0.0.1:1", ResourceId: "r-1"}}}); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	sctx, end := context.WithCancel(ctx)
	if r := register(sctx); r.GetRegistered() == nil {
		t.Fatalf("first registration: %v", r)
	}
	end() // the session ends: the master drops it and has it replaced
	select {
	case id := <-rm.lost:
		if id != "r-1" {
			t.Fatalf("the resource manager was told %q was lost, want r-1", id)
		}
	case <-ctx.Done():
		t.Fatal("the resource manager was not told the TaskManager was lost")
	}
	if r := register(ctx); r.GetRefused() == nil || !strings.Contains(r.GetRefused().Reason, "replaced") {
		t.Fatalf("the replaced TaskManager registering again: %v, want Refused", r)
	}
}
