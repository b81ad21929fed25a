package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"

	"github.com/IBM/sarama"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

func init() {
	nodes.Register("kafka", nodes.Factory{Kind: nodes.Sink, MinInputs: 1, MaxInputs: 1, Plan: planKafkaSink})
}

type kafkaSinkParams struct {
	kafkaClientParams
	Topic      string `json:"topic"`
	TopicField string `json:"topicField"`
	KeyField   string `json:"keyField"`
	// Format json writes each row as a JSON object; raw writes valueField.
	Format     string `json:"format"`
	ValueField string `json:"valueField"`
	// Delivery is at-least-once or exactly-once; default the job's
	// checkpoint mode.
	Delivery string `json:"delivery"`
	// TransactionalIDPrefix names this sink's transactional ids
	// ("<prefix>-<subtask>-<n>"); default "<job>-<node>".
	TransactionalIDPrefix string        `json:"transactionalIdPrefix"`
	TransactionTimeout    spec.Duration `json:"transactionTimeout"`
	// Mode spreads rows over clusters: round-robin (default) or
	// primary-backup (all to the first cluster while it is up).
	Mode string `json:"mode"`
	// TolerateFailures drops failed writes while they stay under a ratio
	// of the writes over a sliding window (at-least-once only).
	TolerateFailures *kafkaTolerance `json:"tolerateFailures"`
}

type kafkaTolerance struct {
	Ratio  float64       `json:"ratio"`
	Window spec.Duration `json:"window"`
}

type kafkaSinkConfig struct {
	p          kafkaSinkParams
	topicCol   int
	keyCol     int
	valueCol   int
	exactly    bool
	txnTimeout time.Duration
	primary    bool // mode primary-backup
	tolRatio   float64
	tolWindow  time.Duration // 0: no loss tolerance
}

// Sink modes over several clusters.
const (
	kafkaRoundRobin    = "round-robin"
	kafkaPrimaryBackup = "primary-backup"
)

func planKafkaSink(c *nodes.PlanContext) (*nodes.Planned, error) {
	var p kafkaSinkParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	in := c.Inputs[0]
	cfg := &kafkaSinkConfig{p: p, topicCol: -1, keyCol: -1, valueCol: -1}
	switch {
	case p.Topic != "" && p.TopicField != "":
		return nil, fmt.Errorf("params.topicField: give topic or topicField, not both")
	case p.Topic == "" && p.TopicField == "":
		return nil, fmt.Errorf("params.topic: required (or topicField)")
	case p.TopicField != "":
		if cfg.topicCol = in.Index(p.TopicField); cfg.topicCol < 0 || in.Fields[cfg.topicCol].Type != row.String {
			return nil, fmt.Errorf("params.topicField: %q is not a string field of %s", p.TopicField, in)
		}
	}
	if p.KeyField != "" {
		if cfg.keyCol = in.Index(p.KeyField); cfg.keyCol < 0 {
			return nil, fmt.Errorf("params.keyField: %q is not a field of %s", p.KeyField, in)
		}
	}
	switch p.Format {
	case "", "json":
		if p.ValueField != "" {
			return nil, fmt.Errorf("params.valueField: only with format raw")
		}
	case "raw":
		cfg.valueCol = in.Index(p.ValueField)
		if cfg.valueCol < 0 || (in.Fields[cfg.valueCol].Type != row.Bytes && in.Fields[cfg.valueCol].Type != row.String) {
			return nil, fmt.Errorf("params.valueField: %q is not a bytes or string field of %s", p.ValueField, in)
		}
	default:
		return nil, fmt.Errorf("params.format: %q is not json or raw", p.Format)
	}
	switch p.Delivery {
	case "":
		cfg.exactly = c.Job.Checkpoint.Mode != spec.AtLeastOnce
	case spec.ExactlyOnce:
		cfg.exactly = true
	case spec.AtLeastOnce:
	default:
		return nil, fmt.Errorf("params.delivery: %q is not at-least-once or exactly-once", p.Delivery)
	}
	multi := len(p.Clusters) > 1
	switch p.Mode {
	case "", kafkaRoundRobin:
	case kafkaPrimaryBackup:
		cfg.primary = true
	default:
		return nil, fmt.Errorf("params.mode: %q is not round-robin or primary-backup", p.Mode)
	}
	if p.Mode != "" && !multi {
		return nil, fmt.Errorf("params.mode: only with several clusters (params.clusters)")
	}
	if multi && cfg.exactly {
		// Transactions are per cluster: one checkpoint's rows over two
		// clusters cannot be committed atomically.
		return nil, fmt.Errorf("params.delivery: a sink over several clusters is at-least-once only (transactions are per cluster); set delivery to at-least-once")
	}
	if t := p.TolerateFailures; t != nil {
		if cfg.exactly {
			return nil, fmt.Errorf("params.tolerateFailures: only with delivery at-least-once (exactly-once never drops a write)")
		}
		if !(t.Ratio > 0 && t.Ratio < 1) {
			return nil, fmt.Errorf("params.tolerateFailures.ratio: %v is not between 0 and 1 (exclusive)", t.Ratio)
		}
		cfg.tolRatio, cfg.tolWindow = t.Ratio, t.Window.D()
		if cfg.tolWindow == 0 {
			cfg.tolWindow = time.Minute
		}
		if cfg.tolWindow < time.Second {
			return nil, fmt.Errorf("params.tolerateFailures.window: %v is shorter than 1s", cfg.tolWindow)
		}
	}
	cfg.txnTimeout = p.TransactionTimeout.D()
	if cfg.txnTimeout == 0 {
		cfg.txnTimeout = kafkaTxnTimeout
	}
	if cfg.txnTimeout < time.Second {
		return nil, fmt.Errorf("params.transactionTimeout: %v is too short", cfg.txnTimeout)
	}
	// A transaction stays open from one checkpoint barrier until the next
	// checkpoint completes: if the broker aborts it first, its rows are lost.
	if iv := c.Job.Checkpoint.Interval.D(); cfg.exactly && iv > 0 && cfg.txnTimeout < 2*iv {
		return nil, fmt.Errorf("params.transactionTimeout: %v is shorter than two checkpoint intervals (%v): transactions would be aborted before their checkpoint completes", cfg.txnTimeout, 2*iv)
	}
	if need := kafkaTxnNeed(c.Job); cfg.exactly && cfg.txnTimeout < need {
		// It can work, but a slow checkpoint followed by a restart outlives
		// the transaction: the restore then falls back to an older
		// checkpoint (or fails when none is retained).
		slog.Warn(fmt.Sprintf("kafka sink %s: params.transactionTimeout %v is shorter than a slow checkpoint plus a restart can take (%v: checkpoint interval + checkpoint timeout + restart delay); the broker may abort a pre-committed transaction first", c.Node.ID, cfg.txnTimeout, need),
			"node", c.Node.ID, "transactionTimeout", cfg.txnTimeout, "need", need)
	}
	if cfg.exactly {
		return &nodes.Planned{NewOperator: func() runtime.Operator { return &kafkaSinkEO{kafkaSinkBase: kafkaSinkBase{cfg: cfg}} }}, nil
	}
	return &nodes.Planned{NewOperator: func() runtime.Operator { return &kafkaSinkALO{kafkaSinkBase: kafkaSinkBase{cfg: cfg}} }}, nil
}

