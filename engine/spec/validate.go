package spec

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Defaults.
const (
	DefaultParallelism       = 1
	DefaultMaxParallelism    = 128
	MaxMaxParallelism        = 32768
	DefaultCheckpointTimeout = Duration(10 * time.Minute)
	DefaultRetained          = 1
	DefaultRestartAttempts   = 3
	DefaultRestartDelay      = Duration(time.Second)
	// failure-rate and exponential-delay take Flink's defaults.
	DefaultMaxFailuresPerInterval = 1
	DefaultFailureRateInterval    = Duration(time.Minute)
	DefaultInitialBackoff         = Duration(time.Second)
	DefaultMaxBackoff             = Duration(time.Minute)
	DefaultBackoffMultiplier      = 1.5
	DefaultResetBackoffThreshold  = Duration(time.Hour)
	DefaultJitterFactor           = 0.1
	DefaultHeartbeatInterval      = Duration(time.Second)
	// DefaultHeartbeatTimeout is this many heartbeat intervals.
	DefaultHeartbeatTimeoutIntervals = 4
)

// State backends.
const (
	Heap   = "heap"
	Badger = "badger"
)

// Restart strategies.
const (
	FixedDelay       = "fixed-delay"
	FailureRate      = "failure-rate"
	ExponentialDelay = "exponential-delay"
	NoRestart        = "none"
)

// Input partitionings.
const (
	Forward   = "forward"
	Rebalance = "rebalance"
	Hash      = "hash"
	Broadcast = "broadcast"
)

