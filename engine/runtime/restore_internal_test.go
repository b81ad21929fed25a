package runtime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/state"
)

// TestRestoreReadsOnlyItsSections: a subtask restoring a quarter of the key
// groups of one old file reads those sections and the operator state, not
// the file; a corrupt byte in a section it does not need does not matter,
// one in a section it reads fails the restore as corrupt.
func TestRestoreReadsOnlyItsSections(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := checkpoint.Open("file://"+filepath.ToSlash(dir), "")
	if err != nil {
		t.Fatal(err)
	}
	const maxPar = 16
	w, err := st.CreateState(ctx, 1, false, "op", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for kg := range maxPar {
		w.AddKeyGroup(kg, bytes.Repeat([]byte{byte(kg)}, 1000+kg))
	}
	w.AddOperatorState([]byte("watermark"))
	sub, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	md := &checkpoint.Metadata{JobName: "j", CheckpointID: 1, MaxParallelism: maxPar,
		Nodes: []checkpoint.NodeState{{NodeID: "op", Parallelism: 1, Subtasks: []checkpoint.SubtaskState{sub}}}}
	chk, err := st.Commit(ctx, md)
	if err != nil {
		t.Fatal(err)
	}
	restore := func(kgs state.KeyGroupRange) (*RestoreStats, map[int][]byte, error) {
		stats := &RestoreStats{}
		rr := &restoreReader{st: st, md: md, dir: chk, local: localRecovery{log: slog.Default()}, stats: stats}
		r, err := rr.restoredFor(ctx, "op", 0, kgs)
		if err != nil {
			return stats, nil, err
		}
		if len(r.OperatorState) != 1 || string(r.OperatorState[0]) != "watermark" {
			t.Errorf("operator state %q", r.OperatorState)
		}
		got := map[int][]byte{}
		err = r.Keyed(func(s KeyedState) error {
			b, err := io.ReadAll(s.R)
			if err == nil && (int64(len(b)) != s.Size || s.Delta != 0) {
				t.Errorf("key group %d: %d bytes, Size %d, Delta %d", s.KeyGroup, len(b), s.Size, s.Delta)
			}
			got[s.KeyGroup] = b
			return err
		})
		return stats, got, err
	}
	kgs := state.RangeForSubtask(1, maxPar, 4) // key groups 4-7
	stats, got, err := restore(kgs)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(len("watermark"))
	for kg := kgs.Start; kg < kgs.End; kg++ {
		if !bytes.Equal(got[kg], bytes.Repeat([]byte{byte(kg)}, 1000+kg)) {
			t.Errorf("key group %d restored wrong", kg)
		}
		want += int64(1000 + kg)
	}
	if len(got) != kgs.End-kgs.Start {
		t.Errorf("restored key groups %d, want %d", len(got), kgs.End-kgs.Start)
	}
	if n := stats.RemoteBytes.Load(); n != want {
		t.Errorf("read %d bytes, want %d (its sections; the file has %d)", n, want, sub.Size)
	}

	// Corrupt key group 0 (not this subtask's): the restore does not read it.
	file := filepath.Join(dir, "chk-1", sub.File)
	data, _ := os.ReadFile(file)
	data[sub.KeyGroups[0].Offset] ^= 1
	os.WriteFile(file, data, 0o644)
	if _, _, err := restore(kgs); err != nil {
		t.Errorf("restore of key groups 4-7 with key group 0 corrupt: %v", err)
	}
	if _, _, err := restore(state.RangeForSubtask(0, maxPar, 4)); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Errorf("restore of key groups 0-3 with key group 0 corrupt: %v, want ErrCorrupt", err)
	}
}
