package dispatcher

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/framework"
)

func publish(t *testing.T, haDir string, info MasterInfo) {
	t.Helper()
	ha, err := framework.OpenHA(haDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := ha.Publish(context.Background(), info); err != nil {
		t.Fatal(err)
	}
}

// Find adopts only a live `sluice framework` of the run's HA directory on
// this host: not a pid that is gone, reused by another program, or on
// another host.
func TestLocalFind(t *testing.T) {
	dir := t.TempDir()
	ha := "file://" + filepath.Join(dir, "ha")
	l := &Local{WorkDir: filepath.Join(dir, "work")}
	s := MasterSpec{JobID: "0123456789abcdef", Run: 1, HADir: ha}
	ctx := context.Background()
	if m, err := l.Find(ctx, s); m != nil || err != nil {
		t.Fatalf("no master published: %v %v", m, err)
	}
	host, _ := os.Hostname()
	// A process that is no framework master (a reused pid).
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Process.Kill()
	publish(t, ha, MasterInfo{Epoch: 1, PID: other.Process.Pid, Host: host})
	if m, _ := l.Find(ctx, s); m != nil {
		t.Fatalf("adopted pid %d, which runs sleep", other.Process.Pid)
	}
	// A process whose command line is a master's of this HA directory
	// (this test binary, run as a stand-in: see TestMain) is adopted.
	fake := exec.Command(os.Args[0], "framework", "--ha-dir", ha)
	fake.Env = append(os.Environ(), "DISPATCHER_TEST_FAKE_MASTER=1")
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	publish(t, ha, MasterInfo{Epoch: 2, PID: fake.Process.Pid, Host: host})
	m, err := l.Find(ctx, s)
	if m == nil || err != nil {
		t.Fatalf("the running master was not found: %v", err)
	}
	_ = fake.Process.Kill()
	_ = fake.Wait()
	if exit := m.Wait(ctx); exit.Known || exit.Code != -1 {
		t.Fatalf("an adopted master's end: %+v, want an unknown code", exit)
	}
	// One that recorded its end in the HA directory before it exited (as
	// framework.Master.RecordEnd does): its code is known.
	fake2 := exec.Command(os.Args[0], "framework", "--ha-dir", ha)
	fake2.Env = append(os.Environ(), "DISPATCHER_TEST_FAKE_MASTER=1")
	if err := fake2.Start(); err != nil {
		t.Fatal(err)
	}
	publish(t, ha, MasterInfo{Epoch: 5, PID: fake2.Process.Pid, Host: host})
	if m, err = l.Find(ctx, s); m == nil || err != nil {
		t.Fatalf("the running master was not found: %v", err)
	}
	h, err := framework.OpenHA(ha)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SaveResult(ctx, framework.Result{Epoch: 5, Code: 0, Reason: "finished"}); err != nil {
		t.Fatal(err)
	}
	_ = fake2.Process.Kill()
	_ = fake2.Wait()
	if exit := m.Wait(ctx); !exit.Known || exit.Code != 0 {
		t.Fatalf("an adopted master that recorded it finished: %+v, want code 0, known", exit)
	}
	if processRuns(os.Getpid(), ha) {
		t.Fatal("the test process taken for a master")
	}
	// Gone: a pid that ended.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	publish(t, ha, MasterInfo{Epoch: 6, PID: done.Process.Pid, Host: host})
	if m, _ := l.Find(ctx, s); m != nil {
		t.Fatal("adopted a process that ended")
	}
	// Another host.
	publish(t, ha, MasterInfo{Epoch: 7, PID: os.Getpid(), Host: host + "-elsewhere"})
	if m, _ := l.Find(ctx, s); m != nil {
		t.Fatal("adopted a master of another host")
	}
}

func TestMasterEnv(t *testing.T) {
	got := masterEnv([]string{"PATH=/bin", "SLUICE_RESTORE=x", "KAFKA_PW=p", "SLUICE_HTTP=:1"})
	if !slices.Equal(got, []string{"PATH=/bin", "KAFKA_PW=p"}) {
		t.Fatalf("masterEnv: %v", got)
	}
}

// TestMain lets the test binary stand in for a framework master process.
func TestMain(m *testing.M) {
	if os.Getenv("DISPATCHER_TEST_FAKE_MASTER") == "1" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