var (
	jobNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	nodeIDRE  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// DefaultStorage is the checkpoint storage of a job that names none:
// file://<os.TempDir()>/sluice/<name>/checkpoints.
func DefaultStorage(name string) string {
	dir := filepath.ToSlash(os.TempDir())
	if !strings.HasPrefix(dir, "/") {
		dir = "/" + dir // C:/… on Windows
	}
	return "file://" + strings.TrimRight(dir, "/") + "/sluice/" + name + "/checkpoints"
}

// DefaultMaxParallelismFor is maxParallelism when the job sets none: 128,
// or for parallelism above 128 (as Flink does) the next power of two ≥ 1.5
// × parallelism, at most 32768.
func DefaultMaxParallelismFor(parallelism int) int {
	if parallelism <= DefaultMaxParallelism {
		return DefaultMaxParallelism
	}
	want := parallelism + parallelism/2
	n := DefaultMaxParallelism
	for n < want && n < MaxMaxParallelism {
		n *= 2
	}
	return n
}

// ApplyDefaults fills in every field left at its zero value with its
// default. It is idempotent; Parse calls it before Validate.
func (j *Job) ApplyDefaults() {
	if j.Parallelism == 0 {
		j.Parallelism = DefaultParallelism
	}
	if j.MaxParallelism == 0 {
		j.MaxParallelism = DefaultMaxParallelismFor(j.Parallelism)
	}
	c := &j.Checkpoint
	if c.Mode == "" {
		c.Mode = ExactlyOnce
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultCheckpointTimeout
	}
	if c.Retained == 0 {
		c.Retained = DefaultRetained
	}
	if c.Storage == "" && j.Name != "" {
		c.Storage = DefaultStorage(j.Name)
	}
	if c.Savepoints == "" && c.Storage != "" {
		c.Savepoints = strings.TrimRight(c.Storage, "/") + "/savepoints"
	}
	if j.StateBackend == "" {
		j.StateBackend = Heap
	}
	r := &j.Restart
	if r.Strategy == "" {
		r.Strategy = FixedDelay
	}
	switch r.Strategy {
	case FixedDelay:
		if r.Attempts == 0 {
			r.Attempts = DefaultRestartAttempts
		}
		if r.Delay == 0 {
			r.Delay = DefaultRestartDelay
		}
	case FailureRate:
		if r.MaxFailuresPerInterval == 0 {
			r.MaxFailuresPerInterval = DefaultMaxFailuresPerInterval
		}
		if r.FailureRateInterval == 0 {
			r.FailureRateInterval = DefaultFailureRateInterval
		}
		if r.Delay == 0 {
			r.Delay = DefaultRestartDelay
		}
	case ExponentialDelay:
		if r.InitialBackoff == 0 {
			r.InitialBackoff = DefaultInitialBackoff
		}
		if r.MaxBackoff == 0 {
			r.MaxBackoff = max(DefaultMaxBackoff, r.InitialBackoff)
		}
		if r.BackoffMultiplier == 0 {
			r.BackoffMultiplier = DefaultBackoffMultiplier
		}
		if r.ResetBackoffThreshold == 0 {
			r.ResetBackoffThreshold = DefaultResetBackoffThreshold
		}
		if r.JitterFactor == nil {
			jf := DefaultJitterFactor
			r.JitterFactor = &jf
		}
	}
	h := &j.Heartbeat
	if h.Interval == 0 {
		h.Interval = DefaultHeartbeatInterval
	}
	if h.Timeout == 0 && h.Interval <= Duration(math.MaxInt64/DefaultHeartbeatTimeoutIntervals) {
		h.Timeout = DefaultHeartbeatTimeoutIntervals * h.Interval
	}
	for i := range j.Nodes {
		for k := range j.Nodes[i].Inputs {
			if j.Nodes[i].Inputs[k].Partition == "" {
				j.Nodes[i].Inputs[k].Partition = Forward
			}
		}
	}
}

// NodeParallelism is the parallelism n runs with: its own, else the job's.
func (j *Job) NodeParallelism(n *Node) int {
	if n.Parallelism > 0 {
		return n.Parallelism
	}
	if j.Parallelism > 0 {
		return j.Parallelism
	}
	return DefaultParallelism
}

// Validate checks the job's structure: names, ranges, enumerations, storage
// URIs, node ids, inputs, partitioning, cycles and sources. Fields left at
// zero are checked as their defaults (Validate does not modify j). It
// reports every problem it finds, one per line (errors.Join); each names
// the field, and the node by id. What node types exist and what their
// params mean is the planner's to check.
func (j *Job) Validate() error {
	c := j.clone()
	c.ApplyDefaults()
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch {
	case c.Name == "":
		add("name: required")
	case !jobNameRE.MatchString(c.Name):
		add("name: %q is not valid (letters, digits, '.', '_' and '-', starting with a letter or digit)", c.Name)
	}
	if c.Parallelism < 1 {
		add("parallelism: must be ≥ 1, got %d", c.Parallelism)
	}
	if c.MaxParallelism < 1 || c.MaxParallelism > MaxMaxParallelism {
		add("maxParallelism: must be between 1 and %d, got %d", MaxMaxParallelism, c.MaxParallelism)
	} else if c.MaxParallelism < c.Parallelism {
		add("maxParallelism: %d is less than parallelism %d", c.MaxParallelism, c.Parallelism)
	}

	cp := c.Checkpoint
	if !oneOf(cp.Mode, ExactlyOnce, AtLeastOnce) {
		add("checkpoint.mode: %q is not one of %s, %s", cp.Mode, ExactlyOnce, AtLeastOnce)
	}
	if cp.Retained < 1 {
		add("checkpoint.retained: must be ≥ 1, got %d", cp.Retained)
	}
	if cp.TolerableFailures < 0 {
		add("checkpoint.tolerableFailures: must be ≥ 0, got %d", cp.TolerableFailures)
	}
	if cp.Storage != "" {
		if err := checkStorageURI(cp.Storage); err != nil {
			add("checkpoint.storage: %v", err)
		}
	}
	if cp.EntropyLength < 0 || cp.EntropyLength > 32 {
		add("checkpoint.entropyLength: must be 1 to 32, got %d", cp.EntropyLength)
	}
	if cp.EntropyKey != "" && (strings.Contains(cp.EntropyKey, "/") || cp.EntropyKey == "." || cp.EntropyKey == "..") {
		add("checkpoint.entropyKey: %q must be one path segment", cp.EntropyKey)
	}
	if cp.Savepoints != "" {
		if err := checkStorageURI(cp.Savepoints); err != nil {
			add("checkpoint.savepoints: %v", err)
		}
	}
	if !oneOf(c.StateBackend, Heap, Badger) {
		add("stateBackend: %q is not one of %s, %s", c.StateBackend, Heap, Badger)
	} else if cp.Incremental && c.StateBackend != Badger {
		add("checkpoint.incremental: only the %s state backend takes incremental checkpoints (stateBackend is %s)", Badger, c.StateBackend)
	}
	if b := c.Badger; b != nil {
		if c.StateBackend != Badger {
			add("badger: only with stateBackend %s (stateBackend is %s)", Badger, c.StateBackend)
		}
		for _, f := range []struct {
			name    string
			v, most int
		}{{"memtableMiB", b.MemtableMiB, 1024}, {"blockCacheMiB", b.BlockCacheMiB, 65536}, {"indexCacheMiB", b.IndexCacheMiB, 65536}} {
			if f.v < 0 || f.v > f.most {
				add("badger.%s: %d is outside [0, %d] (MiB; 0 takes the default)", f.name, f.v, f.most)
			}
		}
	}

	errs = append(errs, c.Restart.check(j.Restart)...)
	if h := c.Heartbeat; h.Timeout <= h.Interval {
		add("heartbeat.timeout: %v must exceed heartbeat.interval %v", h.Timeout.D(), h.Interval.D())
	}

	if r := c.Resources; r != nil {
		if r.CPUs < 0 {
			add("resources.cpus: must be ≥ 0, got %v", r.CPUs)
		}
		if r.MemMB < 0 {
			add("resources.mem: must be ≥ 0, got %v", r.MemMB)
		}
		if r.DiskMB < 0 {
			add("resources.disk: must be ≥ 0, got %v", r.DiskMB)
		}
		if r.Slots < 0 {
			add("resources.slots: must be ≥ 0, got %d", r.Slots)
		}
		if r.SpareTaskManagers < 0 {
			add("resources.spareTaskManagers: must be ≥ 0, got %d", r.SpareTaskManagers)
		}
		if q := r.Quota; q != nil && q.Limit != nil {
			l := q.Limit
			for _, f := range []struct {
				name string
				v    float64
			}{{"cpus", l.CPUs}, {"mem", l.MemMB}, {"disk", l.DiskMB}} {
				if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
					add("resources.quota.limit.%s: must be a number ≥ 0, got %v", f.name, f.v)
				}
			}
			if l.CPUs == 0 && l.MemMB == 0 && l.DiskMB == 0 {
				add("resources.quota.limit: give at least one of cpus, mem, disk")
			}
		}
	}
	if strings.ContainsAny(c.Role, " \t\n") || c.Role == "." || c.Role == ".." || strings.HasPrefix(c.Role, "-") {
		add("role: %q is not a valid Mesos role", c.Role)
	}
	for i, con := range c.Constraints {
		if err := checkConstraint(con); err != nil {
			add("constraints[%d]: %v", i, err)
		}
	}

	errs = append(errs, c.checkGraph()...)
	return errors.Join(errs...)
}