// kafkaTxnTimeout is the default transaction timeout: Kafka's default
// transaction.max.timeout.ms, the longest a broker accepts.
const kafkaTxnTimeout = 15 * time.Minute

// kafkaTxnNeed is how long a transaction can have to stay open without any
// fault of Kafka's: its rows start right after barrier k-1, checkpoint k
// can take up to the checkpoint timeout, and a job that fails before the
// commit commits it on restore, after the restart delay. (Each checkpoint
// that fails after it adds up to another timeout.)
func kafkaTxnNeed(j *spec.Job) time.Duration {
	need := j.Checkpoint.Interval.D() + j.Checkpoint.Timeout.D()
	return need + j.Restart.MaxDelay()
}

// acks counts a producer's messages in flight.
type acks struct {
	wg   sync.WaitGroup // the goroutines reading the producer's results
	mu   sync.Mutex
	cond *sync.Cond
	sent int64
	done int64
	err  error
	// first is where the producer's transaction wrote first in each
	// partition: a restore reads the end marker from there.
	first map[kafkaTP]int64
}

type kafkaTP struct {
	topic     string
	partition int32
}

func newAcks(p sarama.AsyncProducer) *acks {
	a := &acks{}
	a.cond = sync.NewCond(&a.mu)
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		for m := range p.Successes() {
			a.acked(m)
		}
	}()
	go func() {
		defer a.wg.Done()
		for e := range p.Errors() {
			a.ack(e)
		}
	}()
	return a
}

func (a *acks) ack(err *sarama.ProducerError) {
	a.mu.Lock()
	a.done++
	if err != nil && a.err == nil {
		a.err = fmt.Errorf("kafka sink: writing to %s: %w", err.Msg.Topic, err.Err)
	}
	a.cond.Broadcast()
	a.mu.Unlock()
}

// acked counts a written message and remembers the first offset of its
// partition (no allocation but the partition's first entry).
func (a *acks) acked(m *sarama.ProducerMessage) {
	a.mu.Lock()
	a.done++
	tp := kafkaTP{m.Topic, m.Partition}
	if o, ok := a.first[tp]; !ok || m.Offset < o {
		if a.first == nil {
			a.first = map[kafkaTP]int64{}
		}
		a.first[tp] = m.Offset
	}
	a.cond.Broadcast()
	a.mu.Unlock()
}

// parts lists where the transaction wrote first, sorted.
func (a *acks) parts() []kafkaTxnPart {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]kafkaTxnPart, 0, len(a.first))
	for tp, o := range a.first {
		out = append(out, kafkaTxnPart{tp.topic, tp.partition, o})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].topic != out[j].topic {
			return out[i].topic < out[j].topic
		}
		return out[i].partition < out[j].partition
	})
	return out
}

func (a *acks) failed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// wait blocks until every message sent is acknowledged.
func (a *acks) wait() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.done < a.sent {
		a.cond.Wait()
	}
	return a.err
}

// kafkaTxn is one transactional producer of an exactly-once sink subtask.
type kafkaTxn struct {
	id string
	// client and p live as long as the subtask: the producer runs the id's
	// transactions one after another (BeginTxn … CommitTxn), so
	// InitProducerId runs once, when it is created.
	client sarama.Client
	p      sarama.AsyncProducer
	acks   *acks
	n      int64 // messages in the open transaction
	cp     int64 // checkpoint that pre-committed it, 0: open or free
	pid    int64
	epoch  int16
	// parts is where its last pre-committed transaction (pending, or
	// committed since) wrote first.
	parts []kafkaTxnPart
	freed time.Time // when the producer last became free (or was made)
}

// kafkaProducerIdle is how long a free producer of the pool is kept for a
// later transaction: well below Kafka's default
// transactional.id.expiration.ms (7 days).
var kafkaProducerIdle = 24 * time.Hour

// kafkaSinkBase is what both kafka sinks share: the planned config and
// the encoding of rows into producer messages.
type kafkaSinkBase struct {
	runtime.BaseOperator
	cfg *kafkaSinkConfig
	buf []byte
	// records and bytes sent since the last flushSent (metrics.go)
	sentRecords, sentBytes int64
}

// kafkaSinkEO is the exactly-once kafka sink: a small pool of
// transactional producers per subtask; the rows between two barriers go
// into one transaction, pre-committed (flushed) at the barrier and committed
// when the checkpoint completes, while the next producer of the pool takes
// the rows after the barrier. (The at-least-once sink is kafkaSinkALO.)
type kafkaSinkEO struct {
	kafkaSinkBase
	client  sarama.Client
	prefix  string
	pool    []*kafkaTxn
	cur     *kafkaTxn
	pending []*kafkaTxn
	// epochs is the producer id and epoch of every transactional id of this
	// subtask's share, as fenced or as its producer got it: a checkpoint
	// records them, so a restore that falls back past a newer checkpoint
	// can tell whether any id was used after it (fallbackCheck).
	epochs   map[string]kafkaIDEpoch
	fallback *fallbackCheck // while Open must show nothing committed after the checkpoint
	// ends are the reads of the log end offsets each snapshot starts
	// (recorded for fallbackCheck), oldest first, until a commit waited
	// for them.
	ends []*kafkaEndsRead
}

