package spec

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRestartDefaults(t *testing.T) {
	jf := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		name string
		sets []string
		want Restart
	}{
		{"failure-rate", []string{"restart.strategy=failure-rate"}, Restart{Strategy: FailureRate,
			MaxFailuresPerInterval: 1, FailureRateInterval: Duration(time.Minute), Delay: Duration(time.Second)}},
		{"failure-rate set", []string{"restart.strategy=failure-rate", "restart.maxFailuresPerInterval=3", "restart.failureRateInterval=5m", "restart.delay=10s"},
			Restart{Strategy: FailureRate, MaxFailuresPerInterval: 3, FailureRateInterval: Duration(5 * time.Minute), Delay: Duration(10 * time.Second)}},
		{"exponential-delay", []string{"restart.strategy=exponential-delay"}, Restart{Strategy: ExponentialDelay,
			InitialBackoff: Duration(time.Second), MaxBackoff: Duration(time.Minute), BackoffMultiplier: 1.5,
			ResetBackoffThreshold: Duration(time.Hour), JitterFactor: jf(0.1)}},
		// jitterFactor 0 turns jitter off rather than taking the default;
		// a large initialBackoff raises the default maxBackoff with it.
		{"exponential-delay set", []string{"restart.strategy=exponential-delay", "restart.jitterFactor=0", "restart.initialBackoff=2m", "restart.attempts=5"},
			Restart{Strategy: ExponentialDelay, Attempts: 5, InitialBackoff: Duration(2 * time.Minute), MaxBackoff: Duration(2 * time.Minute),
				BackoffMultiplier: 1.5, ResetBackoffThreshold: Duration(time.Hour), JitterFactor: jf(0)}},
		// none ignores the other strategies' fields, so that an override
		// turns restarts off whatever the file says.
		{"none", []string{"restart.attempts=7", "restart.maxBackoff=1s", "restart.strategy=none"}, Restart{Strategy: NoRestart, Attempts: 7, MaxBackoff: Duration(time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := mustParse(t, base, tc.sets...)
			if !reflect.DeepEqual(j.Restart, tc.want) {
				t.Errorf("restart:\n got %+v\nwant %+v", j.Restart, tc.want)
			}
			// What the dispatcher stores parses back to the same job.
			b, err := json.Marshal(j)
			if err != nil {
				t.Fatal(err)
			}
			if again := mustParse(t, string(b)); !reflect.DeepEqual(again.Restart, j.Restart) {
				t.Errorf("round trip: %+v, want %+v", again.Restart, j.Restart)
			}
		})
	}
}

func TestHeartbeatAndSpares(t *testing.T) {
	j := mustParse(t, base, "heartbeat.interval=2s", "resources.spareTaskManagers=2")
	if j.Heartbeat != (Heartbeat{Interval: Duration(2 * time.Second), Timeout: Duration(8 * time.Second)}) {
		t.Errorf("heartbeat = %+v, want 2s and a timeout of 4 intervals", j.Heartbeat)
	}
	if j.Resources == nil || j.Resources.SpareTaskManagers != 2 {
		t.Errorf("resources = %+v", j.Resources)
	}
	j = mustParse(t, base, `resources.quota={"limit":{"cpus":4,"mem":8192}}`)
	if j.Resources == nil || j.Resources.Quota == nil || j.Resources.Quota.Limit == nil || *j.Resources.Quota.Limit != (QuotaLimit{CPUs: 4, MemMB: 8192}) {
		t.Errorf("resources = %+v", j.Resources)
	}
	j = mustParse(t, base, "heartbeat.timeout=30s")
	if j.Heartbeat != (Heartbeat{Interval: Duration(time.Second), Timeout: Duration(30 * time.Second)}) {
		t.Errorf("heartbeat = %+v", j.Heartbeat)
	}
}

func TestRestartMaxDelay(t *testing.T) {
	for _, tc := range []struct {
		sets []string
		want time.Duration
	}{
		{nil, time.Second},
		{[]string{"restart.strategy=none"}, 0},
		{[]string{"restart.strategy=failure-rate", "restart.delay=3s"}, 3 * time.Second},
		{[]string{"restart.strategy=exponential-delay", "restart.maxBackoff=10s"}, 11 * time.Second},
		{[]string{"restart.strategy=exponential-delay", "restart.maxBackoff=10s", "restart.jitterFactor=0"}, 10 * time.Second},
	} {
		j := mustParse(t, base, tc.sets...)
		if got := j.Restart.MaxDelay(); got != tc.want {
			t.Errorf("%v: MaxDelay = %v, want %v", tc.sets, got, tc.want)
		}
	}
}