// restartFields names each restart field and the strategies it belongs to.
var restartFields = []struct {
	name       string
	set        func(r *Restart) bool
	strategies []string
}{
	{"attempts", func(r *Restart) bool { return r.Attempts != 0 }, []string{FixedDelay, ExponentialDelay}},
	{"delay", func(r *Restart) bool { return r.Delay != 0 }, []string{FixedDelay, FailureRate}},
	{"maxFailuresPerInterval", func(r *Restart) bool { return r.MaxFailuresPerInterval != 0 }, []string{FailureRate}},
	{"failureRateInterval", func(r *Restart) bool { return r.FailureRateInterval != 0 }, []string{FailureRate}},
	{"initialBackoff", func(r *Restart) bool { return r.InitialBackoff != 0 }, []string{ExponentialDelay}},
	{"maxBackoff", func(r *Restart) bool { return r.MaxBackoff != 0 }, []string{ExponentialDelay}},
	{"backoffMultiplier", func(r *Restart) bool { return r.BackoffMultiplier != 0 }, []string{ExponentialDelay}},
	{"resetBackoffThreshold", func(r *Restart) bool { return r.ResetBackoffThreshold != 0 }, []string{ExponentialDelay}},
	{"jitterFactor", func(r *Restart) bool { return r.JitterFactor != nil }, []string{ExponentialDelay}},
}

