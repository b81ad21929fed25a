package runtime_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// step is one failure: at is its time since the first one; a step wants
// either the delay or a refusal containing refuse.
type step struct {
	at     time.Duration
	delay  time.Duration
	refuse string
}

// replay feeds the failures of steps to a new strategy of r on a fake
// clock and checks each answer.
func replay(t *testing.T, r runtime.Restart, steps []step) {
	t.Helper()
	s := r.NewStrategy()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, st := range steps {
		delay, err := s.Failed(start.Add(st.at))
		if st.refuse != "" {
			var refused *runtime.RestartRefusedError
			if !errors.As(err, &refused) || !strings.Contains(err.Error(), st.refuse) {
				t.Fatalf("failure %d at %v: delay %v, err %v; want a refusal containing %q", i, st.at, delay, err, st.refuse)
			}
			continue
		}
		if err != nil || delay != st.delay {
			t.Fatalf("failure %d at %v: delay %v, err %v; want delay %v", i, st.at, delay, err, st.delay)
		}
	}
}

func TestRestartStrategies(t *testing.T) {
	// fixed returns the same sequence of random numbers each time.
	fixed := func(vs ...float64) func() float64 {
		i := 0
		return func() float64 { v := vs[i%len(vs)]; i++; return v }
	}
	exp := runtime.ExponentialDelay{InitialBackoff: time.Second, MaxBackoff: 10 * time.Second, Multiplier: 2, ResetThreshold: time.Minute}
	for _, tc := range []struct {
		name  string
		r     runtime.Restart
		steps []step
	}{
		{"none", runtime.NoRestart{}, []step{{at: 0, refuse: "none: restarts are off"}}},
		{"fixed-delay", runtime.FixedDelay{Attempts: 2, Delay: 3 * time.Second}, []step{
			{at: 0, delay: 3 * time.Second},
			{at: time.Hour, delay: 3 * time.Second},
			// attempts count over the whole run, however far apart
			{at: 48 * time.Hour, refuse: "fixed-delay: restarted 2 times, all of its 2 attempts"},
		}},
		{"fixed-delay no attempts", runtime.FixedDelay{}, []step{{at: 0, refuse: "fixed-delay: restarted 0 times"}}},
		{"failure-rate burst", runtime.FailureRate{MaxFailures: 3, Interval: time.Minute, Delay: time.Second}, []step{
			{at: 0, delay: time.Second},
			{at: 10 * time.Second, delay: time.Second},
			{at: 20 * time.Second, delay: time.Second},
			{at: 30 * time.Second, refuse: "failure-rate: 4 failures within 1m0s, more than the 3 allowed"},
		}},
		{"failure-rate spread", runtime.FailureRate{MaxFailures: 2, Interval: time.Minute, Delay: 5 * time.Second}, []step{
			{at: 0, delay: 5 * time.Second},
			{at: 30 * time.Second, delay: 5 * time.Second},
			// the failure at 0 is a minute old: out of the window
			{at: time.Minute, delay: 5 * time.Second},
			{at: 2*time.Minute + 30*time.Second, delay: 5 * time.Second},
			{at: 3 * time.Minute, delay: 5 * time.Second},
			{at: 3*time.Minute + time.Second, refuse: "3 failures within 1m0s, more than the 2 allowed"},
		}},
		{"failure-rate one", runtime.FailureRate{MaxFailures: 1, Interval: time.Minute, Delay: time.Second}, []step{
			{at: 0, delay: time.Second},
			{at: 59 * time.Second, refuse: "2 failures within 1m0s"},
		}},
		{"exponential grows to the max", exp, []step{
			{at: 0, delay: time.Second},
			{at: 2 * time.Second, delay: 2 * time.Second},
			{at: 5 * time.Second, delay: 4 * time.Second},
			{at: 10 * time.Second, delay: 8 * time.Second},
			{at: 20 * time.Second, delay: 10 * time.Second},
			{at: 31 * time.Second, delay: 10 * time.Second},
		}},
		{"exponential resets after a stable run", exp, []step{
			{at: 0, delay: time.Second},
			{at: 2 * time.Second, delay: 2 * time.Second},
			// restarted at 4s; up 59s: not yet stable
			{at: 63 * time.Second, delay: 4 * time.Second},
			// restarted at 67s; up a minute: the backoff starts again
			{at: 127 * time.Second, delay: time.Second},
			{at: 129 * time.Second, delay: 2 * time.Second},
		}},
		{"exponential attempts", runtime.ExponentialDelay{InitialBackoff: time.Second, MaxBackoff: time.Minute, Multiplier: 1.5, ResetThreshold: time.Hour, Attempts: 2}, []step{
			{at: 0, delay: time.Second},
			{at: 10 * time.Second, delay: 1500 * time.Millisecond},
			{at: 20 * time.Second, refuse: "exponential-delay: restarted 2 times (all of its 2 attempts) and no run lasted the 1h0m0s that resets the backoff"},
		}},
		{"exponential attempts reset", runtime.ExponentialDelay{InitialBackoff: time.Second, MaxBackoff: time.Minute, Multiplier: 2, ResetThreshold: time.Minute, Attempts: 1}, []step{
			{at: 0, delay: time.Second},
			{at: 2 * time.Minute, delay: time.Second},
			{at: 2*time.Minute + 2*time.Second, refuse: "restarted once (all of its 1 attempts)"},
		}},
		{"exponential jitter", runtime.ExponentialDelay{InitialBackoff: 10 * time.Second, MaxBackoff: time.Minute, Multiplier: 2, ResetThreshold: time.Hour, Jitter: 0.1,
			Rand: fixed(0, 0.5, 0.75, 0.999999999)}, []step{
			{at: 0, delay: 9 * time.Second},                // 10s - 10%
			{at: time.Minute, delay: 20 * time.Second},     // 20s ± 0
			{at: 2 * time.Minute, delay: 42 * time.Second}, // 40s + 5%
			{at: 3 * time.Minute, delay: 65999999988},      // just under 60s + 10%
			{at: 4 * time.Minute, delay: 54 * time.Second}, // max, - 10%
		}},
		{"exponential huge multiplier", runtime.ExponentialDelay{InitialBackoff: time.Hour, MaxBackoff: 1 << 62, Multiplier: 1e30, ResetThreshold: 1 << 62}, []step{
			{at: 0, delay: time.Hour},
			{at: 2 * time.Hour, delay: 1 << 62},
			{at: 3 * time.Hour, delay: 1 << 62},
		}},
		{"exponential zero backoff", runtime.ExponentialDelay{Multiplier: 2, ResetThreshold: time.Hour}, []step{
			{at: 0, delay: 0},
			{at: time.Second, delay: 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { replay(t, tc.r, tc.steps) })
	}
}

// Each run gets its own state: a strategy of a Restart reused for a second
// run starts afresh.
func TestRestartStrategyPerRun(t *testing.T) {
	r := runtime.FixedDelay{Attempts: 1, Delay: time.Second}
	replay(t, r, []step{{at: 0, delay: time.Second}, {at: time.Second, refuse: "fixed-delay"}})
	replay(t, r, []step{{at: 0, delay: time.Second}})
}

// Jitter drawn from the default random source stays within its bounds.
func TestExponentialJitterBounds(t *testing.T) {
	s := runtime.ExponentialDelay{InitialBackoff: time.Second, MaxBackoff: time.Second, Multiplier: 2, ResetThreshold: time.Hour, Jitter: 0.5}.NewStrategy()
	now := time.Now()
	for i := range 1000 {
		d, err := s.Failed(now.Add(time.Duration(i) * time.Minute))
		if err != nil || d < 500*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("delay %v, err %v; want 0.5s to 1.5s", d, err)
		}
	}
}
