package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/internal/jobtest"
	"github.com/sluice-stream/sluice/internal/nexmark"
)

// nexmarkEvents is how many events each query test generates: a few
// hundred thousand, so that windows of 10 s (20 s of event time at the
// default clock) have several instances, while the race-built binary runs
// each case in a few seconds.
const nexmarkEvents = 200_000

// TestNexmarkQueries runs every runnable Nexmark query
// (examples/nexmark/<q>.json, internal/nexmark.Queries with Runnable set)
// through the binary and compares its file sink's output, line for line,
// with the query's reference answer over the same events: at parallelism
// 1; and at parallelism 2, killed with SIGKILL once a checkpoint has
// completed and committed rows, and restored at parallelism 3
// (exactly-once: the committed part files hold each row once). A query
// becomes part of the test by getting its spec and its Runnable flag.
func TestNexmarkQueries(t *testing.T) {
	for _, q := range nexmark.Queries {
		specFile := repoFile(t, "examples/nexmark/"+q.Name+".json")
		_, err := os.Stat(specFile)
		if exists := err == nil; exists != q.Runnable {
			t.Errorf("%s: Runnable is %v but %s exists: %v", q.Name, q.Runnable, specFile, exists)
			continue
		}
		if !q.Runnable {
			continue
		}
		t.Run(q.Name, func(t *testing.T) {
			var sets []string
			for _, id := range nexmarkSources(t, specFile) {
				sets = append(sets, fmt.Sprintf("nodes.%s.params.events=%d", id, nexmarkEvents))
			}
			// The reference is computed while the first run goes on.
			type answer struct {
				lines []string
				err   error
			}
			ref := make(chan answer, 1)
			go func() {
				lines, err := nexmarkReference(q, specFile, sets)
				ref <- answer{lines, err}
			}()
			var want *answer
			reference := func(t *testing.T) []string {
				t.Helper()
				if want == nil {
					a := <-ref
					want = &a
				}
				if want.err != nil {
					t.Fatal(want.err)
				}
				if len(want.lines) == 0 {
					t.Fatal("the reference answer is empty: the test would prove nothing")
				}
				return want.lines
			}
			t.Run("p1", func(t *testing.T) {
				got := runNexmark(t, specFile, append(sets, "parallelism=1"), false, 0)
				compareLines(t, got, reference(t))
			})
			t.Run("p2-kill-restore-p3", func(t *testing.T) {
				got := runNexmark(t, specFile, append(sets, "parallelism=2"), true, 3)
				compareLines(t, got, reference(t))
			})
		})
	}
}

