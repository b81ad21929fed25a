package main

import (
	"path/filepath"
	"testing"

	"github.com/sluice-stream/sluice/internal/hdfstest"
)

// TestCrashExactlyOnceIncremental is the crash test with everything of
// state at scale on at once: badger state, incremental checkpoints on
// hdfstest with entropy injection, and local recovery. SIGKILLs, restores
// (from local copies of the chain where they exist), parallelism changes
// between runs; the committed output must still be exactly once, and the
// runs must have completed checkpoints that build on earlier ones.
func TestCrashExactlyOnceIncremental(t *testing.T) {
	c, err := hdfstest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Setenv("HADOOP_USER_NAME", "sluice")
	logs := runCrashTest(t, 3, []int{2, 2, 3, 1},
		"--log-level", "debug",
		"--set", "stateBackend=badger",
		"--set", "badger.memtableMiB=4",
		"--set", "badger.blockCacheMiB=8",
		"--set", "checkpoint.incremental=true",
		"--set", "checkpoint.localRecovery=true",
		"--local-dir", filepath.Join(t.TempDir(), "local"),
		"--set", "checkpoint.storage=hdfs://"+c.Addr()+"/sluice/_entropy_/checkpoints",
		"--set", "checkpoint.entropyKey=_entropy_")
	if !incrementalRe.MatchString(logs) {
		t.Fatalf("no checkpoint built on an earlier one (no incremental checkpoint completed)")
	}
}
