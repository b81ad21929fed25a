package checkpoint

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
)

// streamed writes a state file with StateFileWriter: key groups 0-7 of
// 1 KiB each (key group 3 in two parts, the second after key group 5),
// then one operator state entry; the tee gets a copy.
func (f *fixture) streamed(id int64, tee io.Writer) (SubtaskState, map[int][]byte) {
	f.t.Helper()
	w, err := f.st.CreateState(f.ctx, id, false, "win", 0, tee)
	if err != nil {
		f.t.Fatal(err)
	}
	want := map[int][]byte{}
	for kg := range 8 {
		b := bytes.Repeat([]byte{byte('a' + kg)}, 1024)
		if kg == 3 {
			w.AddKeyGroup(kg, b[:100])
			want[kg] = b
			continue
		}
		kw := w.KeyGroup(kg)
		kw.Write(b[:10])
		kw.Write(b[10:])
		want[kg] = b
		if kg == 5 {
			w.AddKeyGroup(3, want[3][100:])
		}
	}
	w.AddOperatorState([]byte("op"))
	st, err := w.Commit()
	if err != nil {
		f.t.Fatal(err)
	}
	return st, want
}

func TestStateFileWriterAndReader(t *testing.T) {
	f := newFixture(t)
	var tee bytes.Buffer
	st, want := f.streamed(1, &tee)
	md := &Metadata{JobName: "job", CheckpointID: 1, MaxParallelism: 8, Nodes: []NodeState{{NodeID: "win", Parallelism: 1, Subtasks: []SubtaskState{st}}}}
	dir, err := f.st.Commit(f.ctx, md)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(f.chk(1, st.File))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tee.Bytes(), data) || st.Size != int64(len(data)) || !st.SectionCRCs {
		t.Fatalf("tee %d bytes, file %d bytes, Size %d, SectionCRCs %v", tee.Len(), len(data), st.Size, st.SectionCRCs)
	}
	// The whole-file checksum is what older versions check.
	if got, err := f.st.ReadState(f.ctx, dir, st); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadState: %v", err)
	}
	var kgs []int
	for _, s := range st.KeyGroups {
		kgs = append(kgs, s.KeyGroup)
	}
	if !reflect.DeepEqual(kgs, []int{0, 1, 2, 3, 3, 4, 5, 6, 7}) {
		t.Fatalf("key group sections %v, want ascending with 3's parts in order", kgs)
	}

	// Read key groups 3 and 4 only: exactly their bytes are read.
	r, err := f.st.OpenState(f.ctx, dir, st)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var need int64
	for _, s := range st.KeyGroups {
		if s.KeyGroup != 3 && s.KeyGroup != 4 {
			continue
		}
		need += s.Length
	}
	got := map[int][]byte{}
	for _, s := range st.KeyGroups {
		if s.KeyGroup == 3 || s.KeyGroup == 4 {
			b, err := io.ReadAll(r.Section(s))
			if err != nil {
				t.Fatal(err)
			}
			got[s.KeyGroup] = append(got[s.KeyGroup], b...)
		}
	}
	if !bytes.Equal(got[3], want[3]) || !bytes.Equal(got[4], want[4]) {
		t.Errorf("key groups 3, 4 read back wrong")
	}
	if r.BytesRead() != need {
		t.Errorf("read %d bytes, want only the %d of key groups 3 and 4 (file: %d)", r.BytesRead(), need, st.Size)
	}
}

func TestStateReaderDetectsCorruptSection(t *testing.T) {
	f := newFixture(t)
	st, _ := f.streamed(1, nil)
	md := &Metadata{JobName: "job", CheckpointID: 1, MaxParallelism: 8, Nodes: []NodeState{{NodeID: "win", Parallelism: 1, Subtasks: []SubtaskState{st}}}}
	dir, err := f.st.Commit(f.ctx, md)
	if err != nil {
		t.Fatal(err)
	}
	kg6 := st.KeyGroups[7]
	flip(t, f.chk(1, st.File), int(kg6.Offset+kg6.Length-1)) // the last byte of key group 6
	r, err := f.st.OpenState(f.ctx, dir, st)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadAll(r.Section(st.KeyGroups[0])); err != nil {
		t.Errorf("key group 0 is intact, got %v", err)
	}
	b := make([]byte, kg6.Length)
	if n, err := io.ReadFull(r.Section(kg6), b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("corrupt key group 6: read %d bytes, err %v, want ErrCorrupt", n, err)
	}
	// A file of an older version has no section checksums: it is checked
	// whole when opened.
	old := st
	old.SectionCRCs = false
	if _, err := f.st.OpenState(f.ctx, dir, old); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "crc32c") {
		t.Errorf("OpenState of a corrupt file without section checksums: %v, want ErrCorrupt", err)
	}
	if _, err := f.st.Load(f.ctx, dir); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Load of a checkpoint with a corrupt state file: %v", err)
	}
}

// TestStateFileWriterAbort: nothing is left at the file's name.
func TestStateFileWriterAbort(t *testing.T) {
	f := newFixture(t)
	w, err := f.st.CreateState(f.ctx, 2, false, "win", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.AddKeyGroup(1, []byte("x"))
	w.Abort()
	es, _ := os.ReadDir(f.chk(2, ""))
	if len(es) != 0 {
		t.Errorf("left %v", es)
	}
	w, _ = f.st.CreateState(f.ctx, 3, false, "win", 0, nil)
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write outside a section succeeded")
	}
	if _, err := w.Commit(); err == nil {
		t.Error("Commit after a failed Write succeeded")
	}
}
