package nodes

import "time"

// idleness tells when a source subtask has had nothing to emit for its
// idle timeout, so that downstream watermarks stop waiting for it (the
// subtask leaves the minimum until it emits again).
type idleness struct {
	timeout time.Duration // 0: never idle
	last    time.Time
}

func newIdleness(d time.Duration) idleness { return idleness{timeout: d, last: time.Now()} }

// saw records that n rows were emitted.
func (i *idleness) saw(n int) {
	if n > 0 && i.timeout > 0 {
		i.last = time.Now()
	}
}

func (i *idleness) idle() bool {
	return i.timeout > 0 && time.Since(i.last) >= i.timeout
}