// kafkaEndsRead reads the sink topic's log end offsets after a snapshot.
type kafkaEndsRead struct {
	cp     int64
	done   chan struct{}
	gaveUp chan struct{} // the snapshot was written without them
	ends   []kafkaTxnPart
	err    error
}

// kafkaEndsWait bounds how long a snapshot's write waits for the log end
// offsets (brokers down): without them only a fallback to the checkpoint
// is refused.
const kafkaEndsWait = 10 * time.Second

type kafkaIDEpoch struct {
	pid   int64
	epoch int16
	// Recorded only:
	open bool // the id had a transaction open for rows after the checkpoint
	// live: the id had a producer, which may have run transactions after
	// the checkpoint under the same epoch; last is where the producer's
	// last transaction before the checkpoint wrote first. v2: the entry
	// has both (checkpoints of versions that made a producer per
	// transaction have neither).
	live, v2 bool
	last     []kafkaTxnPart
}

// fallbackCheck compares each id's epoch, as the restore fences it, with
// the epoch the restored checkpoint recorded. Fencing bumps the epoch by
// one; anything else means the id was used (or fenced, or timed out) after
// the checkpoint, and a transaction of it may have committed. An id that
// had a producer at the checkpoint can have run transactions after it
// under the same epoch: for those the partitions' logs after the
// checkpoint's end offsets tell (checkLive).
type fallbackCheck struct {
	recorded map[string]kafkaIDEpoch
	ends     map[int][]kafkaTxnPart // log end offsets after the snapshot, by subtask
	seen     map[string]bool
	live     []string // ids to look for in the logs
	why      []string
}

// State entries of the exactly-once sink:
//
//	"txn <transactional id> <producer id> <epoch> <checkpoint> [<topic>:<partition>:<offset>,...]":
//	    a pre-committed transaction, committed by the restore; the list
//	    says where it wrote first in each partition (absent in checkpoints
//	    of versions before it), to read its end marker from.
const kafkaTxnEntry = "txn "

// "id <transactional id> <producer id> <epoch> <open 0|1> <live 0|1> <topic>:<partition>:<offset>,...|-":
// the epoch of an id of the subtask's share at the checkpoint
// (kafkaSinkEO.epochs), whether it had a producer (live), and where that
// producer's last pre-committed transaction wrote first. (Checkpoints of
// versions that made a producer per transaction stop after open.)
const kafkaIDEntry = "id "

// "ends <subtask> <topic>:<partition>:<offset>,...": the log end offsets
// of the sink topic, read after the snapshot and before any later
// transaction of the subtask committed (fallbackCheck).
const kafkaEndsEntry = "ends "

// kafkaTxnRecord is a transaction recorded in a checkpoint.
type kafkaTxnRecord struct {
	id    string
	pid   int64
	epoch int16
	cp    int64
	parts []kafkaTxnPart
}

func (t *kafkaTxn) entry() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s%s %d %d %d", kafkaTxnEntry, t.id, t.pid, t.epoch, t.cp)
	if len(t.parts) > 0 {
		b.WriteByte(' ')
		appendKafkaParts(&b, t.parts)
	}
	return b.String()
}

func parseKafkaTxn(e []byte) (*kafkaTxnRecord, bool, error) {
	rest, ok := strings.CutPrefix(string(e), kafkaTxnEntry)
	if !ok {
		return nil, false, nil
	}
	f := strings.Fields(rest)
	if len(f) != 4 && len(f) != 5 {
		return nil, true, fmt.Errorf("kafka sink: bad state entry %q: want 4 or 5 fields", e)
	}
	t := &kafkaTxnRecord{id: f[0]}
	var err error
	if _, err = fmt.Sscanf(strings.Join(f[1:4], " "), "%d %d %d", &t.pid, &t.epoch, &t.cp); err != nil {
		return nil, true, fmt.Errorf("kafka sink: bad state entry %q: %w", e, err)
	}
	if len(f) == 5 {
		if t.parts, err = parseKafkaParts(f[4]); err != nil {
			return nil, true, fmt.Errorf("kafka sink: bad state entry %q: %w", e, err)
		}
	}
	return t, true, nil
}

// parseKafkaParts parses "<topic>:<partition>:<offset>,..." ("-": none).
func parseKafkaParts(list string) ([]kafkaTxnPart, error) {
	if list == "-" {
		return nil, nil
	}
	var out []kafkaTxnPart
	for _, ps := range strings.Split(list, ",") {
		i, j := strings.LastIndexByte(ps, ':'), -1
		if i > 0 {
			j = strings.LastIndexByte(ps[:i], ':')
		}
		if j <= 0 {
			return nil, fmt.Errorf("%q is not topic:partition:offset", ps)
		}
		part, err1 := strconv.ParseInt(ps[j+1:i], 10, 32)
		off, err2 := strconv.ParseInt(ps[i+1:], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%q is not topic:partition:offset", ps)
		}
		out = append(out, kafkaTxnPart{ps[:j], int32(part), off})
	}
	return out, nil
}

// appendKafkaParts appends the list parseKafkaParts reads.
func appendKafkaParts(b *strings.Builder, parts []kafkaTxnPart) {
	if len(parts) == 0 {
		b.WriteString("-")
	}
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(b, "%s:%d:%d", p.topic, p.partition, p.offset)
	}
}