// nexmarkSources lists the ids of a spec's nexmark sources.
func nexmarkSources(t *testing.T, specFile string) []string {
	t.Helper()
	job, err := spec.ParseFile(specFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range job.Nodes {
		if n.Type == "nexmark" {
			ids = append(ids, n.ID)
		}
	}
	if len(ids) == 0 {
		t.Fatalf("%s has no nexmark source", specFile)
	}
	return ids
}

// nexmarkReference computes q's answer over the events of the spec's
// nexmark sources (after sets); they must all have the same generator
// params, so that they see one stream of events.
func nexmarkReference(q *nexmark.Query, specFile string, sets []string) ([]string, error) {
	job, err := spec.ParseFile(specFile, sets)
	if err != nil {
		return nil, err
	}
	var gen *nodes.NexmarkParams
	var genText string
	for i := range job.Nodes {
		n := &job.Nodes[i]
		if n.Type != "nexmark" {
			continue
		}
		var p nodes.NexmarkParams
		if err := (&nodes.PlanContext{Node: n}).Params(&p); err != nil {
			return nil, fmt.Errorf("node %s: %w", n.ID, err)
		}
		text := fmt.Sprintf("%+v", p.Params)
		if gen != nil && text != genText {
			return nil, fmt.Errorf("node %s: generator params %s differ from another source's %s", n.ID, text, genText)
		}
		gen, genText = &p, text
	}
	if gen == nil {
		return nil, fmt.Errorf("%s has no nexmark source", specFile)
	}
	res, err := q.Run(gen.Params)
	if err != nil {
		return nil, err
	}
	return res.Lines, nil
}

// runNexmark runs a query's spec to its end and returns the rows its file
// sink committed, in canonical order. With kill, the first run is
// rate-limited, killed with SIGKILL once a checkpoint has completed and
// committed rows, and the job is restored from the latest checkpoint
// (--restore latest) at parallelism restorePar.
func runNexmark(t *testing.T, specFile string, sets []string, kill bool, restorePar int) []string {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	args := []string{"run", "--log-level", "debug",
		"--set", "nodes.out.params.path=" + out,
		"--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints"),
		"--set", "checkpoint.interval=200ms"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if kill {
		// Slow enough that the job is still running after its first
		// checkpoint, on a fast machine or a loaded one: the kill comes
		// after that checkpoint, so the slowness costs nothing, and the
		// restored run goes at full speed.
		a := slices.Clone(args)
		for _, id := range nexmarkSources(t, specFile) {
			a = append(a, "--set", fmt.Sprintf("nodes.%s.params.rate=%d", id, nexmarkEvents/10))
		}
		a = append(a, specFile)
		cmd := exec.CommandContext(ctx, sluiceBin, a...)
		stderr := newWatchWriter("checkpoint complete")
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-stderr.seen[0]:
		case err := <-exited:
			t.Fatalf("the job ended (%v) before a checkpoint completed:\n%s", err, stderr.String())
		case <-ctx.Done():
			t.Fatalf("no checkpoint completed:\n%s", stderr.String())
		}
		// Kill once some rows are committed, so that the restored run has
		// committed rows not to repeat.
		for committed := 0; committed == 0; {
			select {
			case err := <-exited:
				t.Fatalf("the job ended (%v) before it was killed: raise the events or lower the rate\n%s", err, tail(stderr.String(), 2000))
			case <-ctx.Done():
				t.Fatalf("no rows committed:\n%s", tail(stderr.String(), 2000))
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := os.Stat(out); err == nil {
				committed = len(committedLines(t, out))
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := <-exited
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("the job was not killed mid-run (%v): raise the events or lower the rate\n%s", err, tail(stderr.String(), 2000))
		}
		t.Logf("killed with %d rows committed", len(committedLines(t, out)))
		args = append(args, "--restore", "latest", "--set", fmt.Sprintf("parallelism=%d", restorePar))
	}
	cmd := exec.CommandContext(ctx, sluiceBin, append(args, specFile)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v\n%s", err, tail(stderr.String(), 3000))
	}
	if kill && !strings.Contains(stderr.String(), "state restored") {
		t.Fatalf("the second run did not restore a checkpoint:\n%s", tail(stderr.String(), 3000))
	}
	return committedLines(t, out)
}

// committedLines reads every committed part file of a file sink's
// directory, in canonical order.
func committedLines(t *testing.T, dir string) []string {
	t.Helper()
	lines := jobtest.CommittedLines(t, dir)
	nexmark.SortLines(lines)
	return lines
}

// compareLines fails with the first few differences between two sorted
// lists of lines.
func compareLines(t *testing.T, got, want []string) {
	t.Helper()
	var diffs []string
	i, j := 0, 0
	for (i < len(got) || j < len(want)) && len(diffs) < 5 {
		switch {
		case j >= len(want) || (i < len(got) && got[i] < want[j]):
			diffs = append(diffs, "unexpected: "+got[i])
			i++
		case i >= len(got) || want[j] < got[i]:
			diffs = append(diffs, "missing:    "+want[j])
			j++
		default:
			i++
			j++
		}
	}
	if len(diffs) > 0 || len(got) != len(want) {
		t.Fatalf("%d rows, want %d; first differences:\n%s", len(got), len(want), strings.Join(diffs, "\n"))
	}
	t.Logf("%d rows, all as the reference", len(got))
}
