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
	if j.Restart.Strategy != "none" {
		o.RestartAttempts = j.Restart.Attempts
		o.RestartDelay = j.Restart.Delay.D()
	}
	return o, nil
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
