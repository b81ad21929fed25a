package runtime

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Commands are requests to a running job from outside it (the HTTP API of
// `sluice run`, later the framework master). They arrive on
// Options.Commands and are read by the driver goroutine, which owns the
// run's counters; work that touches a source runs on that source's task
// goroutine, between two polls, so it is ordered with the checkpoint
// barriers the task injects.

// Command is SkipBacklog or StatusRequest.
type Command interface{ command() }

// SkipBacklog asks source subtasks to skip their backlog (BacklogSkipper):
// every source, or only the source node Node. Reply must have room for one
// value; it gets the result once every subtask asked has skipped, or an
// error.
type SkipBacklog struct {
	Node  string
	Reply chan<- SkipBacklogResult
}

// SkipBacklogResult answers a SkipBacklog.
type SkipBacklogResult struct {
	// Skipped lists the subtasks ("node#subtask") that skipped; a subtask
	// whose input had already ended is listed too (it has nothing to skip).
	Skipped []string
	// Unsupported lists the source nodes that cannot skip (no
	// BacklogSkipper), when every source was asked.
	Unsupported []string
	// Err is set when the request was bad (ErrBadCommand), the job was not
	// running it (ErrNotRunning), or a subtask's SkipBacklog failed. Those
	// subtasks are left where their own SkipBacklog left them; the others
	// in Skipped did skip.
	Err error
}

// StatusRequest asks for the run's status. Reply must have room for one value.
type StatusRequest struct {
	Reply chan<- Status
}

// Status is a snapshot of a running job.
type Status struct {
	Job string `json:"job"`
	// State is "running", or "restarting" between two attempts.
	State string `json:"state"`
	// Attempt identifies the current attempt (it changes on each restart).
	Attempt           string       `json:"attempt,omitempty"`
	Since             time.Time    `json:"since"` // when the job started
	Restarts          int          `json:"restarts"`
	Checkpoints       int          `json:"checkpoints"`
	FailedCheckpoints int          `json:"failedCheckpoints"`
	Nodes             []NodeStatus `json:"nodes"`
}

// NodeStatus is one node in a Status.
type NodeStatus struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	Parallelism int    `json:"parallelism"`
	Source      bool   `json:"source,omitempty"`
	// CanSkipBacklog is set on sources that implement BacklogSkipper.
	CanSkipBacklog bool  `json:"canSkipBacklog,omitempty"`
	RowsIn         int64 `json:"rowsIn"`
	RowsOut        int64 `json:"rowsOut"`

	OffsetResets int64 `json:"offsetResets,omitempty"` // a Kafka source's offsets reset (offsetReset)
}

func (SkipBacklog) command()   {}
func (StatusRequest) command() {}

var (
	// ErrBadCommand: the command names no node of the job, or one that
	// cannot do what was asked.
	ErrBadCommand = errors.New("bad command")
	// ErrNotRunning: the job ended or restarted before the command was done.
	ErrNotRunning = errors.New("job not running")
)

// RequestSkipBacklog sends a SkipBacklog on cmds and waits for its result,
// or for ctx.
func RequestSkipBacklog(ctx context.Context, cmds chan<- Command, node string) SkipBacklogResult {
	reply := make(chan SkipBacklogResult, 1)
	select {
	case cmds <- SkipBacklog{Node: node, Reply: reply}:
	case <-ctx.Done():
		return SkipBacklogResult{Err: fmt.Errorf("%w: the job did not take the request: %w", ErrNotRunning, ctx.Err())}
	}
	select {
	case r := <-reply:
		return r
	case <-ctx.Done():
		return SkipBacklogResult{Err: fmt.Errorf("waiting for the sources to skip: %w", ctx.Err())}
	}
}

