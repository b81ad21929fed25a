package main

import (
	"strings"
	"testing"
)

// TestRestoreWithOtherMaxParallelism: sluice run refuses to restore a
// checkpoint taken with another maxParallelism, naming both values and the
// checkpoint, and exits 1 without writing anything.
func TestRestoreWithOtherMaxParallelism(t *testing.T) {
	j := newSavepointJob(t)
	j.rows = 5_000
	if code := startSluice(t, j.args(t, 0)...).wait(); code != 0 {
		t.Fatalf("first run exited %d", code)
	}
	before := completedCheckpoints(t, j.checkpoints)
	r := startSluice(t, j.args(t, 0, "--restore", "latest", "--set", "maxParallelism=64")...)
	if code := r.wait(); code != 1 {
		t.Fatalf("restore with maxParallelism 64 exited %d, want 1:\n%s", code, r.stderr.String())
	}
	for _, want := range []string{"maxParallelism 128", "maxParallelism 64", "file://" + j.checkpoints + "/chk-"} {
		if !strings.Contains(r.stderr.String(), want) {
			t.Errorf("stderr does not name %q:\n%s", want, r.stderr.String())
		}
	}
	if after := completedCheckpoints(t, j.checkpoints); len(after) != len(before) {
		t.Errorf("checkpoints %v became %v: the refused run wrote one", before, after)
	}
}
