package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestWriter(t *testing.T) {
	w := NewWriter()
	w.AddKeyGroup(5, []byte("five"))
	w.BeginKeyGroup(2)
	fmt.Fprintf(w, "tw")
	w.Write([]byte("o"))
	w.AddOperatorState([]byte("op1"))
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after AddOperatorState succeeded")
	}
	w.AddKeyGroup(7, nil)
	w.AddOperatorState([]byte("op2"))
	data, st := w.Finish()
	if st.Size != int64(len(data)) {
		t.Fatalf("Size = %d, len = %d", st.Size, len(data))
	}
	got := map[int]string{}
	var kgs []int
	for _, s := range st.KeyGroups {
		kgs = append(kgs, s.KeyGroup)
		got[s.KeyGroup] = string(data[s.Offset : s.Offset+s.Length])
	}
	if !reflect.DeepEqual(kgs, []int{2, 5, 7}) || got[2] != "two" || got[5] != "five" || got[7] != "" {
		t.Fatalf("key groups %v: %v", kgs, got)
	}
	var ops []string
	for _, s := range st.OperatorState {
		ops = append(ops, string(data[s.Offset:s.Offset+s.Length]))
	}
	if !reflect.DeepEqual(ops, []string{"op1", "op2"}) {
		t.Fatalf("operator state %q", ops)
	}
}

func TestWriterRepeatedKeyGroup(t *testing.T) {
	w := NewWriter()
	w.AddKeyGroup(3, []byte("a1"))
	w.AddKeyGroup(1, []byte("b"))
	w.AddOperatorState([]byte("op"))
	w.AddKeyGroup(3, []byte("a2"))
	data, st := w.Finish()
	if len(st.KeyGroups) != 2 {
		t.Fatalf("sections %+v", st.KeyGroups)
	}
	for _, s := range st.KeyGroups {
		want := map[int]string{1: "b", 3: "a1a2"}[s.KeyGroup]
		if got := string(data[s.Offset : s.Offset+s.Length]); got != want {
			t.Errorf("key group %d = %q, want %q", s.KeyGroup, got, want)
		}
	}
	if s := st.OperatorState[0]; string(data[s.Offset:s.Offset+s.Length]) != "op" {
		t.Errorf("operator state moved wrongly")
	}
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	dir string
	st  *Storage
	log *bytes.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := Open("file://"+filepath.ToSlash(dir), "")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: context.Background(), dir: dir, st: st, log: &bytes.Buffer{}}
	st.Log = slog.New(slog.NewTextHandler(f.log, nil))
	return f
}

// checkpoint writes a checkpoint of two nodes: "src" with operator state in
// 2 subtasks, "agg/1" with keyed state in 2 subtasks (key groups 0-3 and 4-7).
func (f *fixture) checkpoint(id int64, savepoint bool) (*Metadata, string) {
	f.t.Helper()
	md := &Metadata{JobName: "job", CheckpointID: id, Savepoint: savepoint, TimestampMs: 1000 + id, MaxParallelism: 8}
	src := NodeState{NodeID: "src", Parallelism: 2}
	agg := NodeState{NodeID: "agg/1", Parallelism: 2}
	for sub := range 2 {
		w := NewWriter()
		w.AddOperatorState(fmt.Appendf(nil, "offset-%d-%d", id, sub))
		data, ss := w.Finish()
		ss, err := f.st.WriteState(f.ctx, id, savepoint, "src", sub, data, ss)
		if err != nil {
			f.t.Fatal(err)
		}
		src.Subtasks = append(src.Subtasks, ss)

		w = NewWriter()
		for kg := sub * 4; kg < sub*4+4; kg++ {
			w.AddKeyGroup(kg, fmt.Appendf(nil, "kg%d@%d", kg, id))
		}
		data, ss = w.Finish()
		if ss, err = f.st.WriteState(f.ctx, id, savepoint, "agg/1", sub, data, ss); err != nil {
			f.t.Fatal(err)
		}
		agg.Subtasks = append(agg.Subtasks, ss)
	}
	md.Nodes = []NodeState{agg, src}
	p, err := f.st.Commit(f.ctx, md)
	if err != nil {
		f.t.Fatal(err)
	}
	md.Version = MetadataVersion
	return md, p
}

