package runtime

import (
	"fmt"
	"io"
	"log/slog"
	"math"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

// Watermark values.
const (
	MinWatermark int64 = math.MinInt64
	MaxWatermark int64 = math.MaxInt64
)

// Output is where an operator or source sends what it produces. Collect takes
// ownership of the batch. Outputs are not goroutine-safe: they belong to the
// task that runs the node.
type Output interface {
	Collect(b *row.Batch)
	// Watermark forwards event-time progress downstream.
	Watermark(wm int64)
}

// Context is what a subtask knows about itself.
type Context struct {
	JobName        string
	NodeID         string
	Subtask        int
	Parallelism    int
	MaxParallelism int
	KeyGroups      state.KeyGroupRange
	ExactlyOnce    bool
	// Attempt is unique per run of the job (restarts included); sinks use it
	// to name files that must not collide with an earlier attempt's.
	Attempt string
	// LocalDir is this subtask's own directory on local disk for state
	// larger than memory (badger); created on demand by whoever uses it and
	// removed when the run ends.
	LocalDir string
	// Incremental: the job takes incremental checkpoints, so operators
	// that can may return a DeltaSnapshot (except for savepoints, see
	// InSavepoint).
	Incremental bool
	Out         Output
	// Side outputs by name (e.g. a window's "late"); nil when unused.
	Side    map[string]Output
	Log     *slog.Logger
	Metrics *NodeMetrics
	// Counters are this subtask's share of Metrics' counters.
	Counters *SubtaskCounters

	savepoint     bool  // a savepoint's Snapshot is running
	lastCompleted int64 // the last checkpoint or savepoint notified
}

// LastCompleted is the id of the last completed checkpoint (or savepoint)
// this subtask was told of. A DeltaSnapshot may only build on it: older
// checkpoints may already be pruned.
func (c *Context) LastCompleted() int64 { return c.lastCompleted }

// InSavepoint reports, during Snapshot, whether the snapshot is for a
// savepoint: savepoints are always full, self-contained and portable.
func (c *Context) InSavepoint() bool { return c.savepoint }

// Restored is a subtask's share of a checkpoint.
type Restored struct {
	CheckpointID int64
	// Keyed streams the keyed state of this subtask's key groups, read
	// from storage (or the local recovery copy) as f consumes it, so that
	// state larger than memory is never held whole: f is called once per
	// key group's full state and then, for an incremental checkpoint, once
	// per delta on it, oldest first (what a DeltaSnapshot wrote). It
	// returns f's first error. Nil when the checkpoint has no keyed state
	// for this subtask's node.
	Keyed func(f func(KeyedState) error) error
	// OperatorState is the union of every old subtask's list entries
	// (Flink's union list state): each subtask picks what it owns.
	OperatorState [][]byte
	// SkippedNewer is the id of the newest checkpoint that was skipped
	// because it could not be used (a corrupt state file), 0 when this is
	// the newest one. A sink whose committed output cannot be taken back
	// (Kafka exactly-once) must then show, in Open, that it committed
	// nothing after CheckpointID, unless AllowDuplicates; otherwise it
	// returns a *FallbackRefusedError.
	SkippedNewer int64
	// AllowDuplicates: the user accepts output committed after
	// CheckpointID being written again (sluice run
	// --allow-fallback-duplicates).
	AllowDuplicates bool
	// AcceptLoss: an earlier Open returned a *RestoreBeforeError and no
	// older checkpoint is retained; the user accepts losing that output
	// (sluice run --accept-lost-transactions): log, count and go on.
	AcceptLoss bool
	// Region: only this subtask's pipelined region restores (region
	// failover); the other subtasks of the node run on, so an operator
	// must settle only its own share of the restored operator state
	// (what the other subtasks wrote is theirs to finish).
	Region bool
}

// RestoreBeforeError is returned by Open when the checkpoint being
// restored cannot be used as it is: e.g. a Kafka transaction it recorded
// as pre-committed was aborted by the broker, so the rows it held are
// lost unless the sources replay them. The runtime restores instead from
// the newest retained checkpoint whose id is below Before; when there is
// none it fails the job with this error, unless the user accepts the loss
// (Restored.AcceptLoss).
type RestoreBeforeError struct {
	Before int64  // restore a checkpoint older than this id
	Reason string // what was found, naming e.g. the transactional id
}

func (e *RestoreBeforeError) Error() string {
	return fmt.Sprintf("restore from a checkpoint before %d: %s", e.Before, e.Reason)
}

// FallbackRefusedError is returned by Open when Restored.SkippedNewer is
// set and the operator cannot show that nothing it committed after the
// restored checkpoint would be written again. The runtime fails the job
// with it (no further fallback, no restart).
type FallbackRefusedError struct {
	Node   string
	Reason string
}

func (e *FallbackRefusedError) Error() string {
	return fmt.Sprintf("%s: cannot fall back to an older checkpoint: %s", e.Node, e.Reason)
}

// KeyedState is a key group's state (or a delta on it) handed over on
// restore, by Restored.Keyed.
type KeyedState struct {
	KeyGroup int
	// Delta is 0 for the full state, i > 0 for the i-th delta on it.
	Delta int
	// Size is how many bytes R yields.
	Size int64
	// R reads the bytes; it is valid only during the call. A read fails
	// with an error wrapping checkpoint.ErrCorrupt when the bytes do not
	// match their checksum (return it: the runtime then tries an older
	// checkpoint).
	R io.Reader
}

// StateWriter receives a snapshot's serialised state, written to storage
// as it comes. Errors are sticky: they fail the checkpoint once the
// snapshot's Write returns. The runtime's StateWriter is also a
// KeyGroupWriter.
type StateWriter interface {
	AddKeyGroup(kg int, data []byte)
	AddOperatorState(data []byte)
}

// KeyGroupWriter is a StateWriter that takes a key group in pieces.
type KeyGroupWriter interface {
	// KeyGroup starts key group kg's state and returns its writer, valid
	// until the next call on the StateWriter: a large key group is written
	// in pieces, never held whole.
	KeyGroup(kg int) io.Writer
}

// Snapshot is the asynchronous part of a snapshot: Write runs on another
// goroutine while the task keeps processing, so it may only read state that
// the synchronous part froze (copy-on-write) or copied.
type Snapshot interface {
	Write(w StateWriter) error
}

// DeltaSnapshot is a Snapshot whose keyed state is the changes since the
// state the same subtask wrote for checkpoint DeltaBase (an incremental
// checkpoint); DeltaBase 0 means full. The base must be a checkpoint the
// operator was told completed (CheckpointComplete). The runtime records
// the chain of files in the checkpoint, and a restore hands the deltas
// over in Restored.Keyed.
type DeltaSnapshot interface {
	Snapshot
	DeltaBase() int64
}

// SnapshotFunc adapts a function to Snapshot.
type SnapshotFunc func(w StateWriter) error

func (f SnapshotFunc) Write(w StateWriter) error { return f(w) }

// Operator is a node with inputs. Every method runs on the task goroutine.
type Operator interface {
	Open(ctx *Context, restored *Restored) error
	// Process handles a batch from input `input` (index into the node's
	// inputs) and owns it.
	Process(input int, b *row.Batch) error
	// Watermark is called when the minimum watermark over the inputs
	// advances. The operator must forward it (ctx.Out.Watermark) after
	// emitting what it fires.
	Watermark(wm int64) error
	// Snapshot is the synchronous part of checkpoint id; return nil for no state.
	Snapshot(id int64) (Snapshot, error)
	// CheckpointComplete is called once the checkpoint is durable (sinks commit).
	CheckpointComplete(id int64) error
	// EndInput is called once, when every input has ended: after the last
	// row and the final watermark, before the final checkpoint's snapshot,
	// so what it emits or flushes is committed by that checkpoint (Flink's
	// BoundedOneInput.endInput). A chained operator's comes right after
	// its upstream's. Not called when the job is stopped, cancelled or fails.
	EndInput() error
	Close() error
}

// Source produces batches. Every method runs on the task goroutine.
type Source interface {
	Open(ctx *Context, restored *Restored) error
	// Poll emits at most about one batch to ctx.Out and says whether the
	// source has ended. It should not block for long (rate limits: a few ms).
	Poll() (done bool, err error)
	// Watermark is the source subtask's current watermark; Idle reports that
	// it has had nothing to emit for its idle timeout.
	Watermark() (wm int64, idle bool)
	Snapshot(id int64) (Snapshot, error)
	CheckpointComplete(id int64) error
	Close() error
}

// BacklogSkipper is a source that can jump over its backlog to the newest
// data without a restart (Kuaishou's "skip backlog"): sources such as kafka
// seek every partition to its latest offset. SkipBacklog runs on the task
// goroutine between two polls, so the next checkpoint records the new
// positions.
type BacklogSkipper interface {
	SkipBacklog() error
}

// BaseOperator gives no-op defaults; embed it.
type BaseOperator struct{ Ctx *Context }

func (o *BaseOperator) Open(ctx *Context, _ *Restored) error { o.Ctx = ctx; return nil }
func (o *BaseOperator) Watermark(wm int64) error             { o.Ctx.Out.Watermark(wm); return nil }
func (o *BaseOperator) Snapshot(int64) (Snapshot, error)     { return nil, nil }
func (o *BaseOperator) CheckpointComplete(int64) error       { return nil }
func (o *BaseOperator) EndInput() error                      { return nil }
func (o *BaseOperator) Close() error                         { return nil }
