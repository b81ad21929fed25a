package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestLocalRecovery: with checkpoint.localRecovery a restart on the same
// machine restores from the local copies (no state byte read from the
// checkpoint storage); with the local copies corrupted it reads the remote
// files instead. The output stays exactly-once either way.
func TestLocalRecovery(t *testing.T) {
	const rows, keys = 200_000, 100
	dir := t.TempDir()
	out, local := filepath.Join(dir, "out"), filepath.Join(dir, "local")
	args := func(restore bool) []string {
		a := []string{"run", "--local-dir", local,
			"--set", "nodes.out.params.path=" + out,
			"--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints"),
			"--set", "checkpoint.localRecovery=true",
			"--set", fmt.Sprintf("nodes.src.params.rows=%d", rows),
			"--set", fmt.Sprintf("nodes.src.params.keys=%d", keys),
			"--set", "nodes.src.params.rate=50000",
			"--set", "checkpoint.interval=100ms"}
		if restore {
			a = append(a, "--restore", "latest")
		}
		return append(a, repoFile(t, "examples/exactly-once.json"))
	}
	restored := regexp.MustCompile(`state restored" checkpoint=(\d+) localBytes=(\d+) remoteBytes=(\d+)`)
	// run starts the job, kills it after a while (kill=true), and returns
	// what its restore read.
	run := func(restore, kill bool) (localBytes, remoteBytes int64) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, sluiceBin, args(restore)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if kill {
			time.Sleep(1200 * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
		} else if err := cmd.Wait(); err != nil {
			t.Fatalf("run failed: %v\n%s", err, stderr.String())
		}
		m := restored.FindStringSubmatch(stderr.String())
		if restore && m == nil {
			t.Fatalf("no restore in the log:\n%s", stderr.String())
		}
		if m == nil {
			return 0, 0
		}
		l, _ := strconv.ParseInt(m[2], 10, 64)
		r, _ := strconv.ParseInt(m[3], 10, 64)
		t.Logf("restored checkpoint %s: %d bytes local, %d remote", m[1], l, r)
		return l, r
	}

	run(false, true)
	l, r := run(true, true)
	if l == 0 || r != 0 {
		t.Fatalf("restore read %d bytes locally and %d remotely; want everything local", l, r)
	}
	// Corrupt every local copy: the restore must read the remote files.
	n := 0
	filepath.WalkDir(filepath.Join(local), func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if data, err := os.ReadFile(p); err == nil && len(data) > 0 {
				data[len(data)/2] ^= 0xff
				os.WriteFile(p, data, 0o644)
				n++
			}
		}
		return nil
	})
	if n == 0 {
		t.Fatal("no local copies were kept")
	}
	l, r = run(true, false)
	if r == 0 {
		t.Fatalf("restore with corrupt local copies read %d bytes locally and none remotely", l)
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
}