func (f *fixture) chk(id int64, file string) string {
	return filepath.Join(f.dir, fmt.Sprintf("chk-%d", id), file)
}

// checkState reads every section of md back and checks its content.
func (f *fixture) checkState(md *Metadata, dir string) {
	f.t.Helper()
	for _, n := range md.Nodes {
		for _, ss := range n.Subtasks {
			data, err := f.st.ReadState(f.ctx, dir, ss)
			if err != nil {
				f.t.Fatal(err)
			}
			for _, s := range ss.KeyGroups {
				if got, want := string(data[s.Offset:s.Offset+s.Length]), fmt.Sprintf("kg%d@%d", s.KeyGroup, md.CheckpointID); got != want {
					f.t.Errorf("%s#%d: %q, want %q", n.NodeID, ss.Subtask, got, want)
				}
			}
			for _, s := range ss.OperatorState {
				if got, want := string(data[s.Offset:s.Offset+s.Length]), fmt.Sprintf("offset-%d-%d", md.CheckpointID, ss.Subtask); got != want {
					f.t.Errorf("%s#%d: %q, want %q", n.NodeID, ss.Subtask, got, want)
				}
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	if md, dir, err := f.st.Latest(f.ctx); md != nil || dir != "" || err != nil {
		t.Fatalf("Latest on empty storage = %v, %q, %v", md, dir, err)
	}
	if id, err := f.st.NextCheckpointID(f.ctx); id != 1 || err != nil {
		t.Fatalf("NextCheckpointID = %d, %v", id, err)
	}
	want, p := f.checkpoint(1, false)
	if wantDir := "file://" + filepath.ToSlash(filepath.Join(f.dir, "chk-1")); p != wantDir {
		t.Errorf("Commit returned %q, want %q", p, wantDir)
	}
	for _, name := range []string{"_metadata", "src-0", "src-1", "agg%2F1-0", "agg%2F1-1"} {
		if _, err := os.Stat(f.chk(1, name)); err != nil {
			t.Errorf("chk-1/%s: %v", name, err)
		}
	}
	md, dir, err := f.st.Latest(f.ctx)
	if err != nil || dir != p {
		t.Fatalf("Latest = %q, %v", dir, err)
	}
	if !reflect.DeepEqual(md, want) {
		t.Fatalf("Latest metadata\n got %+v\nwant %+v", md, want)
	}
	f.checkState(md, dir)
	// Load accepts the URI, the plain path and the metadata file.
	for _, loc := range []string{p, filepath.Join(f.dir, "chk-1"), f.chk(1, "_metadata")} {
		md, err := f.st.Load(f.ctx, loc)
		if err != nil || !reflect.DeepEqual(md, want) {
			t.Fatalf("Load(%q) = %+v, %v", loc, md, err)
		}
		f.checkState(md, loc)
	}
	if id, _ := f.st.NextCheckpointID(f.ctx); id != 2 {
		t.Fatalf("NextCheckpointID = %d", id)
	}
	if f.log.Len() > 0 {
		t.Errorf("unexpected log: %s", f.log)
	}
}

func TestLatestSkipsCorrupt(t *testing.T) {
	corruptions := []struct {
		name string
		fn   func(f *fixture)
	}{
		{"state truncated", func(f *fixture) { truncate(f.t, f.chk(2, "agg%2F1-1"), 3) }},
		{"state bit flipped", func(f *fixture) { flip(f.t, f.chk(2, "src-0"), 2) }},
		{"state missing", func(f *fixture) { os.Remove(f.chk(2, "src-1")) }},
		{"metadata truncated", func(f *fixture) { truncate(f.t, f.chk(2, "_metadata"), 40) }},
		{"metadata bit flipped", func(f *fixture) { flip(f.t, f.chk(2, "_metadata"), 30) }},
		{"metadata checksum flipped", func(f *fixture) { flip(f.t, f.chk(2, "_metadata"), -3) }},
		{"metadata missing", func(f *fixture) { os.Remove(f.chk(2, "_metadata")) }},
		{"metadata empty", func(f *fixture) { os.WriteFile(f.chk(2, "_metadata"), nil, 0o644) }},
	}
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.checkpoint(1, false)
			f.checkpoint(2, false)
			c.fn(f)
			md, dir, err := f.st.Latest(f.ctx)
			if err != nil || md == nil || md.CheckpointID != 1 {
				t.Fatalf("Latest = %+v, %q, %v; want checkpoint 1", md, dir, err)
			}
			f.checkState(md, dir)
			logged := f.log.String()
			if !strings.Contains(logged, "level=WARN") || !strings.Contains(logged, "checkpoint 2 is ") || !strings.Contains(logged, "falling back to checkpoint 1") {
				t.Errorf("log: %s", logged)
			}
			if _, err := f.st.Load(f.ctx, filepath.Join(f.dir, "chk-2")); err == nil {
				t.Error("Load of the damaged checkpoint succeeded")
			}
			// The damaged id is never reused.
			if id, _ := f.st.NextCheckpointID(f.ctx); id != 3 {
				t.Errorf("NextCheckpointID = %d", id)
			}
		})
	}
}

