package framework_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/framework"
)

// A master paused after its fence check (a zombie) commits a checkpoint
// after a newer master took the job over from an older one: no restore
// may pick that checkpoint, and it cannot replace one the newer master
// committed under the same id.
func TestZombieCommitAfterTakeover(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ha, err := framework.OpenHA("file://" + filepath.Join(dir, "ha"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open("file://"+filepath.Join(dir, "checkpoints"), "")
	if err != nil {
		t.Fatal(err)
	}
	st.Log = quiet()
	st.SetLineage(ha.Lineage)
	commit := func(id, epoch int64) error {
		_, err := st.Commit(ctx, &checkpoint.Metadata{JobName: "j", CheckpointID: id, MaxParallelism: 8, Epoch: epoch})
		return err
	}
	latest := func() int64 {
		t.Helper()
		md, _, err := st.Latest(ctx)
		if err != nil || md == nil {
			t.Fatalf("latest: %v, %v", md, err)
		}
		return md.CheckpointID
	}

	old, err := ha.Claim(ctx, framework.MasterInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ha.RecordTakeover(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	for id := int64(1); id <= 2; id++ {
		if err := commit(id, old); err != nil {
			t.Fatal(err)
		}
	}
	// The old master passed its fence check for checkpoint 3 and paused;
	// the new one takes over from checkpoint 2.
	if err := ha.Fence(ctx, old); err != nil {
		t.Fatal(err)
	}
	cur, err := ha.Claim(ctx, framework.MasterInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if got := latest(); got != 2 {
		t.Fatalf("the new master resolves checkpoint %d, want 2", got)
	}
	if err := ha.RecordTakeover(ctx, cur, 2); err != nil {
		t.Fatal(err)
	}
	// The zombie's commit lands now.
	if err := commit(3, old); err != nil {
		t.Fatal(err)
	}
	if got := latest(); got != 2 {
		t.Fatalf("a restore now picks checkpoint %d, committed by the superseded master; want 2", got)
	}
	// The new master's own checkpoints count; the zombie cannot replace one.
	if err := commit(4, cur); err != nil {
		t.Fatal(err)
	}
	if err := commit(4, old); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("a second commit of checkpoint 4: %v, want ErrExist", err)
	}
	md, _, err := st.Latest(ctx)
	if err != nil || md.CheckpointID != 4 || md.Epoch != cur {
		t.Fatalf("latest: %+v, %v; want checkpoint 4 of epoch %d", md, err, cur)
	}
	// And one older than the takeover stays part of the job's history.
	if md, _, err := st.LatestBefore(ctx, 4, true); err != nil || md.CheckpointID != 2 {
		t.Fatalf("latest before 4: %+v, %v; want 2", md, err)
	}
}