// TestRestartErrors: bad restart, heartbeat and resources settings are
// refused, naming the field.
func TestRestartErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		sets []string
		want string
	}{
		{"strategy", []string{"restart.strategy=always"}, `restart.strategy: "always" is not one of fixed-delay, failure-rate, exponential-delay, none`},
		{"attempts negative", []string{"restart.strategy=exponential-delay", "restart.attempts=-1"}, "restart.attempts: must be ≥ 0, got -1"},
		{"max failures", []string{"restart.strategy=failure-rate", "restart.maxFailuresPerInterval=-1"}, "restart.maxFailuresPerInterval: must be ≥ 1, got -1"},
		{"max failures type", []string{"restart.strategy=failure-rate", "restart.maxFailuresPerInterval=1.5"}, "restart.maxFailuresPerInterval: want an integer"},
		{"interval negative", []string{"restart.strategy=failure-rate", "restart.failureRateInterval=-5"}, "restart.failureRateInterval: duration -5 is negative"},
		{"interval bad", []string{"restart.strategy=failure-rate", "restart.failureRateInterval=1 minute"}, `restart.failureRateInterval: bad duration "1 minute"`},
		{"max below initial", []string{"restart.strategy=exponential-delay", "restart.initialBackoff=10s", "restart.maxBackoff=5s"}, "restart.maxBackoff: 5s is less than restart.initialBackoff 10s"},
		{"multiplier", []string{"restart.strategy=exponential-delay", "restart.backoffMultiplier=0.5"}, "restart.backoffMultiplier: must be ≥ 1, got 0.5"},
		{"multiplier negative", []string{"restart.strategy=exponential-delay", "restart.backoffMultiplier=-2"}, "restart.backoffMultiplier: must be ≥ 1, got -2"},
		{"jitter high", []string{"restart.strategy=exponential-delay", "restart.jitterFactor=1.5"}, "restart.jitterFactor: must be between 0 and 1, got 1.5"},
		{"jitter negative", []string{"restart.strategy=exponential-delay", "restart.jitterFactor=-0.1"}, "restart.jitterFactor: must be between 0 and 1, got -0.1"},
		{"jitter type", []string{"restart.strategy=exponential-delay", "restart.jitterFactor=lots"}, `restart.jitterFactor: want a number, got string "lots"`},
		{"fixed-delay field on failure-rate", []string{"restart.strategy=failure-rate", "restart.attempts=5"}, "restart.attempts: only with strategy fixed-delay or exponential-delay (strategy is failure-rate)"},
		{"exponential field on fixed-delay", []string{"restart.maxBackoff=5s"}, "restart.maxBackoff: only with strategy exponential-delay (strategy is fixed-delay)"},
		{"failure-rate field on exponential", []string{"restart.strategy=exponential-delay", "restart.failureRateInterval=5s"}, "restart.failureRateInterval: only with strategy failure-rate (strategy is exponential-delay)"},
		{"delay on exponential", []string{"restart.strategy=exponential-delay", "restart.delay=5s"}, "restart.delay: only with strategy fixed-delay or failure-rate (strategy is exponential-delay)"},
		{"jitter on fixed-delay", []string{"restart.jitterFactor=0"}, "restart.jitterFactor: only with strategy exponential-delay"},
		{"restart unknown", []string{"restart.maxFailures=3"}, `restart: unknown field "maxFailures"`},
		{"heartbeat timeout", []string{"heartbeat.interval=5s", "heartbeat.timeout=5s"}, "heartbeat.timeout: 5s must exceed heartbeat.interval 5s"},
		{"heartbeat default timeout", []string{"heartbeat.timeout=500ms"}, "heartbeat.timeout: 500ms must exceed heartbeat.interval 1s"},
		{"heartbeat unknown", []string{"heartbeat.period=1s"}, `heartbeat: unknown field "period"`},
		{"heartbeat negative", []string{"heartbeat.interval=-1"}, "heartbeat.interval: duration -1 is negative"},
		{"spares", []string{"resources.spareTaskManagers=-1"}, "resources.spareTaskManagers: must be ≥ 0, got -1"},
		{"spares type", []string{"resources.spareTaskManagers=two"}, `resources.spareTaskManagers: want an integer, got string "two"`},
		{"quota limit negative", []string{`resources.quota={"limit":{"cpus":-1}}`}, "resources.quota.limit.cpus: must be a number ≥ 0, got -1"},
		{"quota limit empty", []string{`resources.quota={"limit":{}}`}, "resources.quota.limit: give at least one of cpus, mem, disk"},
		{"quota limit unknown", []string{`resources.quota={"limit":{"gpus":1}}`}, `unknown field "gpus"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(base), tc.sets)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant one containing %q", err, tc.want)
			}
		})
	}
}