func TestLatestNoneUsable(t *testing.T) {
	f := newFixture(t)
	f.checkpoint(1, false)
	flip(t, f.chk(1, "src-1"), 0)
	md, dir, err := f.st.Latest(f.ctx)
	if md != nil || dir != "" || err != nil {
		t.Fatalf("Latest = %v, %q, %v", md, dir, err)
	}
	if !strings.Contains(f.log.String(), "checkpoint 1 is corrupt") || !strings.Contains(f.log.String(), "no older checkpoint") {
		t.Errorf("log: %s", f.log)
	}
}

func truncate(t *testing.T, p string, n int64) {
	t.Helper()
	if err := os.Truncate(p, n); err != nil {
		t.Fatal(err)
	}
}

// flip flips a bit of byte i (from the end when negative).
func flip(t *testing.T, p string, i int) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(data)
	}
	data[i] ^= 0x04
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPrune(t *testing.T) {
	f := newFixture(t)
	for id := int64(1); id <= 5; id++ {
		f.checkpoint(id, false)
	}
	os.Remove(f.chk(2, "_metadata")) // a failed attempt, older than completed ones
	// An attempt in progress, newer than every completed one.
	if _, err := f.st.WriteState(f.ctx, 6, false, "src", 0, []byte("x"), SubtaskState{}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(f.dir, "unrelated"), 0o755)
	if err := f.st.Prune(f.ctx, 2); err != nil {
		t.Fatal(err)
	}
	es, _ := os.ReadDir(f.dir)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	if want := []string{"chk-4", "chk-5", "chk-6", "unrelated"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("after Prune(2): %v, want %v", names, want)
	}
	if id, _ := f.st.NextCheckpointID(f.ctx); id != 7 {
		t.Errorf("NextCheckpointID = %d", id)
	}
	if err := f.st.Prune(f.ctx, 0); err != nil { // at least one is kept
		t.Fatal(err)
	}
	if md, _, _ := f.st.Latest(f.ctx); md == nil || md.CheckpointID != 5 {
		t.Fatalf("Latest after Prune(0) = %+v", md)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "chk-4")); !os.IsNotExist(err) {
		t.Errorf("chk-4 survived Prune(0): %v", err)
	}
}

