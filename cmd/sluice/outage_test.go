package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/hdfstest"
)

// TestNamenodeOutage stops the namenode in the middle of a job: checkpoints
// fail and are counted while the job keeps processing, they resume once the
// namenode is back, and the output is still exactly-once.
func TestNamenodeOutage(t *testing.T) {
	const rows, keys = 300_000, 100
	c, err := hdfstest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Setenv("HADOOP_USER_NAME", "sluice")
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, "run",
		"--set", "nodes.out.params.path="+out,
		"--set", "checkpoint.storage=hdfs://"+c.Addr()+"/sluice/checkpoints",
		"--set", fmt.Sprintf("nodes.src.params.rows=%d", rows),
		"--set", fmt.Sprintf("nodes.src.params.keys=%d", keys),
		"--set", "nodes.src.params.rate=50000",
		"--set", "checkpoint.interval=150ms",
		"--set", "checkpoint.timeout=1s",
		"--set", "checkpoint.tolerableFailures=1000",
		repoFile(t, "examples/exactly-once.json"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	c.Stop()
	time.Sleep(2 * time.Second)
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("job failed: %v\n%s", err, stderr.String())
	}
	log := stderr.String()
	m := regexp.MustCompile(`checkpoints=(\d+) failedCheckpoints=(\d+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no checkpoint counts in the log:\n%s", log)
	}
	done, failed := atoi(m[1]), atoi(m[2])
	t.Logf("checkpoints completed %d, failed %d", done, failed)
	if failed == 0 {
		t.Fatalf("no checkpoint failed during the outage:\n%s", log)
	}
	if !regexp.MustCompile(`checkpoint failed`).MatchString(log) {
		t.Fatalf("failed checkpoints were not logged:\n%s", log)
	}
	// The job can only finish once its final checkpoint commits, which
	// happens after the restart: checkpointing resumed by itself.
	if done < 2 {
		t.Fatalf("checkpoints did not resume after the outage (completed %d):\n%s", done, log)
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