func (s *kafkaSinkBase) producerConfig() (*sarama.Config, error) {
	c, err := s.cfg.p.config(fmt.Sprintf("sluice-%s-%s-%d", s.Ctx.JobName, s.Ctx.NodeID, s.Ctx.Subtask))
	if err != nil {
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 10
	c.Producer.Retry.Backoff = 100 * time.Millisecond
	c.Producer.Partitioner = sarama.NewReferenceHashPartitioner // the Java client's murmur2
	c.Producer.Flush.Bytes = 1 << 20
	c.Producer.Flush.Frequency = 5 * time.Millisecond
	c.Producer.MaxMessageBytes = 1 << 20
	return c, nil
}

func (s *kafkaSinkEO) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.Ctx = ctx
	conf, err := s.cfg.p.config("")
	if err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	seeds := s.cfg.p.clusters()[0]
	if s.client, err = sarama.NewClient(kafkaAddrs(seeds), conf); err != nil {
		return fmt.Errorf("kafka sink: connecting to %v: %w", seeds, err)
	}
	rememberBrokers(seeds, s.client)
	s.prefix = s.cfg.p.TransactionalIDPrefix
	if s.prefix == "" {
		s.prefix = ctx.JobName + "-" + ctx.NodeID
	}
	s.epochs = map[string]kafkaIDEpoch{}
	if r != nil {
		if err := s.recover(r); err != nil {
			s.closeClient()
			return err
		}
		if r.SkippedNewer > r.CheckpointID && !r.AllowDuplicates {
			if err := s.startFallbackCheck(r); err != nil {
				s.closeClient()
				return err
			}
		}
	}
	if err := s.fenceAll(); err != nil {
		return err
	}
	// Creating the first producer fences its id: a transaction an earlier
	// attempt left open under it is aborted now, not at the first row.
	if err := s.begin(); err != nil {
		return err
	}
	if f := s.fallback; f != nil {
		s.fallback = nil
		// After the fences: a commit's markers are all written before
		// InitProducerId on its id returns.
		if err := s.checkLive(f, r.CheckpointID); err != nil {
			_ = s.Close()
			return err
		}
		if len(f.why) > 0 {
			_ = s.Close()
			more := ""
			if len(f.why) > 3 {
				more = fmt.Sprintf(" (and %d more)", len(f.why)-3)
			}
			return &runtime.FallbackRefusedError{Node: s.Ctx.NodeID, Reason: fmt.Sprintf(
				"checkpoint %d was skipped, and the kafka sink cannot show that none of its transactions committed after checkpoint %d: %s%s",
				r.SkippedNewer, r.CheckpointID, strings.Join(f.why[:min(3, len(f.why))], "; "), more)}
		}
		s.Ctx.Log.Info("kafka sink: no transaction was used after the restored checkpoint; falling back to it writes nothing twice", "checkpoint", r.CheckpointID, "skipped", r.SkippedNewer)
	}
	return nil
}

func (s *kafkaSinkEO) closeClient() {
	if s.client != nil {
		_ = s.client.Close()
		s.client = nil
	}
}

// startFallbackCheck reads the ids' epochs and the log end offsets the
// checkpoint recorded.
func (s *kafkaSinkEO) startFallbackCheck(r *runtime.Restored) error {
	f := &fallbackCheck{recorded: map[string]kafkaIDEpoch{}, ends: map[int][]kafkaTxnPart{}, seen: map[string]bool{}}
	for _, e := range r.OperatorState {
		if rest, ok := strings.CutPrefix(string(e), kafkaEndsEntry); ok {
			var sub int
			var list string
			if _, err := fmt.Sscanf(rest, "%d %s", &sub, &list); err != nil {
				return fmt.Errorf("kafka sink: bad state entry %q: %w", e, err)
			}
			ends, err := parseKafkaParts(list)
			if err != nil {
				return fmt.Errorf("kafka sink: bad state entry %q: %w", e, err)
			}
			f.ends[sub] = ends
			continue
		}
		rest, ok := strings.CutPrefix(string(e), kafkaIDEntry)
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		var v kafkaIDEpoch
		var open, live int
		var err error
		switch len(fs) {
		case 4:
			_, err = fmt.Sscanf(strings.Join(fs[1:], " "), "%d %d %d", &v.pid, &v.epoch, &open)
		case 6:
			if _, err = fmt.Sscanf(strings.Join(fs[1:5], " "), "%d %d %d %d", &v.pid, &v.epoch, &open, &live); err == nil {
				v.last, err = parseKafkaParts(fs[5])
			}
			v.v2 = true
		default:
			err = errors.New("want 4 or 6 fields")
		}
		if err != nil {
			return fmt.Errorf("kafka sink: bad state entry %q: %w", e, err)
		}
		v.open, v.live = open == 1, live == 1
		f.recorded[fs[0]] = v
	}
	s.fallback = f
	return nil
}

// fenced records an id's producer id and epoch after an InitProducerId
// (a fence or a new producer).
func (s *kafkaSinkEO) fenced(id string, pid int64, epoch int16) {
	s.epochs[id] = kafkaIDEpoch{pid: pid, epoch: epoch}
	f := s.fallback
	if f == nil || f.seen[id] {
		return
	}
	f.seen[id] = true
	was, ok := f.recorded[id]
	switch {
	case !ok:
		f.why = append(f.why, fmt.Sprintf("%s has no epoch recorded in the checkpoint", id))
	case was.pid != pid || epoch != was.epoch+1:
		f.why = append(f.why, fmt.Sprintf("%s went from producer %d epoch %d to producer %d epoch %d", id, was.pid, was.epoch, pid, epoch-1))
	case !was.v2 && was.open:
		f.why = append(f.why, fmt.Sprintf("%s had a transaction open for rows after the checkpoint", id))
	case was.live:
		f.live = append(f.live, id)
	}
}

// checkLive looks for transactions that ids with a producer at the
// checkpoint committed after it. Each id's producer runs one transaction
// at a time, and the coordinator writes all of a transaction's markers
// before the next one can add a partition: so, in each partition, the
// first control batch of the id's producer id after the first offset of
// its last transaction before the checkpoint ends that transaction (it may
// have committed after the snapshot: it is in the checkpoint), and every
// marker of an earlier one lies below the end offsets read after the
// snapshot. Any other commit marker of the producer id, from the end
// offsets on, ended a transaction of rows after the checkpoint. A partition
// created since is read from its start.
func (s *kafkaSinkEO) checkLive(f *fallbackCheck, cp int64) error {
	bySub := map[int][]string{}
	for _, id := range f.live {
		var sub, n int
		rest, ok := strings.CutPrefix(id, s.prefix+"-")
		if ok {
			_, err := fmt.Sscanf(rest, "%d-%d", &sub, &n)
			ok = err == nil
		}
		if _, recorded := f.ends[sub]; !ok || !recorded {
			f.why = append(f.why, fmt.Sprintf("%s had a producer at the checkpoint, and the checkpoint holds no log end offsets to look for its later transactions from (topicField, or they could not be read)", id))
			continue
		}
		bySub[sub] = append(bySub[sub], id)
	}
	for sub, ids := range bySub {
		if err := s.checkLiveSub(f, cp, f.ends[sub], ids); err != nil {
			return err
		}
	}
	return nil
}

