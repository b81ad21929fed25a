package framework

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// A master in standby (Config.Standby) has its TaskManagers registered
// but deploys nothing until Start: an asynchronous upgrade starts the new
// version's master this way while the old version still runs, so that
// once the old one stopped with a savepoint, only the deployment — no
// resource negotiation, no TaskManager start — stands between the two.

// ErrStandbyTimeout: a master in standby was not started within its
// StandbyTimeout.
var ErrStandbyTimeout = errors.New("standby timed out")

// ErrNotStandby: Start was called on a master that is not standing by (it
// was not started in standby, or has been started already).
var ErrNotStandby = errors.New("the master is not standing by")

// standby is the gate Run waits at, and when the job ran after it.
type standby struct {
	mu      sync.Mutex
	waiting bool          // standing by: Start not called yet
	start   chan string   // Start's restore path
	runs    chan struct{} // closed once an attempt was started
	ranAt   time.Time
	once    sync.Once
}

func newStandby(on bool) *standby {
	return &standby{waiting: on, runs: make(chan struct{}), start: make(chan string, 1)}
}

// running: an attempt's tasks were started.
func (s *standby) running() {
	s.once.Do(func() {
		s.mu.Lock()
		s.ranAt = time.Now()
		s.mu.Unlock()
		close(s.runs)
	})
}

// StandbyStatus is what a master in standby reports.
type StandbyStatus struct {
	// Registered TaskManagers, of Wanted (the job's plus its spares).
	Registered int `json:"registered"`
	Wanted     int `json:"wanted"`
}

// Ready: every TaskManager wanted has registered.
func (s StandbyStatus) Ready() bool { return s.Registered >= s.Wanted }

// Standby says whether the master stands by, and its TaskManagers.
func (m *Master) Standby() (StandbyStatus, bool) {
	m.standby.mu.Lock()
	waiting := m.standby.waiting
	m.standby.mu.Unlock()
	if !waiting {
		return StandbyStatus{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return StandbyStatus{Registered: len(m.tms), Wanted: m.cfg.TaskManagers + m.cfg.Spares}, true
}

// Start ends the standby: the job deploys, restoring restore (a savepoint
// or checkpoint path; "" starts it empty). ErrNotStandby when the master
// does not stand by.
func (m *Master) Start(restore string) error {
	s := m.standby
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.waiting {
		return ErrNotStandby
	}
	s.waiting = false
	s.start <- restore
	m.log.Info("standby ends: deploying the job", "restore", restore)
	return nil
}

// Running is closed once the job's tasks were started on the
// TaskManagers (the first attempt's); RunningSince says when.
func (m *Master) Running() <-chan struct{} { return m.standby.runs }

// RunningSince is when the job's tasks were first started; zero before.
func (m *Master) RunningSince() time.Time {
	m.standby.mu.Lock()
	defer m.standby.mu.Unlock()
	return m.standby.ranAt
}

// awaitStart waits for Start and returns its restore path.
func (m *Master) awaitStart(ctx context.Context) (string, error) {
	m.log.Info("standing by: TaskManagers are being started; the job deploys on POST /v1/start",
		"taskmanagers", m.cfg.TaskManagers+m.cfg.Spares)
	var ready time.Time
	t := time.NewTicker(m.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case r := <-m.standby.start:
			return r, nil
		case <-ctx.Done():
			return "", context.Cause(ctx)
		case <-t.C:
		}
		st, ok := m.Standby()
		if !ok || !st.Ready() {
			continue
		}
		if ready.IsZero() {
			ready = time.Now()
			m.log.Info("standing by with every TaskManager registered", "registered", st.Registered)
		}
		if to := m.cfg.StandbyTimeout; to > 0 && time.Since(ready) > to {
			// Close Start's door first: a Start racing this is refused.
			m.standby.mu.Lock()
			waiting := m.standby.waiting
			m.standby.waiting = false
			m.standby.mu.Unlock()
			if waiting {
				return "", fmt.Errorf("%w: not started within %v of having every TaskManager", ErrStandbyTimeout, to)
			}
		}
	}
}
