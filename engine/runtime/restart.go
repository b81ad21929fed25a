package runtime

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Restart strategies decide, each time a run of a job fails, whether it
// restarts and after what delay, as Flink's do. They are pure logic: the
// caller passes the time of each failure and the jitter's random source is
// injectable, so tests step a fake clock. RunOn uses them alike for a job
// run in one process and for one run by a framework master.

// Restart configures a restart strategy (Options.Restart): NoRestart,
// FixedDelay, FailureRate or ExponentialDelay.
type Restart interface {
	// NewStrategy starts the strategy's state for one run of the job.
	NewStrategy() RestartStrategy
}

// RestartStrategy is a restart strategy's state over one run of a job. It
// is used from one goroutine.
type RestartStrategy interface {
	// Failed records a failure at now. It returns the delay before the
	// next attempt, or a *RestartRefusedError saying why the job must fail.
	Failed(now time.Time) (time.Duration, error)
}

// RestartRefusedError is a restart strategy giving up.
type RestartRefusedError struct {
	Strategy string // none, fixed-delay, failure-rate, exponential-delay
	Reason   string
}

func (e *RestartRefusedError) Error() string { return e.Strategy + ": " + e.Reason }

// Strategy names, as the job spec writes them.
const (
	RestartNone             = "none"
	RestartFixedDelay       = "fixed-delay"
	RestartFailureRate      = "failure-rate"
	RestartExponentialDelay = "exponential-delay"
)

// restartStrategy is opts.Restart's state for a run; without one, a
// FixedDelay of RestartAttempts and RestartDelay.
func restartStrategy(opts Options) RestartStrategy {
	if opts.Restart != nil {
		return opts.Restart.NewStrategy()
	}
	return FixedDelay{Attempts: opts.RestartAttempts, Delay: opts.RestartDelay}.NewStrategy()
}

// NoRestart fails the job at its first failure.
type NoRestart struct{}

func (NoRestart) NewStrategy() RestartStrategy { return noRestart{} }

type noRestart struct{}

func (noRestart) Failed(time.Time) (time.Duration, error) {
	return 0, &RestartRefusedError{Strategy: RestartNone, Reason: "restarts are off"}
}

// FixedDelay restarts the job at most Attempts times in all, Delay after
// each failure.
type FixedDelay struct {
	Attempts int
	Delay    time.Duration
}

func (f FixedDelay) NewStrategy() RestartStrategy { return &fixedDelay{cfg: f} }

type fixedDelay struct {
	cfg      FixedDelay
	restarts int
}

func (f *fixedDelay) Failed(time.Time) (time.Duration, error) {
	if f.restarts >= f.cfg.Attempts {
		return 0, &RestartRefusedError{Strategy: RestartFixedDelay,
			Reason: fmt.Sprintf("restarted %s, all of its %d attempts", times(f.restarts), f.cfg.Attempts)}
	}
	f.restarts++
	return f.cfg.Delay, nil
}

// FailureRate restarts the job Delay after each failure as long as no more
// than MaxFailures failures fall within any Interval: the failure that
// makes MaxFailures+1 within Interval fails the job. A job that fails now
// and then restarts forever; one that fails in a burst does not.
type FailureRate struct {
	MaxFailures int
	Interval    time.Duration
	Delay       time.Duration
}

func (f FailureRate) NewStrategy() RestartStrategy { return &failureRate{cfg: f} }

type failureRate struct {
	cfg FailureRate
	// recent are the failures less than Interval before the latest one,
	// oldest first; at most MaxFailures+1.
	recent []time.Time
}

func (f *failureRate) Failed(now time.Time) (time.Duration, error) {
	keep := f.recent[:0]
	for _, t := range f.recent {
		if now.Sub(t) < f.cfg.Interval {
			keep = append(keep, t)
		}
	}
	f.recent = append(keep, now)
	if n := len(f.recent); n > f.cfg.MaxFailures {
		return 0, &RestartRefusedError{Strategy: RestartFailureRate,
			Reason: fmt.Sprintf("%d failures within %v, more than the %d allowed", n, f.cfg.Interval, f.cfg.MaxFailures)}
	}
	return f.cfg.Delay, nil
}

// ExponentialDelay restarts the job after a backoff that starts at
// InitialBackoff and is multiplied by Multiplier at each further failure,
// up to MaxBackoff. A run that stays up ResetThreshold after its restart
// resets the backoff (and the attempts) to the start. Each delay is the
// backoff ± up to Jitter × backoff, drawn at random, so that many jobs
// that failed together do not all restart at once. Attempts > 0 fails the
// job at the failure after Attempts restarts without a reset; 0 restarts
// it forever.
type ExponentialDelay struct {
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
	ResetThreshold time.Duration
	Jitter         float64
	Attempts       int
	// Rand returns a number in [0, 1) for the jitter; nil: math/rand/v2.
	Rand func() float64
}

func (e ExponentialDelay) NewStrategy() RestartStrategy {
	if e.Rand == nil {
		e.Rand = rand.Float64
	}
	return &exponentialDelay{cfg: e}
}

type exponentialDelay struct {
	cfg      ExponentialDelay
	backoff  time.Duration // of the latest restart; 0 before the first since a reset
	restarts int           // since the latest reset
	// restarted is when the latest restart was due: its failure plus
	// its delay. A failure ResetThreshold or more after it resets.
	restarted time.Time
}

func (e *exponentialDelay) Failed(now time.Time) (time.Duration, error) {
	if !e.restarted.IsZero() && now.Sub(e.restarted) >= e.cfg.ResetThreshold {
		e.backoff, e.restarts = 0, 0
	}
	if e.cfg.Attempts > 0 && e.restarts >= e.cfg.Attempts {
		return 0, &RestartRefusedError{Strategy: RestartExponentialDelay,
			Reason: fmt.Sprintf("restarted %s (all of its %d attempts) and no run lasted the %v that resets the backoff", times(e.restarts), e.cfg.Attempts, e.cfg.ResetThreshold)}
	}
	if e.backoff == 0 {
		e.backoff = e.cfg.InitialBackoff
	} else {
		e.backoff = scale(e.backoff, e.cfg.Multiplier)
	}
	e.backoff = min(e.backoff, e.cfg.MaxBackoff)
	delay := e.backoff
	if j := e.cfg.Jitter; j > 0 {
		delay = scale(e.backoff, 1+j*(2*e.cfg.Rand()-1))
	}
	e.restarts++
	e.restarted = now.Add(delay)
	return delay, nil
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

// scale is d × f, saturating instead of overflowing.
func scale(d time.Duration, f float64) time.Duration {
	v := float64(d) * f
	switch {
	case v >= math.MaxInt64:
		return math.MaxInt64
	case v <= 0:
		return 0
	}
	return time.Duration(v)
}