func (s *kafkaSinkEO) checkLiveSub(f *fallbackCheck, cp int64, ends []kafkaTxnPart, ids []string) error {
	type watch struct {
		id      string
		last    map[kafkaTP]int64
		skipped map[kafkaTP]bool
		flagged bool
	}
	byPid := map[int64]*watch{}
	for _, id := range ids {
		rec := f.recorded[id]
		w := &watch{id: id, last: map[kafkaTP]int64{}, skipped: map[kafkaTP]bool{}}
		for _, p := range rec.last {
			w.last[kafkaTP{p.topic, p.partition}] = p.offset
		}
		byPid[rec.pid] = w
	}
	end := map[kafkaTP]int64{}
	topics := map[string]bool{}
	for _, p := range ends {
		end[kafkaTP{p.topic, p.partition}] = p.offset
		topics[p.topic] = true
	}
	for topic := range topics {
		_ = s.client.RefreshMetadata(topic)
		parts, err := s.client.Partitions(topic)
		if err != nil {
			return fmt.Errorf("kafka sink: partitions of %s: %w", topic, err)
		}
		for _, p := range parts {
			if _, ok := end[kafkaTP{topic, p}]; !ok {
				end[kafkaTP{topic, p}] = 0 // created after the checkpoint
			}
		}
	}
	start := maps.Clone(end)
	for _, w := range byPid {
		for tp, o := range w.last {
			if e, ok := start[tp]; !ok || o < e {
				start[tp] = o
			}
		}
	}
	flag := func(w *watch, why string) {
		if !w.flagged {
			w.flagged = true
			f.why = append(f.why, why)
		}
	}
	for tp, from := range start {
		gone, err := scanLog(s.client, tp.topic, tp.partition, from, func(rb *sarama.RecordBatch) bool {
			w := byPid[rb.ProducerID]
			if w == nil || !rb.Control {
				return false
			}
			m, ok := txnMarker(rb)
			if !ok {
				return false
			}
			if first, ok := w.last[tp]; ok {
				if rb.FirstOffset < first {
					return false // a transaction before the last one
				}
				if !w.skipped[tp] {
					w.skipped[tp] = true // the last one's marker
					return false
				}
			} else if e, ok := end[tp]; ok && rb.FirstOffset < e {
				return false
			}
			if m == txnCommitted {
				flag(w, fmt.Sprintf("%s committed a transaction after checkpoint %d (its marker is at %s/%d offset %d)", w.id, cp, tp.topic, tp.partition, rb.FirstOffset))
			}
			return false
		})
		if err != nil {
			return fmt.Errorf("kafka sink: looking for transactions after checkpoint %d: %w", cp, err)
		}
		if gone {
			for _, w := range byPid {
				flag(w, fmt.Sprintf("%s may have committed a transaction after checkpoint %d: %s/%d is deleted from offset %d on (retention)", w.id, cp, tp.topic, tp.partition, from))
			}
		}
	}
	return nil
}

// recover commits the transactions the restored checkpoint pre-committed,
// oldest first. An id's producer runs its transactions one after another
// under one epoch, so a recorded (id, producer id, epoch) may name a later
// transaction too, open at the crash, and EndTxn(commit) would commit that
// one (rows after the checkpoint, which the sources replay). So the
// partitions' logs decide first (the end marker after the transaction's
// first records): a transaction that ended is never ended again, and one
// that did not is its producer's current one (the producer begins the next
// only after it committed), which EndTxn commits. Every subtask settles
// every recorded transaction before it fences any id (fenceAll, creating a
// producer), so a commit that finds its epoch fenced was done by another
// subtask, unless the broker aborted the transaction on its timeout: the
// logs tell again. An aborted transaction's rows are lost unless the sources
// replay them, so the restore must start from a checkpoint taken before
// it (RestoreBeforeError): transactions commit in checkpoint order, so
// once one is aborted, the later ones are left alone (fencing aborts those
// still open).
func (s *kafkaSinkEO) recover(r *runtime.Restored) error {
	var recs []*kafkaTxnRecord
	for _, e := range r.OperatorState {
		t, ok, err := parseKafkaTxn(e)
		if err != nil {
			return err
		}
		if ok && (!r.Region || s.ownShare(t.id)) {
			recs = append(recs, t)
		}
	}
	// Oldest checkpoint first; within one, by where they wrote first, so
	// that committing one moves the partition's last stable offset up to
	// the next (which stableTxnOutcome then settles at once).
	sort.SliceStable(recs, func(i, j int) bool {
		a, b := recs[i], recs[j]
		if a.cp != b.cp {
			return a.cp < b.cp
		}
		if len(a.parts) == 0 || len(b.parts) == 0 {
			return len(a.parts) < len(b.parts)
		}
		pa, pb := a.parts[0], b.parts[0]
		if pa.topic != pb.topic {
			return pa.topic < pb.topic
		}
		if pa.partition != pb.partition {
			return pa.partition < pb.partition
		}
		return pa.offset < pb.offset
	})
	var aborted, committed []*kafkaTxnRecord
	for _, t := range recs {
		commit := len(aborted) == 0 || r.AcceptLoss
		out, err := s.settle(t, commit)
		if err != nil {
			return err
		}
		switch {
		case out == txnAborted:
			aborted = append(aborted, t)
			if r.AcceptLoss && s.Ctx.Subtask == 0 { // every subtask sees every entry: count once
				s.Ctx.Metrics.LostTransactions.Add(1)
				s.Ctx.Log.Warn("kafka sink: a transaction of the restored checkpoint was aborted by the broker; its rows are lost (accepted: --accept-lost-transactions)",
					"transactionalId", t.id, "producerId", t.pid, "epoch", t.epoch, "checkpoint", t.cp)
			}
		case out == txnCommitted:
			committed = append(committed, t)
		}
	}
	if len(aborted) == 0 || r.AcceptLoss {
		return nil
	}
	a := aborted[0]
	var late []*kafkaTxnRecord // committed, of the aborted one's checkpoint or later
	for _, t := range committed {
		if t.cp >= a.cp {
			late = append(late, t)
		}
	}
	why := fmt.Sprintf("kafka sink %s: transaction %s (producer id %d, epoch %d) pre-committed at checkpoint %d was aborted by the broker (transactionTimeout %v passed before it was committed)",
		s.Ctx.NodeID, a.id, a.pid, a.epoch, a.cp, s.cfg.txnTimeout)
	if len(late) > 0 {
		// Some transactions of that checkpoint or later committed: an
		// older checkpoint would write their rows again, this one loses
		// the aborted rows.
		return &runtime.FallbackRefusedError{Node: s.Ctx.NodeID, Reason: fmt.Sprintf("%s, but transaction %s of checkpoint %d committed: restoring checkpoint %d loses rows, an older one duplicates rows (--accept-lost-transactions accepts the loss)",
			why, late[0].id, late[0].cp, r.CheckpointID)}
	}
	s.Ctx.Log.Warn(why+"; restoring from an older checkpoint so the sources replay its rows", "transactionalId", a.id, "checkpoint", a.cp)
	return &runtime.RestoreBeforeError{Before: a.cp, Reason: why}
}

