package plan_test

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// TestOptionsRestart: each strategy of the spec becomes the runtime's.
func TestOptionsRestart(t *testing.T) {
	const job = `{"name": "r", "checkpoint": {"storage": "file:///tmp/sluice-test/r"}, "nodes": [{"id": "src", "type": "sequence"}, {"id": "out", "type": "discard", "inputs": ["src"]}]}`
	for _, tc := range []struct {
		sets []string
		want runtime.Restart
	}{
		{nil, runtime.FixedDelay{Attempts: 3, Delay: time.Second}},
		{[]string{"restart.strategy=none"}, runtime.NoRestart{}},
		{[]string{"restart.strategy=failure-rate", "restart.maxFailuresPerInterval=4", "restart.failureRateInterval=10m", "restart.delay=2s"},
			runtime.FailureRate{MaxFailures: 4, Interval: 10 * time.Minute, Delay: 2 * time.Second}},
		{[]string{"restart.strategy=exponential-delay"}, runtime.ExponentialDelay{InitialBackoff: time.Second, MaxBackoff: time.Minute,
			Multiplier: 1.5, ResetThreshold: time.Hour, Jitter: 0.1}},
		{[]string{"restart.strategy=exponential-delay", "restart.initialBackoff=10ms", "restart.maxBackoff=1s", "restart.backoffMultiplier=3",
			"restart.resetBackoffThreshold=5m", "restart.jitterFactor=0", "restart.attempts=6"},
			runtime.ExponentialDelay{InitialBackoff: 10 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 3, ResetThreshold: 5 * time.Minute, Attempts: 6}},
	} {
		j, err := spec.Parse([]byte(job), tc.sets)
		if err != nil {
			t.Fatal(err)
		}
		o, err := plan.Options(j)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(o.Restart, tc.want) {
			t.Errorf("%v: Restart = %#v, want %#v", tc.sets, o.Restart, tc.want)
		}
	}
}

// strategyJob is restartJob with the restart settings given as JSON.
func strategyJob(t *testing.T, restart string, failTimes int, afterCheckpoint bool) *testJob {
	failures.Store(t.Name(), new(atomic.Int64))
	return newJob(t, fmt.Sprintf(`{"name": "strategies", "parallelism": 2,
		"checkpoint": {"interval": "10ms"},
		"restart": %s,
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": 20000, "keys": 20, "rate": 40000}},
		{"id": "f", "type": "failing", "inputs": ["src"], "params": {"after": 3000, "afterCheckpoint": %t, "times": %d, "flag": %q}},
		`+windowNode+`,
		{"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}}]}`, restart, afterCheckpoint, failTimes, t.Name(), "f"))
}

// TestFailureRateGivesUp: a node that fails at every attempt fails the job
// at the failure that makes one more than maxFailuresPerInterval within
// the interval, and the error says that the failure-rate strategy gave up
// and why.
func TestFailureRateGivesUp(t *testing.T) {
	// An hour: all the failures of the test fall within it.
	j := strategyJob(t, `{"strategy": "failure-rate", "maxFailuresPerInterval": 2, "failureRateInterval": "1h", "delay": "1ms"}`, 1000, false)
	res, err := j.run(t)
	var refused *runtime.RestartRefusedError
	if !errors.Is(err, runtime.ErrJobFailed) || !errors.As(err, &refused) || refused.Strategy != runtime.RestartFailureRate {
		t.Fatalf("err = %v, want a job failure refused by the failure-rate strategy", err)
	}
	t.Log(err)
	for _, want := range []string{"after 2 restarts", "failure-rate: 3 failures within 1h0m0s, more than the 2 allowed", "injected failure 3 of 1000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to say %q", err, want)
		}
	}
	if res.Restarts != 2 {
		t.Errorf("restarts = %d, want 2", res.Restarts)
	}
}

// TestExponentialDelayRecovers: a node that fails twice is restarted from
// the latest checkpoint after the backoffs the spec sets (the initial one,
// then multiplied, each within the jitter), and the output is exactly once.
func TestExponentialDelayRecovers(t *testing.T) {
	j := strategyJob(t, `{"strategy": "exponential-delay", "initialBackoff": "10ms", "maxBackoff": "1s",
		"backoffMultiplier": 3, "jitterFactor": 0.2, "attempts": 2}`, 2, true)
	var mu sync.Mutex
	var delays []time.Duration
	j.hook = func(r slog.Record) {
		if !strings.HasPrefix(r.Message, "job failed; restarting") {
			return
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "delay" {
				mu.Lock()
				delays = append(delays, a.Value.Duration())
				mu.Unlock()
			}
			return true
		})
	}
	restores := j.countRestores()
	res := j.mustRun(t)
	if res.Restarts != 2 {
		t.Errorf("restarts = %d, want 2", res.Restarts)
	}
	if n := restores.Load(); n != 2 {
		t.Errorf("restored from a checkpoint %d times, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(delays) != 2 {
		t.Fatalf("restart delays logged: %v, want 2", delays)
	}
	for i, backoff := range []time.Duration{10 * time.Millisecond, 30 * time.Millisecond} {
		if lo, hi := backoff*8/10, backoff*12/10; delays[i] < lo || delays[i] > hi {
			t.Errorf("delay %d = %v, want %v ± 20%%", i+1, delays[i], backoff)
		}
	}
	checkWindows(t, j.readOut(t, "out"), windows(sequence(20000, 20, 0, 1)))
}