func TestSavepoint(t *testing.T) {
	f := newFixture(t)
	f.checkpoint(1, false)
	want, p := f.checkpoint(2, true)
	spDir := filepath.Join(f.dir, "savepoints")
	es, err := os.ReadDir(spDir)
	if err != nil || len(es) != 1 {
		t.Fatalf("savepoints: %v, %v", es, err)
	}
	name := es[0].Name()
	if !strings.HasPrefix(name, "savepoint-2-") || len(name) != len("savepoint-2-")+6 {
		t.Fatalf("savepoint directory %q", name)
	}
	if p != "file://"+filepath.ToSlash(filepath.Join(spDir, name)) {
		t.Fatalf("Commit returned %q", p)
	}
	// A savepoint is not a checkpoint to recover from.
	if md, _, _ := f.st.Latest(f.ctx); md.CheckpointID != 1 {
		t.Fatalf("Latest = %d", md.CheckpointID)
	}
	if id, _ := f.st.NextCheckpointID(f.ctx); id != 3 {
		t.Fatalf("NextCheckpointID = %d", id)
	}
	// Another job (other storage, other parallelism) restores from it: the
	// metadata has what it needs to pick key groups.
	other, err := Open("file://"+filepath.ToSlash(t.TempDir()), "")
	if err != nil {
		t.Fatal(err)
	}
	md, err := other.Load(f.ctx, p)
	if err != nil || !reflect.DeepEqual(md, want) || !md.Savepoint {
		t.Fatalf("Load(%q) = %+v, %v", p, md, err)
	}
	f.checkState(md, p)
	kgOwners := map[int]bool{}
	for _, n := range md.Nodes {
		if n.NodeID == "agg/1" {
			for _, ss := range n.Subtasks {
				for _, s := range ss.KeyGroups {
					kgOwners[s.KeyGroup] = true
				}
			}
		}
	}
	if len(kgOwners) != md.MaxParallelism {
		t.Errorf("key groups %v of %d", kgOwners, md.MaxParallelism)
	}
	// Corruption is detected on Load.
	flip(t, filepath.Join(spDir, name, "agg%2F1-0"), 1)
	if _, err := other.Load(f.ctx, p); err == nil || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load of a corrupt savepoint: %v", err)
	}
}

func TestSavepointURI(t *testing.T) {
	dir := filepath.ToSlash(t.TempDir())
	st, err := Open(dir+"/chk", "file://"+dir+"/sp/")
	if err != nil {
		t.Fatal(err)
	}
	if st.CheckpointDir() != "file://"+dir+"/chk" || st.SavepointDir() != "file://"+dir+"/sp" {
		t.Fatalf("dirs %q %q", st.CheckpointDir(), st.SavepointDir())
	}
	if _, err := Open("s3://bucket/x", ""); err == nil || !strings.Contains(err.Error(), "unsupported storage scheme") {
		t.Fatalf("hdfs: %v", err)
	}
	if _, err := Open("", ""); err == nil {
		t.Fatal("empty URI accepted")
	}
}

