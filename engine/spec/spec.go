// Package spec is the job graph as users write it: JSON (or YAML) decoded
// strictly into these types, with overrides (--set) applied first. It checks
// the structure (ids, inputs, cycles, known fields); what each node's params
// mean is checked by the planner that builds the job (engine/plan).
package spec

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Job is one job graph.
type Job struct {
	Name           string     `json:"name"`
	Parallelism    int        `json:"parallelism,omitempty"`
	MaxParallelism int        `json:"maxParallelism,omitempty"`
	Checkpoint     Checkpoint `json:"checkpoint"`
	StateBackend   string     `json:"stateBackend,omitempty"`
	// Badger sizes the badger state backend's memory per subtask.
	Badger      *BadgerMemory `json:"badger,omitempty"`
	Restart     Restart       `json:"restart"`
	Heartbeat   Heartbeat     `json:"heartbeat"`
	Resources   *Resources    `json:"resources,omitempty"`
	Role        string        `json:"role,omitempty"`
	Constraints [][]string    `json:"constraints,omitempty"`
	Nodes       []Node        `json:"nodes"`
}

// BadgerMemory bounds the memory of each subtask's badger database, in MiB (0:
// the default). Go heap stays near 2×memtable + block cache + index cache
// plus what the job itself holds, whatever the state's size on disk.
type BadgerMemory struct {
	MemtableMiB   int `json:"memtableMiB,omitempty"`
	BlockCacheMiB int `json:"blockCacheMiB,omitempty"`
	IndexCacheMiB int `json:"indexCacheMiB,omitempty"`
}

// Checkpoint configures checkpoints and savepoints.
type Checkpoint struct {
	// Interval between checkpoints; 0 disables periodic checkpoints (a
	// bounded job still takes its final one).
	Interval Duration `json:"interval,omitempty"`
	Mode     string   `json:"mode,omitempty"` // exactly-once (default) | at-least-once
	Timeout  Duration `json:"timeout,omitempty"`
	MinPause Duration `json:"minPause,omitempty"`
	Retained int      `json:"retained,omitempty"`
	// Storage is a URI (file://…) under which chk-N directories are written.
	Storage string `json:"storage,omitempty"`
	// Savepoints is where savepoints go; default <storage>/savepoints.
	Savepoints string `json:"savepoints,omitempty"`
	// TolerableFailures is how many consecutive failed checkpoints the job
	// survives before it fails over.
	TolerableFailures int `json:"tolerableFailures,omitempty"`
	// Incremental makes the badger state backend upload only what changed
	// since the previous checkpoint (badger only).
	Incremental bool `json:"incremental,omitempty"`
	// LocalRecovery keeps each subtask's latest state on local disk too, so
	// that a restart on the same machine restores without remote reads.
	LocalRecovery bool `json:"localRecovery,omitempty"`
	// EntropyKey is a path segment of Storage (e.g. "_entropy_") replaced
	// by EntropyLength random hex characters in state files' paths and
	// removed from the metadata's path.
	EntropyKey    string `json:"entropyKey,omitempty"`
	EntropyLength int    `json:"entropyLength,omitempty"`
}

const (
	ExactlyOnce = "exactly-once"
	AtLeastOnce = "at-least-once"
)

// Restart is what happens when a task fails: the restart strategy and its
// settings. Each field belongs to the strategies named in its comment.
type Restart struct {
	// Strategy is fixed-delay (default), failure-rate, exponential-delay
	// or none.
	Strategy string `json:"strategy,omitempty"`
	// Attempts: fixed-delay, restarts in all; exponential-delay, restarts
	// before the job fails unless a stable run resets the backoff (0: no
	// limit).
	Attempts int `json:"attempts,omitempty"`
	// Delay before each restart (fixed-delay, failure-rate).
	Delay Duration `json:"delay,omitempty"`
	// MaxFailuresPerInterval failures within FailureRateInterval are
	// restarted; one more fails the job (failure-rate).
	MaxFailuresPerInterval int      `json:"maxFailuresPerInterval,omitempty"`
	FailureRateInterval    Duration `json:"failureRateInterval,omitempty"`
	// The backoff starts at InitialBackoff, is multiplied by
	// BackoffMultiplier at each further failure up to MaxBackoff, and
	// starts again after a run of ResetBackoffThreshold; each delay is
	// the backoff ± JitterFactor × backoff (exponential-delay).
	InitialBackoff        Duration `json:"initialBackoff,omitempty"`
	MaxBackoff            Duration `json:"maxBackoff,omitempty"`
	BackoffMultiplier     float64  `json:"backoffMultiplier,omitempty"`
	ResetBackoffThreshold Duration `json:"resetBackoffThreshold,omitempty"`
	// JitterFactor is a pointer so that 0 (no jitter) differs from unset.
	JitterFactor *float64 `json:"jitterFactor,omitempty"`
}

