package main

import (
	"testing"

	"github.com/sluice-stream/sluice/internal/hdfstest"
)

// TestCrashExactlyOnceHDFS is the crash test with checkpoints on HDFS: the
// sluice process talks Hadoop RPC and data transfer to an hdfstest
// namenode and datanode started by this test. State files get entropy
// injected into their paths.
func TestCrashExactlyOnceHDFS(t *testing.T) {
	c, err := hdfstest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Setenv("HADOOP_USER_NAME", "sluice")
	runCrashTest(t, 3, []int{2, 3, 1},
		"--set", "checkpoint.storage=hdfs://"+c.Addr()+"/sluice/_entropy_/checkpoints",
		"--set", "checkpoint.entropyKey=_entropy_")
}
