package main

import (
	"strings"
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

// TestClusterKillTaskManagerHDFS is the TaskManager-kill test on `sluice
// run --cluster 3` with checkpoints and the HA directory on HDFS (hdfstest):
// the master takes its epoch there by exclusive create and the TaskManagers
// find it there.
func TestClusterKillTaskManagerHDFS(t *testing.T) {
	c, err := hdfstest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Setenv("HADOOP_USER_NAME", "sluice")
	logs := runClusterCrashTest(t, 2,
		"--set", "checkpoint.storage=hdfs://"+c.Addr()+"/sluice/checkpoints",
		"--ha-dir", "hdfs://"+c.Addr()+"/sluice/ha")
	if !strings.Contains(logs, "took the job's fencing epoch") {
		t.Errorf("no epoch taken in the HA directory on HDFS")
	}
}