// RequestStatus sends a StatusRequest on cmds and waits for the answer.
func RequestStatus(ctx context.Context, cmds chan<- Command) (Status, error) {
	reply := make(chan Status, 1)
	select {
	case cmds <- StatusRequest{Reply: reply}:
	case <-ctx.Done():
		return Status{}, fmt.Errorf("%w: the job did not take the request: %w", ErrNotRunning, ctx.Err())
	}
	select {
	case s := <-reply:
		return s, nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

// reply sends without blocking the driver: a requester that gave an
// unbuffered channel and went away must not stall the job.
func reply[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// skipOp is one SkipBacklog in flight: every target task reports to it from
// its own goroutine, and the last one replies.
type skipOp struct {
	mu          sync.Mutex
	pending     int
	skipped     []string
	errs        []error
	unsupported []string
	reply       chan<- SkipBacklogResult
	replied     bool
}

// done records one subtask's outcome; the last one replies.
func (op *skipOp) done(subtask string, err error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.replied {
		return
	}
	if err != nil {
		op.errs = append(op.errs, fmt.Errorf("%s: %w", subtask, err))
	} else {
		op.skipped = append(op.skipped, subtask)
	}
	if op.pending--; op.pending == 0 {
		op.finish(nil)
	}
}

// abort replies with err unless every subtask already reported.
func (op *skipOp) abort(err error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if !op.replied {
		op.finish(err)
	}
}

func (op *skipOp) finish(err error) {
	op.replied = true
	sort.Strings(op.skipped)
	errs := op.errs
	if err != nil {
		errs = append(errs, err)
	}
	reply(op.reply, SkipBacklogResult{Skipped: op.skipped, Unsupported: op.unsupported, Err: errors.Join(errs...)})
}

func (op *skipOp) finished() bool {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.replied
}

// commands is the driver's state for commands of one execution.
type commands struct {
	skips []*skipOp // in flight
}

// command runs on the driver goroutine.
func (d *driver) command(c Command, res *Result) {
	switch c := c.(type) {
	case SkipBacklog:
		d.skipBacklog(c)
	case StatusRequest:
		reply(c.Reply, d.status(res))
	}
}

func (d *driver) status(res *Result) Status {
	s := status(d.g, res, "running")
	s.Attempt = d.a.ID()
	for i := range s.Nodes {
		if n := d.g.node(s.Nodes[i].ID); n.NewSource != nil {
			s.Nodes[i].CanSkipBacklog = canSkipBacklog(n)
		}
	}
	return s
}

// canSkipBacklog reports whether source node n's sources are
// BacklogSkippers (asked of an instance that is never opened).
func canSkipBacklog(n *Node) bool {
	_, ok := n.NewSource().(BacklogSkipper)
	return ok
}

func status(g *Graph, res *Result, state string) Status {
	s := Status{Job: g.JobName, State: state, Since: res.started, Restarts: res.Restarts,
		Checkpoints: res.Checkpoints, FailedCheckpoints: res.FailedCheckpoints}
	for _, n := range g.Nodes {
		ns := NodeStatus{ID: n.ID, Type: n.Type, Parallelism: n.Parallelism, Source: n.NewSource != nil}
		if m := res.Metrics[n.ID]; m != nil {
			ns.RowsIn, ns.RowsOut = m.RowsIn.Load(), m.RowsOut.Load()
			ns.OffsetResets = m.OffsetResets.Load()
		}
		s.Nodes = append(s.Nodes, ns)
	}
	return s
}

// skipBacklog hands the request to every source task it names.
func (d *driver) skipBacklog(req SkipBacklog) {
	op := &skipOp{reply: req.Reply}
	if req.Node != "" {
		n := d.g.node(req.Node)
		switch {
		case n == nil:
			op.abort(fmt.Errorf("%w: the job has no node %q", ErrBadCommand, req.Node))
			return
		case n.NewSource == nil:
			op.abort(fmt.Errorf("%w: node %q (%s) is not a source", ErrBadCommand, req.Node, n.Type))
			return
		}
	}
	var targets []int
	cannot := map[string]string{} // node → type
	can := map[string]bool{}
	for _, t := range d.infos {
		n := d.g.node(t.Nodes[0])
		if !t.Source || req.Node != "" && n.ID != req.Node {
			continue
		}
		ok, seen := can[n.ID]
		if !seen {
			ok = canSkipBacklog(n)
			can[n.ID] = ok
		}
		if !ok {
			cannot[n.ID] = n.Type
			continue
		}
		targets = append(targets, t.Index)
	}
	for id := range cannot {
		op.unsupported = append(op.unsupported, id)
	}
	sort.Strings(op.unsupported)
	if len(targets) == 0 {
		var names []string
		for _, id := range op.unsupported {
			names = append(names, fmt.Sprintf("%s (%s)", id, cannot[id]))
		}
		op.abort(fmt.Errorf("%w: no source can skip its backlog: %s", ErrBadCommand, strings.Join(names, ", ")))
		return
	}
	op.pending = len(targets)
	d.cmds.skips = append(d.cmds.skips, op)
	for _, t := range targets {
		if err := d.a.SkipBacklog(t, op.done); err != nil {
			op.abort(fmt.Errorf("%w: the job stopped before every source skipped", ErrNotRunning))
			return
		}
	}
	// Forget finished operations so a long run does not accumulate them.
	live := d.cmds.skips[:0]
	for _, o := range d.cmds.skips {
		if !o.finished() {
			live = append(live, o)
		}
	}
	d.cmds.skips = live
}

// endCommands fails the commands this attempt did not finish.
func (d *driver) endCommands() {
	for _, op := range d.cmds.skips {
		op.abort(fmt.Errorf("%w: the run ended (failure, restart or stop) before every source skipped; ask again", ErrNotRunning))
	}
	d.cmds.skips = nil
}

// skipBacklog runs on the source task's goroutine, between two polls: the
// next barrier this task forwards comes after the skip, so the next
// checkpoint records the new positions.
func (t *task) skipBacklog(done func(subtask string, err error)) {
	name := t.name()
	log := t.members[0].ctx.Log
	if t.sourceDone || t.finalID != 0 || t.stopped {
		done(name, nil) // nothing left to read
		return
	}
	skipper, ok := t.source.(BacklogSkipper)
	if !ok {
		done(name, fmt.Errorf("%w: %s cannot skip its backlog", ErrBadCommand, name))
		return
	}
	began := time.Now()
	if err := skipper.SkipBacklog(); err != nil {
		log.Warn("skipping the backlog failed", "err", err)
		done(name, err)
		return
	}
	log.Info("backlog skipped", "took", time.Since(began).Round(time.Millisecond))
	done(name, nil)
}

// waitRestart waits out the restart delay, answering commands meanwhile.
func waitRestart(ctx context.Context, g *Graph, opts Options, res *Result) error {
	timer := time.NewTimer(opts.RestartDelay)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case c := <-opts.Commands:
			switch c := c.(type) {
			case SkipBacklog:
				reply(c.Reply, SkipBacklogResult{Err: fmt.Errorf("%w: the job is restarting (attempt %d); ask again once it runs", ErrNotRunning, res.Restarts)})
			case StatusRequest:
				reply(c.Reply, status(g, res, "restarting"))
			}
		}
	}
}
