package checkpoint

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEntropyInjection(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := Open("file://"+root+"/_entropy_/checkpoints", "", WithEntropy("_entropy_", 4))
	if err != nil {
		t.Fatal(err)
	}
	if want := "file://" + root + "/checkpoints"; s.CheckpointDir() != want {
		t.Fatalf("metadata directory %s, want %s (entropy segment removed)", s.CheckpointDir(), want)
	}
	write := func(id int64) {
		md := &Metadata{JobName: "j", CheckpointID: id, MaxParallelism: 4}
		ns := NodeState{NodeID: "win", Parallelism: 2}
		for sub := range 2 {
			w := NewWriter()
			w.AddKeyGroup(sub, []byte("state"))
			data, st := w.Finish()
			st, err := s.WriteState(ctx, id, false, "win", sub, data, st)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(st.Dir, root+"/") || strings.Contains(st.Dir, "_entropy_") || !strings.HasSuffix(st.Dir, "/checkpoints/chk-"+string(rune('0'+id))) {
				t.Fatalf("state directory %q: want %s/<4 hex>/checkpoints/chk-%d", st.Dir, root, id)
			}
			if p := strings.TrimPrefix(st.Dir, root+"/"); len(strings.Split(p, "/")[0]) != 4 {
				t.Fatalf("entropy prefix of %q is not 4 characters", st.Dir)
			}
			ns.Subtasks = append(ns.Subtasks, st)
		}
		md.Nodes = []NodeState{ns}
		if _, err := s.Commit(ctx, md); err != nil {
			t.Fatal(err)
		}
	}
	for id := int64(1); id <= 3; id++ {
		write(id)
	}
	if _, err := os.Stat(filepath.Join(root, "checkpoints", "chk-3", MetadataFile)); err != nil {
		t.Fatalf("metadata is not at the path without the entropy segment: %v", err)
	}
	md, dir, err := s.Latest(ctx)
	if err != nil || md == nil || md.CheckpointID != 3 {
		t.Fatalf("Latest = %v, %v; want checkpoint 3", md, err)
	}
	data, err := s.ReadState(ctx, dir, md.Nodes[0].Subtasks[1])
	if err != nil || len(data) == 0 {
		t.Fatalf("ReadState: %v", err)
	}
	// A failed attempt's files are found and removed by Abort.
	w := NewWriter()
	w.AddOperatorState([]byte("x"))
	d, st := w.Finish()
	st, err = s.WriteState(ctx, 4, false, "src", 0, d, st)
	if err != nil {
		t.Fatal(err)
	}
	s.Abort(ctx, 4, false)
	if _, err := os.Stat(filepath.Join(st.Dir, st.File)); !os.IsNotExist(err) {
		t.Fatalf("aborted checkpoint's state file still exists: %v", err)
	}
	// Prune keeps one: the data of checkpoints 1 and 2 goes, 3's stays.
	if err := s.Prune(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var left []string
	filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			left = append(left, strings.TrimPrefix(p, root+"/"))
		}
		return nil
	})
	for _, f := range left {
		if !strings.Contains(f, "chk-3/") {
			t.Errorf("left after pruning to checkpoint 3: %s", f)
		}
	}
	if len(left) != 3 { // metadata + 2 state files
		t.Errorf("files left: %v, want checkpoint 3's metadata and 2 state files", left)
	}
	// Prefixes emptied by pruning are removed too.
	es, _ := os.ReadDir(root)
	if len(es) > 3 { // "checkpoints" plus at most 2 prefixes of checkpoint 3
		t.Errorf("%d entries under the root after pruning, want ≤ 3", len(es))
	}
}