// check validates the defaulted restart settings r; given is r as written,
// to tell fields of another strategy (an error, as the user may think they
// apply) from defaults.
func (r Restart) check(given Restart) []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !oneOf(r.Strategy, FixedDelay, FailureRate, ExponentialDelay, NoRestart) {
		add("restart.strategy: %q is not one of %s, %s, %s, %s", r.Strategy, FixedDelay, FailureRate, ExponentialDelay, NoRestart)
		return errs
	}
	if r.Strategy == NoRestart {
		return nil // the other fields are ignored, so that --set restart.strategy=none just works
	}
	for _, f := range restartFields {
		if f.set(&given) && !slices.Contains(f.strategies, r.Strategy) {
			add("restart.%s: only with strategy %s (strategy is %s)", f.name, strings.Join(f.strategies, " or "), r.Strategy)
		}
	}
	if r.Attempts < 0 {
		add("restart.attempts: must be ≥ 0, got %d", r.Attempts)
	}
	if r.Strategy == FailureRate && r.MaxFailuresPerInterval < 1 {
		add("restart.maxFailuresPerInterval: must be ≥ 1, got %d", r.MaxFailuresPerInterval)
	}
	if r.Strategy == ExponentialDelay {
		if r.MaxBackoff < r.InitialBackoff {
			add("restart.maxBackoff: %v is less than restart.initialBackoff %v", r.MaxBackoff.D(), r.InitialBackoff.D())
		}
		if r.BackoffMultiplier < 1 {
			add("restart.backoffMultiplier: must be ≥ 1, got %v", r.BackoffMultiplier)
		}
		if jf := r.JitterFactor; jf != nil && (*jf < 0 || *jf > 1) {
			add("restart.jitterFactor: must be between 0 and 1, got %v", *jf)
		}
	}
	return errs
}

// clone copies j deeply enough for ApplyDefaults not to touch j.
func (j *Job) clone() *Job {
	c := *j
	c.Nodes = slices.Clone(j.Nodes)
	for i := range c.Nodes {
		c.Nodes[i].Inputs = slices.Clone(c.Nodes[i].Inputs)
	}
	return &c
}

func oneOf(s string, choices ...string) bool { return slices.Contains(choices, s) }

// checkStorageURI accepts file:///absolute/path and hdfs://namenode/path.
func checkStorageURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URI: %v", s, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("%q: a file URI has an absolute path and no host, like file:///var/lib/sluice/checkpoints", s)
		}
		if !strings.HasPrefix(u.Path, "/") {
			return fmt.Errorf("%q: a file URI needs an absolute path, like file:///var/lib/sluice/checkpoints", s)
		}
	case "hdfs":
		if u.Host == "" {
			return fmt.Errorf("%q: an hdfs URI names its namenode, like hdfs://namenode:8020/sluice/checkpoints", s)
		}
		if !strings.HasPrefix(u.Path, "/") || u.Path == "/" {
			return fmt.Errorf("%q: an hdfs URI needs a path below the root, like hdfs://namenode:8020/sluice/checkpoints", s)
		}
	case "":
		return fmt.Errorf("%q has no scheme (want file:// or hdfs://)", s)
	default:
		return fmt.Errorf("%q: scheme %q is not supported (want file:// or hdfs://)", s, u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: a storage URI has no query or fragment", s)
	}
	return nil
}

// checkConstraint checks a Marathon-style placement constraint:
// [field, operator] or [field, operator, value].
func checkConstraint(c []string) error {
	if len(c) < 2 || len(c) > 3 {
		return fmt.Errorf("want [field, operator] or [field, operator, value], got %d elements", len(c))
	}
	if c[0] == "" {
		return errors.New("field (e.g. hostname) is empty")
	}
	op := c[1]
	switch op {
	case "UNIQUE":
		if len(c) == 3 {
			return errors.New("UNIQUE takes no value")
		}
	case "CLUSTER", "GROUP_BY":
	case "LIKE", "UNLIKE", "MAX_PER", "IS":
		if len(c) != 3 {
			return fmt.Errorf("%s needs a value", op)
		}
		if op == "LIKE" || op == "UNLIKE" {
			if _, err := regexp.Compile(c[2]); err != nil {
				return fmt.Errorf("%s: bad regular expression %q", op, c[2])
			}
		}
	default:
		return fmt.Errorf("operator %q is not one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS", op)
	}
	return nil
}
