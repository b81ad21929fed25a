package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

type windowKey struct{ key, start int64 }
type windowAgg struct{ count, sum int64 }

// expectedWindows computes the exactly-once job's result straight from the
// sequence: a 1 s tumbling window per key with count and sum of id.
func expectedWindows(rows, keys, interval int64) map[windowKey]windowAgg {
	want := map[windowKey]windowAgg{}
	for id := int64(0); id < rows; id++ {
		k := windowKey{id % keys, id * interval / 1000 * 1000}
		a := want[k]
		a.count++
		a.sum += id
		want[k] = a
	}
	return want
}

// committedWindows reads every committed part file (not the in-progress
// ".part-…" ones) and fails on a (key, window) seen twice.
func committedWindows(t *testing.T, dir string) map[windowKey]windowAgg {
	t.Helper()
	got := map[windowKey]windowAgg{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "part-") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		addWindows(t, e.Name(), data, got, true)
	}
	return got
}

// addWindows adds the window results of one part file (JSON lines) to got,
// failing on a bad line or a (key, window) seen twice; oneSecond also checks
// that every window is 1 s long.
func addWindows(t *testing.T, file string, data []byte, got map[windowKey]windowAgg, oneSecond bool) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var r struct {
			Key         int64 `json:"key"`
			WindowStart int64 `json:"window_start"`
			WindowEnd   int64 `json:"window_end"`
			Count       int64 `json:"count"`
			Sum         int64 `json:"sum"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: bad line %q: %v", file, sc.Text(), err)
		}
		if oneSecond && r.WindowEnd != r.WindowStart+1000 {
			t.Fatalf("%s: window [%d, %d) is not 1 s", file, r.WindowStart, r.WindowEnd)
		}
		k := windowKey{r.Key, r.WindowStart}
		if prev, dup := got[k]; dup {
			t.Fatalf("key %d window %d emitted twice: %+v and %+v (file %s)", r.Key, r.WindowStart, prev, r, file)
		}
		got[k] = windowAgg{r.Count, r.Sum}
	}
}

func compareWindows(t *testing.T, got, want map[windowKey]windowAgg) {
	t.Helper()
	bad := 0
	for k, w := range want {
		if g, ok := got[k]; !ok {
			if bad++; bad <= 5 {
				t.Errorf("missing key %d window %d (want %+v)", k.key, k.start, w)
			}
		} else if g != w {
			if bad++; bad <= 5 {
				t.Errorf("key %d window %d: got %+v, want %+v", k.key, k.start, g, w)
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			if bad++; bad <= 5 {
				t.Errorf("unexpected key %d window %d", k.key, k.start)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d windows wrong", bad, len(want))
	}
}

// runCrashTest runs examples/exactly-once.json as a separate process, kills
// it with SIGKILL at random moments, restarts it with --restore latest each
// time (with the parallelism parallelisms[i] on run i), and checks the
// committed output once the job has finished. extra are more sluice run
// arguments (they come after the defaults, so --set overrides win).
// incrementalRe matches the debug log of a checkpoint that builds on
// earlier ones.
var incrementalRe = regexp.MustCompile(`checkpoint complete.* builds_on=[1-9]`)

// runCrashTest returns the stderr of every run.
func runCrashTest(t *testing.T, kills int, parallelisms []int, extra ...string) string {
	var logs strings.Builder
	const rows, keys = 200_000, 100
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	base := []string{"run",
		"--set", "nodes.out.params.path=" + out,
		"--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints"),
		"--set", fmt.Sprintf("nodes.src.params.rows=%d", rows),
		"--set", fmt.Sprintf("nodes.src.params.keys=%d", keys),
		"--set", "nodes.src.params.rate=60000",
		"--set", "checkpoint.interval=150ms",
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for run := 0; ; run++ {
		args := append([]string{}, base...)
		if run > 0 {
			args = append(args, "--restore", "latest")
		}
		if len(parallelisms) > 0 {
			args = append(args, "--set", fmt.Sprintf("parallelism=%d", parallelisms[run%len(parallelisms)]))
		}
		args = append(args, extra...)
		args = append(args, repoFile(t, "examples/exactly-once.json"))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, sluiceBin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		if run < kills {
			time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			err := cmd.Wait()
			cancel()
			t.Logf("run %d killed (%v); stderr tail: %s", run, err, tail(stderr.String(), 300))
			logs.WriteString(stderr.String())
			continue
		}
		err := cmd.Wait()
		cancel()
		if err != nil {
			t.Fatalf("final run failed: %v\n%s", err, stderr.String())
		}
		t.Logf("final run: %s", tail(stderr.String(), 600))
		logs.WriteString(stderr.String())
		break
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
	return logs.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func TestCrashExactlyOnce(t *testing.T) {
	runCrashTest(t, 4, nil)
}

func TestCrashExactlyOnceRescale(t *testing.T) {
	runCrashTest(t, 4, []int{2, 3, 1, 4, 2})
}
