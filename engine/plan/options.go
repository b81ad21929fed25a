package plan

import (
	"fmt"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// Options derives the runtime's options from the job's checkpoint and
// restart settings, opening the checkpoint storage.
func Options(j *spec.Job) (runtime.Options, error) {
	cp := j.Checkpoint
	st, err := checkpoint.Open(cp.Storage, cp.Savepoints, checkpoint.WithEntropy(cp.EntropyKey, cp.EntropyLength))
	if err != nil {
		return runtime.Options{}, fmt.Errorf("checkpoint.storage: %w", err)
	}
	o := runtime.Options{
		Storage:           st,
		Interval:          cp.Interval.D(),
		Timeout:           cp.Timeout.D(),
		MinPause:          cp.MinPause.D(),
		Retained:          cp.Retained,
		TolerableFailures: cp.TolerableFailures,
		LocalRecovery:     cp.LocalRecovery,
		Incremental:       cp.Incremental,
	}
	if o.Retained < 1 {
		o.Retained = 1
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	o.Restart = restart(j.Restart)
	if f, ok := o.Restart.(runtime.FixedDelay); ok {
		o.RestartAttempts, o.RestartDelay = f.Attempts, f.Delay
	}
	return o, nil
}

// restart maps the job's defaulted restart settings to the runtime's
// strategy.
func restart(r spec.Restart) runtime.Restart {
	switch r.Strategy {
	case spec.NoRestart:
		return runtime.NoRestart{}
	case spec.FailureRate:
		return runtime.FailureRate{MaxFailures: r.MaxFailuresPerInterval, Interval: r.FailureRateInterval.D(), Delay: r.Delay.D()}
	case spec.ExponentialDelay:
		jitter := spec.DefaultJitterFactor
		if r.JitterFactor != nil {
			jitter = *r.JitterFactor
		}
		return runtime.ExponentialDelay{
			InitialBackoff: r.InitialBackoff.D(),
			MaxBackoff:     r.MaxBackoff.D(),
			Multiplier:     r.BackoffMultiplier,
			ResetThreshold: r.ResetBackoffThreshold.D(),
			Jitter:         jitter,
			Attempts:       r.Attempts,
		}
	}
	return runtime.FixedDelay{Attempts: r.Attempts, Delay: r.Delay.D()}
}

// Prepare plans a parsed job and derives its run options: what every
// runner of a spec (sluice run, tests, benchmarks) does before runtime.Run.
func Prepare(j *spec.Job) (*runtime.Graph, runtime.Options, error) {
	g, err := Build(j)
	if err != nil {
		return nil, runtime.Options{}, err
	}
	opts, err := Options(j)
	if err != nil {
		return nil, runtime.Options{}, err
	}
	return g, opts, nil
}