// settle finds out how a recorded transaction ended, committing it first
// when commit is set and it is still open.
func (s *kafkaSinkEO) settle(t *kafkaTxnRecord, commit bool) (txnOutcome, error) {
	if len(t.parts) > 0 {
		out, err := txnLogOutcome(s.client, t.pid, t.parts)
		if err != nil {
			return 0, fmt.Errorf("kafka sink: transaction %s of checkpoint %d: %w", t.id, t.cp, err)
		}
		switch out {
		case txnGone:
			s.Ctx.Log.Warn("kafka sink: a transaction of the restored checkpoint ended long ago; its end marker is no longer readable, taking it as committed",
				"transactionalId", t.id, "producerId", t.pid, "epoch", t.epoch, "checkpoint", t.cp)
			return txnCommitted, nil
		case txnCommitted, txnAborted:
			s.Ctx.Log.Info("kafka sink: a transaction of the restored checkpoint had already ended", "transactionalId", t.id, "producerId", t.pid, "epoch", t.epoch, "checkpoint", t.cp, "outcome", out.String())
			return out, nil
		}
		if !commit {
			return txnOpen, nil // not committed: fencing aborts it
		}
	}
	// Open, or recorded by a version that did not say where it wrote (and
	// made a producer, hence an epoch, per transaction): commit it.
	res := txnFenced
	if commit {
		var err error
		if res, err = endTxn(s.client, t.id, t.pid, t.epoch, true); err != nil {
			return 0, err
		}
		if res == txnEnded {
			s.Ctx.Log.Info("kafka sink: committed the transaction of a restored checkpoint", "transactionalId", t.id, "producerId", t.pid, "epoch", t.epoch, "checkpoint", t.cp)
			return txnCommitted, nil
		}
	}
	// The epoch is gone: read the end marker. A real broker writes the
	// markers after answering EndTxn, so an open one may yet end.
	var out txnOutcome
	for attempt := 0; ; attempt++ {
		var err error
		if out, err = txnLogOutcome(s.client, t.pid, t.parts); err != nil {
			return 0, fmt.Errorf("kafka sink: transaction %s of checkpoint %d: %w", t.id, t.cp, err)
		}
		if out != txnOpen || !commit || attempt >= 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	switch out {
	case txnOpen:
		if commit {
			return 0, fmt.Errorf("kafka sink: transaction %s (producer id %d, epoch %d) of checkpoint %d: its epoch is fenced but no end marker follows its records", t.id, t.pid, t.epoch, t.cp)
		}
		return txnOpen, nil // not committed: fencing aborts it
	case txnGone:
		// Nothing left to read: retention removed the records (the
		// transaction ended long ago), or a checkpoint of an older version
		// did not record where it wrote.
		what := "its epoch is fenced"
		if res == txnForgotten {
			what = "the broker no longer knows its producer id (transactional.id.expiration.ms passed)"
		}
		s.Ctx.Log.Warn("kafka sink: a transaction of the restored checkpoint ended long ago; its end marker is no longer readable, taking it as committed: "+what,
			"transactionalId", t.id, "producerId", t.pid, "epoch", t.epoch, "checkpoint", t.cp)
		return txnCommitted, nil
	}
	s.Ctx.Log.Info("kafka sink: a transaction of the restored checkpoint had already ended", "transactionalId", t.id, "producerId", t.pid, "epoch", t.epoch, "checkpoint", t.cp, "outcome", out.String())
	return out, nil
}

// ownShare reports whether transactional id "<prefix>-<s>-<n>" is this
// subtask's (s mod parallelism), as fenceAll splits them. A subtask
// restarted alone (region failover) settles only its own: the others'
// producers run on and commit theirs, and an EndTxn on a triple their
// producer has reused since would commit a later transaction.
func (s *kafkaSinkEO) ownShare(id string) bool {
	rest, ok := strings.CutPrefix(id, s.prefix+"-")
	if !ok {
		return false
	}
	sub, _, _ := strings.Cut(rest, "-")
	n, err := strconv.Atoi(sub)
	return err == nil && n%s.Ctx.Parallelism == s.Ctx.Subtask
}

// kafkaTxnPool is the most transactional producers a subtask has: pending
// transactions of checkpoints that did not complete yet, plus the open one.
const kafkaTxnPool = 4

// fenceAll fences every transactional id any earlier attempt can have used:
// "<prefix>-<s>-<n>" for s below maxParallelism and n below kafkaTxnPool,
// split among the subtasks by s mod parallelism. Ids used by an attempt
// that crashed before its first checkpoint are in no checkpoint, so the
// ids are fenced by range (a transaction left open would hold back every
// read_committed consumer until the transaction timeout).
func (s *kafkaSinkEO) fenceAll() error {
	var ids []string
	for sub := s.Ctx.Subtask; sub < max(s.Ctx.MaxParallelism, s.Ctx.Parallelism); sub += s.Ctx.Parallelism {
		for n := 0; n < kafkaTxnPool; n++ {
			if sub == s.Ctx.Subtask && n == 0 {
				continue // the first producer, created next, fences it
			}
			ids = append(ids, fmt.Sprintf("%s-%d-%d", s.prefix, sub, n))
		}
	}
	// The ids are independent (and their coordinators spread over the
	// brokers): fence them concurrently rather than 4 × maxParallelism round
	// trips one after another. A broker answers one connection's requests
	// one at a time, so the workers share a few clients (connections).
	clients := []sarama.Client{s.client}
	if len(ids) > kafkaFenceWorkers {
		conf, err := s.cfg.p.config("")
		if err != nil {
			return fmt.Errorf("kafka sink: %w", err)
		}
		for len(clients) < kafkaFenceClients {
			c, err := sarama.NewClient(kafkaAddrs(s.cfg.p.clusters()[0]), conf)
			if err != nil {
				break // fewer connections, not a failure
			}
			defer c.Close()
			clients = append(clients, c)
		}
	}
	type fence struct {
		pid   int64
		epoch int16
		err   error
	}
	out := make([]fence, len(ids))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(kafkaFenceWorkers, len(ids)); w++ {
		wg.Add(1)
		client := clients[w%len(clients)]
		go func() {
			defer wg.Done()
			for i := range next {
				f := &out[i]
				f.pid, f.epoch, f.err = fenceTxnID(client, ids[i], s.cfg.txnTimeout)
			}
		}()
	}
	for i := range ids {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, f := range out {
		if f.err != nil {
			return f.err
		}
		s.fenced(ids[i], f.pid, f.epoch)
	}
	return nil
}

// kafkaFenceWorkers bounds the InitProducerId requests a subtask has in
// flight at start.
const kafkaFenceWorkers = 16

// kafkaFenceClients is how many clients (connections to each broker) the
// fencing workers share when there are more ids than workers.
const kafkaFenceClients = 4

// begin makes sure a transaction is open for the next rows, on a free id
// of the pool: its producer, once created, stays for the next transactions
// (so one checkpoint's transaction and a later one share their (id,
// producer id, epoch): recover tells them apart by the logs).
func (s *kafkaSinkEO) begin() error {
	if t := s.cur; t != nil {
		if t.n > 0 || time.Since(t.freed) <= kafkaProducerIdle {
			return nil
		}
		// Open and empty since long ago (no rows): nothing of it reached
		// the coordinator, so sarama ends it locally, and its producer is
		// replaced below.
		if err := t.p.AbortTxn(); err != nil {
			return fmt.Errorf("kafka sink: ending the empty transaction of %s: %w", t.id, err)
		}
		s.cur = nil
	}
	var t *kafkaTxn
	for _, u := range s.pool {
		if u.cp == 0 && (t == nil || t.p == nil && u.p != nil) {
			t = u
		}
	}
	if t == nil {
		if len(s.pool) >= kafkaTxnPool {
			return fmt.Errorf("kafka sink: %d transactions wait for their checkpoints to complete", len(s.pool))
		}
		t = &kafkaTxn{id: fmt.Sprintf("%s-%d-%d", s.prefix, s.Ctx.Subtask, len(s.pool))}
		s.pool = append(s.pool, t)
	}
	if t.client == nil {
		c, err := s.producerConfig()
		if err != nil {
			return err
		}
		c.Producer.Transaction.ID = t.id
		c.Producer.Transaction.Timeout = s.cfg.txnTimeout
		c.Producer.Transaction.Retry.Backoff = 100 * time.Millisecond
		if t.client, err = sarama.NewClient(kafkaAddrs(s.cfg.p.clusters()[0]), c); err != nil {
			return fmt.Errorf("kafka sink: client of transactional id %s: %w", t.id, err)
		}
	}
	if t.p != nil && time.Since(t.freed) > kafkaProducerIdle {
		// The coordinator forgets an id idle for
		// transactional.id.expiration.ms (7 days by default), and its
		// producer would fail at its next transaction: a new one instead.
		if err := closeProducer(t.p, t.acks); err != nil {
			return err
		}
		t.p, t.acks = nil, nil
	}
	if t.p == nil {
		p, err := sarama.NewAsyncProducerFromClient(t.client)
		if err != nil {
			return fmt.Errorf("kafka sink: transactional producer %s: %w", t.id, err)
		}
		t.p, t.acks = p, newAcks(p)
		pid, epoch, err := producerIDEpoch(p)
		if err != nil {
			return err
		}
		t.pid, t.epoch, t.freed = pid, epoch, time.Now()
		s.fenced(t.id, pid, epoch)
	}
	if err := t.p.BeginTxn(); err != nil {
		return fmt.Errorf("kafka sink: beginning a transaction on %s: %w", t.id, err)
	}
	t.acks.mu.Lock()
	clear(t.acks.first)
	t.acks.mu.Unlock()
	t.n = 0
	s.cur = t
	return nil
}

func (s *kafkaSinkEO) Process(_ int, b *row.Batch) error {
	defer b.Release()
	if err := s.begin(); err != nil {
		return err
	}
	prod, a := s.cur.p, s.cur.acks
	s.cur.n += int64(b.Len)
	if err := a.failed(); err != nil {
		return err
	}
	a.mu.Lock()
	a.sent += int64(b.Len)
	a.mu.Unlock()
	s.send(prod.Input(), b, nil)
	return nil
}

// send writes a batch's rows to a producer's input; meta marks the
// messages (at-least-once: which cluster they went to).
func (s *kafkaSinkBase) send(in chan<- *sarama.ProducerMessage, b *row.Batch, meta any) {
	for i := 0; i < b.Len; i++ {
		m := &sarama.ProducerMessage{Topic: s.cfg.p.Topic, Metadata: meta}
		if s.cfg.topicCol >= 0 {
			m.Topic = b.Cols[s.cfg.topicCol].Strs[i]
		}
		if s.cfg.keyCol >= 0 {
			m.Key = keyEncoder(&b.Cols[s.cfg.keyCol], i)
		}
		if s.cfg.valueCol >= 0 {
			c := &b.Cols[s.cfg.valueCol]
			if c.Type == row.Bytes {
				m.Value = sarama.ByteEncoder(c.Bytes[i])
			} else {
				m.Value = sarama.StringEncoder(c.Strs[i])
			}
		} else {
			start := len(s.buf)
			s.buf = row.AppendJSON(s.buf, b, i)
			m.Value = sarama.ByteEncoder(s.buf[start:len(s.buf):len(s.buf)])
		}
		s.sent(m)
		in <- m
	}
	s.buf = nil // the messages own their bytes until acknowledged
	s.flushSent()
}

func keyEncoder(c *row.Column, i int) sarama.Encoder {
	switch c.Type {
	case row.String:
		return sarama.StringEncoder(c.Strs[i])
	case row.Bytes:
		return sarama.ByteEncoder(c.Bytes[i])
	case row.Int64, row.Timestamp:
		return sarama.StringEncoder(strconv.FormatInt(c.Ints[i], 10))
	case row.Float64:
		return sarama.StringEncoder(strconv.FormatFloat(c.Floats[i], 'g', -1, 64))
	case row.Bool:
		return sarama.StringEncoder(strconv.FormatBool(c.Bools[i]))
	}
	return nil
}

func (s *kafkaSinkBase) Watermark(int64) error { return nil }

// Snapshot pre-commits the open transaction and records the pending ones.
func (s *kafkaSinkEO) Snapshot(id int64) (runtime.Snapshot, error) {
	if t := s.cur; t != nil && t.n > 0 {
		if err := t.acks.wait(); err != nil {
			return nil, err
		}
		pid, epoch, err := producerIDEpoch(t.p)
		if err != nil {
			return nil, err
		}
		t.cp, t.pid, t.epoch, t.parts = id, pid, epoch, t.acks.parts()
		s.pending = append(s.pending, t)
		s.cur = nil
	}
	entries := make([]string, 0, len(s.pending)+len(s.epochs))
	for _, t := range s.pending {
		entries = append(entries, t.entry())
	}
	slots := map[string]*kafkaTxn{}
	for _, t := range s.pool {
		if t.p != nil {
			slots[t.id] = t
		}
	}
	var b strings.Builder
	for id, v := range s.epochs {
		open, live := 0, 0
		if s.cur != nil && s.cur.id == id {
			open = 1
		}
		t := slots[id]
		if t != nil {
			live = 1
			// The epoch is the producer's (read again after sarama may
			// have bumped it on an error).
			v.pid, v.epoch = t.pid, t.epoch
		}
		b.Reset()
		fmt.Fprintf(&b, "%s%s %d %d %d %d ", kafkaIDEntry, id, v.pid, v.epoch, open, live)
		if t != nil {
			appendKafkaParts(&b, t.parts)
		} else {
			b.WriteString("-")
		}
		entries = append(entries, b.String())
	}
	var ends *kafkaEndsRead
	if s.cfg.topicCol < 0 {
		// Read after the snapshot, before any later transaction commits
		// (CheckpointComplete waits for it): a fallback to this
		// checkpoint looks for later commits from there.
		ends = &kafkaEndsRead{cp: id, done: make(chan struct{}), gaveUp: make(chan struct{})}
		s.ends = append(s.ends, ends)
		client, topic := s.client, s.cfg.p.Topic
		go func() {
			defer close(ends.done)
			ends.ends, ends.err = logEnds(client, topic)
		}()
	}
	sub, log := s.Ctx.Subtask, s.Ctx.Log
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for _, e := range entries {
			w.AddOperatorState([]byte(e))
		}
		if ends != nil {
			var list []kafkaTxnPart
			var err error
			select {
			case <-ends.done:
				list, err = ends.ends, ends.err
			case <-time.After(kafkaEndsWait):
				err = errors.New("timed out")
				close(ends.gaveUp)
			}
			if err != nil {
				// Not a failure: only a fallback to this checkpoint (past
				// a corrupt newer one) cannot show that nothing committed
				// after it, and is refused.
				log.Warn("kafka sink: reading the log end offsets for the checkpoint", "checkpoint", id, "err", err)
				return nil
			}
			var b strings.Builder
			fmt.Fprintf(&b, "%s%d ", kafkaEndsEntry, sub)
			appendKafkaParts(&b, list)
			w.AddOperatorState([]byte(b.String()))
		}
		return nil
	}), nil
}

