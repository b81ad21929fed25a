package nodes

import "time"

// Idleness tells when a source subtask has had nothing to emit for its
// idle timeout, so that downstream watermarks stop waiting for it (the
// subtask leaves the minimum until it emits again).
type Idleness struct {
	timeout time.Duration // 0: never idle
	last    time.Time
}

// NewIdleness starts the clock now; d 0 means never idle.
func NewIdleness(d time.Duration) Idleness { return Idleness{timeout: d, last: time.Now()} }

// Saw records that n rows were emitted.
func (i *Idleness) Saw(n int) {
	if n > 0 && i.timeout > 0 {
		i.last = time.Now()
	}
}

// Idle reports whether the timeout has passed since rows were last seen.
func (i *Idleness) Idle() bool {
	return i.timeout > 0 && time.Since(i.last) >= i.timeout
}
