package framework_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/framework"
)

// TestStandby: a master in standby registers its TaskManagers and says
// so, deploys nothing until Start, then runs the job; a second Start is
// refused.
func TestStandby(t *testing.T) {
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
	opts.Log = quiet()
	m, err := framework.New(framework.Config{Job: j, Graph: g, TaskManagers: 2, Slots: 1, Standby: true, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if st, ok := m.Standby(); !ok || st.Wanted != 2 || st.Ready() {
		t.Fatalf("before any TaskManager: %+v %v", st, ok)
	}
	type result struct{ err error }
	done := make(chan result, 1)
	go func() {
		_, err := m.Run(ctx, opts)
		done <- result{err}
	}()
	startTaskManagers(t, ctx, m.Addr(), 2)
	for {
		st, ok := m.Standby()
		if !ok {
			t.Fatal("the master left its standby by itself")
		}
		if st.Ready() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("TaskManagers not registered: %+v", st)
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case <-m.Running():
		t.Fatal("running before Start")
	case r := <-done:
		t.Fatalf("Run ended while standing by: %v", r.err)
	default:
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Fatal("the sink wrote while the master stood by")
	}
	if err := m.Start(""); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(""); !errors.Is(err, framework.ErrNotStandby) {
		t.Fatalf("a second Start: %v, want ErrNotStandby", err)
	}
	if _, ok := m.Standby(); ok {
		t.Fatal("still standing by after Start")
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	select {
	case <-m.Running():
	default:
		t.Fatal("the job ran, but Running was not closed")
	}
	if m.RunningSince().IsZero() {
		t.Fatal("no RunningSince")
	}
	if got := windows(t, filepath.Join(dir, "out")); len(got) != 50*30 {
		t.Fatalf("%d windows, want %d", len(got), 50*30)
	}
}

// TestStandbyTimeout: a master in standby that is never started gives up
// once it has had its TaskManagers for StandbyTimeout; a late Start is
// refused.
func TestStandbyTimeout(t *testing.T) {
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
	opts.Log = quiet()
	m, err := framework.New(framework.Config{Job: j, Graph: g, TaskManagers: 2, Slots: 1, Standby: true,
		StandbyTimeout: 200 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startTaskManagers(t, ctx, m.Addr(), 2)
	if _, err := m.Run(ctx, opts); !errors.Is(err, framework.ErrStandbyTimeout) {
		t.Fatalf("Run: %v, want ErrStandbyTimeout", err)
	}
	if err := m.Start(""); !errors.Is(err, framework.ErrNotStandby) {
		t.Fatalf("a late Start: %v, want ErrNotStandby", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Fatal("the job ran")
	}
}
