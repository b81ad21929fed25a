package main

import (
	"path/filepath"
	"testing"
)

// TestCrashExactlyOnceBadger is the crash test with the window's keyed
// state in badger (stateBackend: badger) under a local directory of the
// test's own: SIGKILLs, restores from the latest checkpoint (badger state
// rebuilt from the snapshot), rescaling between runs; the committed output
// must still be exactly once.
func TestCrashExactlyOnceBadger(t *testing.T) {
	runCrashTest(t, 4, []int{2, 3, 1},
		"--set", "stateBackend=badger",
		"--local-dir", filepath.Join(t.TempDir(), "local"))
}