func TestAbort(t *testing.T) {
	f := newFixture(t)
	f.checkpoint(1, false)
	if _, err := f.st.WriteState(f.ctx, 2, false, "src", 0, []byte("x"), SubtaskState{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.WriteState(f.ctx, 3, true, "src", 0, []byte("x"), SubtaskState{}); err != nil {
		t.Fatal(err)
	}
	f.st.Abort(f.ctx, 2, false)
	f.st.Abort(f.ctx, 2, true) // nothing to do
	f.st.Abort(f.ctx, 3, true)
	f.st.Abort(f.ctx, 3, false) // nothing to do
	f.st.Abort(f.ctx, 1, false) // completed: kept
	if _, err := os.Stat(filepath.Join(f.dir, "chk-2")); !os.IsNotExist(err) {
		t.Errorf("chk-2 after Abort: %v", err)
	}
	if es, _ := os.ReadDir(filepath.Join(f.dir, "savepoints")); len(es) != 0 {
		t.Errorf("savepoints after Abort: %v", es)
	}
	if md, _, _ := f.st.Latest(f.ctx); md == nil || md.CheckpointID != 1 {
		t.Fatalf("Latest after Abort = %+v", md)
	}
	if !strings.Contains(f.log.String(), "not removing a completed checkpoint") {
		t.Errorf("log: %s", f.log)
	}
}

func TestLoadErrors(t *testing.T) {
	f := newFixture(t)
	f.checkpoint(1, false)
	if _, err := f.st.WriteState(f.ctx, 2, false, "src", 0, []byte("x"), SubtaskState{}); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		filepath.Join(f.dir, "nope"):  "no such checkpoint or savepoint directory",
		filepath.Join(f.dir, "chk-2"): "is not a completed checkpoint",
		"s3://bucket/x":               "unsupported storage scheme",
		"":                            "no checkpoint or savepoint location",
	}
	for loc, want := range cases {
		if _, err := f.st.Load(f.ctx, loc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%q) = %v, want %q", loc, err, want)
		}
	}
	// A checkpoint directory renamed to another id does not pass.
	if err := os.Rename(filepath.Join(f.dir, "chk-1"), filepath.Join(f.dir, "chk-9")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Load(f.ctx, filepath.Join(f.dir, "chk-9")); err == nil || !strings.Contains(err.Error(), "records checkpoint 1") {
		t.Errorf("renamed: %v", err)
	}
}

func TestCommitRejectsBadMetadata(t *testing.T) {
	f := newFixture(t)
	good := func() *Metadata {
		ss, err := f.st.WriteState(f.ctx, 1, false, "n", 0, []byte("abcd"), SubtaskState{KeyGroups: []Section{{KeyGroup: 1, Offset: 0, Length: 4}}})
		if err != nil {
			t.Fatal(err)
		}
		return &Metadata{CheckpointID: 1, MaxParallelism: 4, Nodes: []NodeState{{NodeID: "n", Parallelism: 1, Subtasks: []SubtaskState{ss}}}}
	}
	bad := map[string]func(md *Metadata){
		"no id":             func(md *Metadata) { md.CheckpointID = 0 },
		"no max par":        func(md *Metadata) { md.MaxParallelism = 0 },
		"key group too big": func(md *Metadata) { md.Nodes[0].Subtasks[0].KeyGroups[0].KeyGroup = 4 },
		"section too long":  func(md *Metadata) { md.Nodes[0].Subtasks[0].KeyGroups[0].Length = 5 },
		"subtask too big":   func(md *Metadata) { md.Nodes[0].Subtasks[0].Subtask = 1 },
		"no file":           func(md *Metadata) { md.Nodes[0].Subtasks[0].File = "" },
		"file escapes":      func(md *Metadata) { md.Nodes[0].Subtasks[0].File = "../x" },
		"node twice":        func(md *Metadata) { md.Nodes = append(md.Nodes, md.Nodes[0]) },
		"future version":    func(md *Metadata) { md.Version = MetadataVersion + 1 },
	}
	for name, fn := range bad {
		md := good()
		fn(md)
		if _, err := f.st.Commit(f.ctx, md); err == nil {
			t.Errorf("%s: committed", name)
		}
	}
	if _, err := f.st.Commit(f.ctx, good()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.WriteState(f.ctx, 2, false, "n", 0, []byte("ab"), SubtaskState{OperatorState: []Section{{Offset: 1, Length: 2}}}); err == nil {
		t.Error("WriteState accepted a section past the data")
	}
}

func TestStateFileName(t *testing.T) {
	cases := map[string]string{
		"src":      "src-3",
		"agg/1":    "agg%2F1-3",
		"a%2F1":    "a%252F1-3",
		"..":       "%2E.-3",
		".hidden":  "%2Ehidden-3",
		"_metadat": "_metadat-3",
		"ünï":      "%C3%BCn%C3%AF-3",
	}
	for in, want := range cases {
		if got := stateFileName(in, 3); got != want {
			t.Errorf("stateFileName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConcurrentSavepointUploads(t *testing.T) {
	f := newFixture(t)
	ns := NodeState{NodeID: "n", Parallelism: 16}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for sub := range 16 {
		wg.Go(func() {
			ss, err := f.st.WriteState(f.ctx, 4, true, "n", sub, []byte{byte(sub)}, SubtaskState{})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ns.Subtasks = append(ns.Subtasks, ss)
			mu.Unlock()
		})
	}
	wg.Wait()
	p, err := f.st.Commit(f.ctx, &Metadata{CheckpointID: 4, Savepoint: true, MaxParallelism: 16, Nodes: []NodeState{ns}})
	if err != nil {
		t.Fatal(err)
	}
	md, err := f.st.Load(f.ctx, p)
	if err != nil || len(md.Nodes[0].Subtasks) != 16 {
		t.Fatalf("Load = %+v, %v", md, err)
	}
}

// incremental writes checkpoint id of one keyed subtask: a full snapshot
// when base is nil, else a delta whose chain is base's chain plus base.
func (f *fixture) incremental(id int64, base *Metadata) *Metadata {
	f.t.Helper()
	w := NewWriter()
	w.AddKeyGroup(1, fmt.Appendf(nil, "kg1@%d", id))
	data, ss := w.Finish()
	if base != nil {
		b := base.Nodes[0].Subtasks[0]
		ss.Delta = true
		ss.Chain = append(append([]StateFile(nil), b.Chain...), f.st.Ref(base.CheckpointID, b))
	}
	ss, err := f.st.WriteState(f.ctx, id, false, "agg", 0, data, ss)
	if err != nil {
		f.t.Fatal(err)
	}
	md := &Metadata{JobName: "job", CheckpointID: id, MaxParallelism: 8, Nodes: []NodeState{{NodeID: "agg", Parallelism: 1, Subtasks: []SubtaskState{ss}}}}
	if _, err := f.st.Commit(f.ctx, md); err != nil {
		f.t.Fatal(err)
	}
	return md
}

// TestIncrementalChain: a delta's chain is verified with it, and Prune
// keeps the checkpoints a retained chain refers to, deleting them once no
// retained checkpoint does.
func TestIncrementalChain(t *testing.T) {
	f := newFixture(t)
	m1 := f.incremental(1, nil)
	m2 := f.incremental(2, m1)
	m3 := f.incremental(3, m2)
	if got := m3.Nodes[0].Subtasks[0].Chain; len(got) != 2 || got[0].CheckpointID != 1 || got[1].CheckpointID != 2 || got[0].Delta || !got[1].Delta {
		t.Fatalf("chain %+v", got)
	}
	if err := f.st.Prune(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	md, dir, err := f.st.Latest(f.ctx)
	if err != nil || md == nil || md.CheckpointID != 3 {
		t.Fatalf("Latest = %v, %v", md, err)
	}
	for i, st := range md.Nodes[0].Subtasks[0].Files() {
		data, err := f.st.ReadState(f.ctx, dir, st)
		if err != nil {
			t.Fatalf("file %d of the chain: %v", i, err)
		}
		s := st.KeyGroups[0]
		if got, want := string(data[s.Offset:s.Offset+s.Length]), fmt.Sprintf("kg1@%d", i+1); got != want {
			t.Fatalf("file %d of the chain holds %q, want %q", i, got, want)
		}
	}
	// A full checkpoint 4 ends the chain: Prune(1) deletes 1 to 3.
	f.incremental(4, nil)
	if err := f.st.Prune(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= 3; id++ {
		if _, err := os.Stat(filepath.Join(f.dir, fmt.Sprintf("chk-%d", id))); !os.IsNotExist(err) {
			t.Errorf("chk-%d survived although no retained checkpoint refers to it", id)
		}
	}
	// A missing chain file makes the checkpoint unusable: Latest falls
	// back to an older one.
	m5 := f.incremental(5, must(f.st.Load(f.ctx, filepath.Join(f.dir, "chk-4"))))
	_ = m5
	if err := os.Remove(f.chk(4, "agg-0")); err != nil {
		t.Fatal(err)
	}
	if md, _, _ := f.st.Latest(f.ctx); md != nil {
		t.Fatalf("Latest = checkpoint %d with a chain file missing", md.CheckpointID)
	}
	// Chains that do not fit the checkpoint are rejected at commit.
	bad := &Metadata{JobName: "job", CheckpointID: 9, MaxParallelism: 8, Nodes: []NodeState{{NodeID: "agg", Parallelism: 1, Subtasks: []SubtaskState{{File: "agg-0", Delta: true}}}}}
	if _, err := f.st.Commit(f.ctx, bad); err == nil || !strings.Contains(err.Error(), "chain") {
		t.Fatalf("a delta without a chain: %v", err)
	}
	bad.Nodes[0].Subtasks[0].Chain = []StateFile{{CheckpointID: 12, Dir: "/x", File: "f"}}
	if _, err := f.st.Commit(f.ctx, bad); err == nil || !strings.Contains(err.Error(), "chain") {
		t.Fatalf("a chain element newer than the checkpoint: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
