package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/internal/hdfstest"
)

// TestCrashExactlyOnceHDFSSink is the crash test with the file sink's part
// files on HDFS (and the checkpoints): the process is killed with SIGKILL
// mid-write, a random moment after a checkpoint of its own (at the latest
// 6 s after it started), three times; in-progress files it leaves on HDFS
// are removed on restore and the committed part files hold every window
// exactly once. Killed runs read at most 10000 rows/s, so they cannot reach
// the end (3 × 6 s × 10000 < 200000); a run that does fails the test.
func TestCrashExactlyOnceHDFSSink(t *testing.T) {
	c, err := hdfstest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Setenv("HADOOP_USER_NAME", "sluice")
	t.Setenv("HADOOP_CONF_DIR", t.TempDir())
	const rows, keys, kills = 200_000, 100, 3
	out := "hdfs://" + c.Addr() + "/sluice/out"
	base := []string{"run", "--log-level", "debug",
		"--set", "nodes.out.params.path=" + out,
		"--set", "checkpoint.storage=hdfs://" + c.Addr() + "/sluice/checkpoints",
		"--set", fmt.Sprintf("nodes.src.params.rows=%d", rows),
		"--set", fmt.Sprintf("nodes.src.params.keys=%d", keys),
		"--set", "checkpoint.interval=150ms",
	}
	parallelisms := []int{2, 3, 1, 2}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for run := 0; ; run++ {
		args := append([]string{}, base...)
		if run > 0 {
			args = append(args, "--restore", "latest")
		}
		if run < kills {
			args = append(args, "--set", "nodes.src.params.rate=10000")
		}
		args = append(args, "--set", fmt.Sprintf("parallelism=%d", parallelisms[run%len(parallelisms)]), repoFile(t, "examples/exactly-once.json"))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, sluiceBin, args...)
		stderr := newWatchWriter("checkpoint complete")
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		if run == kills {
			err := cmd.Wait()
			cancel()
			if err != nil {
				t.Fatalf("final run failed: %v\n%s", err, stderr.String())
			}
			break
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		latest := time.After(6 * time.Second)
		after := "after a checkpoint of its own"
		select {
		case err := <-exited:
			cancel()
			t.Fatalf("run %d ended before its kill (%v)\n%s", run, err, tail(stderr.String(), 1000))
		case <-stderr.seen[0]:
		case <-latest:
			after = "6 s after its start, before a checkpoint of its own"
		}
		select {
		case err := <-exited:
			cancel()
			t.Fatalf("run %d ended before its kill (%v)\n%s", run, err, tail(stderr.String(), 1000))
		case <-time.After(time.Duration(rng.IntN(1000)) * time.Millisecond):
		case <-latest:
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := <-exited
		cancel()
		t.Logf("run %d killed %s (%v)", run, after, err)
	}
	compareWindows(t, hdfsWindows(t, out), expectedWindows(rows, keys, 1))
}

// hdfsWindows reads the committed part files of dir (a URI), failing on
// a (key, window) seen twice or an in-progress file left.
func hdfsWindows(t *testing.T, dir string) map[windowKey]windowAgg {
	t.Helper()
	fsys, p, err := fs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	entries, err := fsys.List(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[windowKey]windowAgg{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name, ".") {
			t.Errorf("in-progress file left: %s", e.Name)
			continue
		}
		data, err := fsys.ReadFile(ctx, fs.Join(p, e.Name))
		if err != nil {
			t.Fatal(err)
		}
		addWindows(t, e.Name, data, got, false)
	}
	return got
}