// waitEnds waits for the log end offsets read by the snapshots before
// checkpoint id: transactions of rows after them commit only then.
func (s *kafkaSinkEO) waitEnds(id int64) {
	k := 0
	for _, r := range s.ends {
		if r.cp < id {
			select {
			case <-r.done:
			case <-r.gaveUp:
			}
			continue
		}
		s.ends[k] = r
		k++
	}
	s.ends = s.ends[:k]
}

// CheckpointComplete commits the transactions pre-committed at checkpoints
// up to id.
func (s *kafkaSinkEO) CheckpointComplete(id int64) error {
	if h := kafkaBeforeCommit; h != nil {
		if err := h(s.Ctx, id); err != nil {
			return err
		}
	}
	s.waitEnds(id)
	k := 0
	for _, t := range s.pending {
		if t.cp > id {
			s.pending[k] = t
			k++
			continue
		}
		if err := t.p.CommitTxn(); err != nil {
			return fmt.Errorf("kafka sink: committing %s (checkpoint %d): %w", t.id, t.cp, err)
		}
		t.cp, t.freed = 0, time.Now() // free: its producer takes a later transaction
	}
	s.pending = s.pending[:k]
	return nil
}

// kafkaBeforeCommit, when set (by tests), runs before an exactly-once sink
// commits at CheckpointComplete: an error there is a crash between
// pre-commit and commit.
var kafkaBeforeCommit func(ctx *runtime.Context, id int64) error

// closeProducer closes p and waits for its last results.
func closeProducer(p sarama.AsyncProducer, a *acks) error {
	p.AsyncClose()
	a.wg.Wait()
	return a.failed()
}

func (s *kafkaSinkEO) Close() error {
	// Pre-committed transactions stay open: the next attempt commits them
	// from its checkpoint. The open one is aborted by the next attempt's
	// producer of the same id, or by the transaction timeout.
	var first error
	for _, t := range s.pool {
		if t.p != nil {
			if err := closeProducer(t.p, t.acks); err != nil && first == nil {
				first = err
			}
		}
		if t.client != nil {
			_ = t.client.Close()
		}
	}
	if s.client != nil {
		_ = s.client.Close()
	}
	return first
}
