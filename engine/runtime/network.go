package runtime

import (
	"context"

	"github.com/sluice-stream/sluice/engine/row"
)

// Channels between processes. A job's tasks may run in several processes
// (TaskManagers); a channel whose consumer runs in another process than its
// producer goes through a Network, the TaskManagers' data plane. The rule
// is the in-process one: a sender holds one credit per message in flight,
// starting with ChannelCredits, and gets it back when the receiving task
// has processed the message, so a slow receiver back-pressures only its own
// senders. Barriers, watermarks, idleness and end of stream travel in the
// same channel, in order with the data.

// ChannelCredits is how many messages a sender may have in flight on one
// channel between processes. More than in-process (creditsPerChannel):
// a credit's round trip there costs writes, reads and wake-ups of both
// processes, and a window of 8 small batches stalled the senders between
// round trips (docs/benchmarks.md, "Data plane (issue #9)").
const ChannelCredits = 32

// ChannelKey names one input channel of one task of an attempt.
type ChannelKey struct {
	// Attempt is the deployment the consuming task belongs to: a message
	// for an attempt that no longer runs (a zombie's) is dropped.
	Attempt string
	// Task is the consuming task's index in the job's task list (Tasks).
	Task int32
	// Channel is the input channel at that task.
	Channel int32
}

// Network carries the channels whose consumer runs in another process.
type Network interface {
	// Sender opens the sending end of channel key, whose task runs in the
	// process with data address addr.
	Sender(ctx context.Context, addr string, key ChannelKey) (ChannelSender, error)
	// Grant gives n credits of channel key back to its sender: a task of
	// this process processed n of the channel's messages.
	Grant(key ChannelKey, n int)
}

// ChannelSender is the sending end of a channel to another process.
type ChannelSender interface {
	// Send delivers m after the messages sent before it, blocking while the
	// channel has no credit. It takes ownership of m.Batch. An error means
	// the channel is broken (the connection failed, or the context of
	// Network.Sender is done); the task fails.
	Send(m Message) error
	// Close ends the channel: no message follows.
	Close() error
}

// Receiver is the receiving side of a process's channels: the Network
// hands it what arrives.
type Receiver interface {
	// Schema is the schema of channel key's batches, nil when this process
	// has no such channel (an attempt that ended or never ran here: drop
	// the message).
	Schema(key ChannelKey) *row.Schema
	// Deliver hands m to channel key's task. It never blocks: the sender
	// held a credit. It fails for an unknown channel, and for a message
	// beyond the channel's credits (a protocol violation: the connection
	// should be closed).
	Deliver(key ChannelKey, m Message) error
}
