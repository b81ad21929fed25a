package runtime

import (
	"sync/atomic"
	"time"
)

// CreditWaitCounter is a ChannelSender that adds the time its Send waits
// for a credit to a counter (the producer subtask's BackPressured),
// timing only the waits so that a send with credit costs nothing more.
type CreditWaitCounter interface {
	CountCreditWait(ns *atomic.Int64)
}

// ByteCounter is a ChannelSender that adds the encoded size of what it
// sends to a counter (the producer subtask's BytesOut).
type ByteCounter interface {
	CountBytes(n *atomic.Int64)
}

// backPressured is the back-pressure counter of node id's subtask, nil
// when the node has no metrics.
func backPressured(metrics map[string]*NodeMetrics, id string, subtask int) *atomic.Int64 {
	if m := metrics[id]; m != nil {
		return &m.Subtask(subtask).BackPressured
	}
	return nil
}

// CheckpointStats describes one checkpoint or savepoint that ended, for
// Options.OnCheckpoint (history in the REST API, Prometheus metrics).
type CheckpointStats struct {
	ID        int64     `json:"id"`
	Savepoint bool      `json:"savepoint,omitempty"`
	Triggered time.Time `json:"triggered"`
	// Duration runs from the trigger to the metadata's commit (or to the
	// failure).
	Duration time.Duration `json:"-"`
	// Bytes is what this checkpoint wrote: the sum of its state files (an
	// incremental checkpoint's deltas, not the files it builds on); 0 for
	// a failed one.
	Bytes int64 `json:"bytes"`
	// Alignment is the longest any task held its inputs for the
	// checkpoint's barriers (completed checkpoints).
	Alignment time.Duration `json:"-"`
	// State is "completed" or "failed" (Error says why).
	State string `json:"state"`
	Path  string `json:"path,omitempty"`
	Error string `json:"error,omitempty"`
}

// checkpointTracker turns the coordinator's actions into CheckpointStats.
// The coordinator has at most one checkpoint in flight (pending or
// committing), so the tracker remembers just that one. It runs on the
// driver goroutine.
type checkpointTracker struct {
	report    func(CheckpointStats)
	id        int64
	savepoint bool
	triggered time.Time
}

func (c *checkpointTracker) trigger(tr Trigger) {
	c.id, c.savepoint, c.triggered = tr.ID, tr.Savepoint, time.Now()
}

// completed reports the committed checkpoint p written to path.
func (c *checkpointTracker) completed(p *Pending, path string) {
	if c.report == nil {
		return
	}
	var bytes int64
	var alignment time.Duration
	for _, payload := range p.Acks {
		a, _ := payload.(ack)
		for _, s := range a.states {
			bytes += s.State.Size
		}
		alignment = max(alignment, a.alignment)
	}
	began := c.triggered
	if c.id != p.ID || began.IsZero() {
		began = time.UnixMilli(p.Started)
	}
	c.report(CheckpointStats{ID: p.ID, Savepoint: p.Savepoint, Triggered: began, Duration: time.Since(began),
		Bytes: bytes, Alignment: alignment, State: "completed", Path: path})
	c.id, c.triggered = 0, time.Time{}
}

// failed reports that the checkpoint in flight failed with err.
func (c *checkpointTracker) failed(err error) {
	if c.report == nil || c.id == 0 {
		return
	}
	c.report(CheckpointStats{ID: c.id, Savepoint: c.savepoint, Triggered: c.triggered, Duration: time.Since(c.triggered),
		State: "failed", Error: err.Error()})
	c.id, c.triggered = 0, time.Time{}
}
