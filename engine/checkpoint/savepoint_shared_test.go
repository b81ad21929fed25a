package checkpoint

import (
	"context"
	"path/filepath"
	"testing"
)

// A job master and its TaskManagers each open the storage: a savepoint's
// state files (written by the TaskManagers) and its metadata (committed
// by the master) must land in one directory, which another master epoch
// never shares.
func TestSavepointSharedAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	uri := "file://" + filepath.ToSlash(t.TempDir())
	open := func(epoch int64) *Storage {
		st, err := Open(uri, "")
		if err != nil {
			t.Fatal(err)
		}
		st.SetSavepointEpoch(epoch)
		return st
	}
	master, tm1, tm2 := open(2), open(2), open(2)
	var states []SubtaskState
	for i, tm := range []*Storage{tm1, tm2} {
		st, err := tm.WriteState(ctx, 7, true, "win", i, []byte("state"), SubtaskState{})
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, st)
	}
	dir, err := master.Commit(ctx, &Metadata{JobName: "j", CheckpointID: 7, Savepoint: true, MaxParallelism: 8,
		Nodes: []NodeState{{NodeID: "win", Parallelism: 2, Subtasks: states}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(2).Load(ctx, dir); err != nil {
		t.Fatalf("the savepoint the master committed does not load: %v", err)
	}
	_, other, _ := open(3).attemptDir(7, true)
	_, same, _ := open(2).attemptDir(7, true)
	if other == same {
		t.Fatalf("epochs 2 and 3 name savepoint 7 the same: %s", same)
	}
	// Without an epoch, each process names its own (one process needs no
	// more, and runs of one job sharing a directory never collide).
	a, _ := Open(uri, "")
	b, _ := Open(uri, "")
	_, da, _ := a.attemptDir(9, true)
	_, db, _ := b.attemptDir(9, true)
	if da == db {
		t.Fatalf("two processes without an epoch named savepoint 9 the same: %s", da)
	}
}