// MaxDelay is the longest the strategy waits before a restart.
func (r *Restart) MaxDelay() time.Duration {
	switch r.Strategy {
	case NoRestart:
		return 0
	case ExponentialDelay:
		j := DefaultJitterFactor
		if r.JitterFactor != nil {
			j = *r.JitterFactor
		}
		return time.Duration(float64(r.MaxBackoff) * (1 + j))
	}
	return r.Delay.D()
}

// Heartbeat is how TaskManagers and the job's master watch each other: a
// heartbeat every Interval, and a peer silent for Timeout is lost. Used by
// the framework master, not by sluice run.
type Heartbeat struct {
	Interval Duration `json:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
}

// Resources is what one TaskManager asks of Mesos.
type Resources struct {
	CPUs   float64 `json:"cpus,omitempty"`
	MemMB  float64 `json:"mem,omitempty"`
	DiskMB float64 `json:"disk,omitempty"`
	Slots  int     `json:"slots,omitempty"`
	// SpareTaskManagers are started beyond those the job's slots need, so
	// that a lost TaskManager's tasks restart without waiting for an offer.
	SpareTaskManagers int `json:"spareTaskManagers,omitempty"`
	// Quota is the job's quota on its Mesos role, which the dispatcher
	// sets before it launches the job's master.
	Quota *Quota `json:"quota,omitempty"`
}

// Quota bounds what the job's role may take from Mesos.
type Quota struct {
	// Limit caps the role's resources (default: what the job's
	// TaskManagers and master are guaranteed, plus one TaskManager).
	Limit *QuotaLimit `json:"limit,omitempty"`
}

// QuotaLimit is a quota limit; 0 leaves a resource without a limit.
type QuotaLimit struct {
	CPUs   float64 `json:"cpus,omitempty"`
	MemMB  float64 `json:"mem,omitempty"`
	DiskMB float64 `json:"disk,omitempty"`
}

// Node is a source, operator or sink.
type Node struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Params      json.RawMessage `json:"params,omitempty"`
	Inputs      []Input         `json:"inputs,omitempty"`
	Parallelism int             `json:"parallelism,omitempty"`
}

// Input connects a node to an upstream node's output.
type Input struct {
	From string `json:"from"`
	// Output names a side output of From (e.g. a window's late rows);
	// empty is the main output.
	Output string `json:"output,omitempty"`
	// Partition is forward (default), rebalance, hash or broadcast.
	Partition string   `json:"partition,omitempty"`
	Keys      []string `json:"keys,omitempty"`
}

// UnmarshalJSON accepts "id", "id.output" or the object form.
func (in *Input) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		from, out, _ := strings.Cut(s, ".")
		*in = Input{From: from, Output: out}
		return nil
	}
	type plain Input
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	var p plain
	if err := dec.Decode(&p); err != nil {
		return err
	}
	*in = Input(p)
	return nil
}

// Duration is a time.Duration written as "1s", "250ms", "5m" or a number of
// milliseconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Millis returns the value in milliseconds.
func (d Duration) Millis() int64 { return time.Duration(d).Milliseconds() }

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *Duration) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		v, err := ParseDuration(s)
		if err != nil {
			return err
		}
		*d = v
		return nil
	}
	var ms float64
	if err := json.Unmarshal(data, &ms); err != nil {
		return fmt.Errorf("duration must be a string like \"1s\" or a number of milliseconds, got %s", data)
	}
	v, err := fromMillis(ms, string(data))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// maxMillis is the largest number of milliseconds a time.Duration holds.
const maxMillis = float64(math.MaxInt64 / int64(time.Millisecond))

func fromMillis(ms float64, text string) (Duration, error) {
	switch {
	case math.IsNaN(ms) || math.IsInf(ms, 0):
		return 0, fmt.Errorf("duration %q is not a number", text)
	case ms < 0:
		return 0, fmt.Errorf("duration %s is negative", text)
	case ms > maxMillis:
		return 0, fmt.Errorf("duration %s ms is too large", text)
	}
	return Duration(time.Duration(ms * float64(time.Millisecond))), nil
}

// ParseDuration parses "1s", "1m30s", "250ms" or a bare number of milliseconds.
func ParseDuration(s string) (Duration, error) {
	if ms, err := strconv.ParseFloat(s, 64); err == nil && looksNumeric(s) {
		return fromMillis(ms, strconv.Quote(s))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (want e.g. \"1s\", \"250ms\" or milliseconds)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return Duration(v), nil
}

// looksNumeric rejects what strconv.ParseFloat accepts beyond decimal
// numbers ("NaN", "Inf", "0x1p3", "1_000").
func looksNumeric(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
}
