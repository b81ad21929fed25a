// Package jobtest plans job specs for tests that run whole jobs in-process
// (the connectors' tests): parse with overrides, plan, derive run options.
package jobtest

import (
	"strings"
	"sync"
	"testing"

	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// Plan parses a job spec (JSON) with --set style overrides and plans it;
// it fails the test on any error.
func Plan(t testing.TB, specJSON string, sets ...string) (*runtime.Graph, runtime.Options) {
	t.Helper()
	sj, err := spec.Parse([]byte(specJSON), sets)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	g, opts, err := plan.Prepare(sj)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return g, opts
}

// LockedWriter appends to B under a lock: a job's subtasks log from many
// goroutines, and the test reads B once the job has ended.
type LockedWriter struct {
	B *strings.Builder
}

var logMu sync.Mutex

func (w *LockedWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return w.B.Write(p)
}

// String reads B under the same lock, for a job still running.
func (w *LockedWriter) String() string {
	logMu.Lock()
	defer logMu.Unlock()
	return w.B.String()
}
