package kafka

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"

	"github.com/IBM/sarama"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

func init() {
	nodes.Register("kafka", nodes.Factory{Kind: nodes.Source, Plan: planKafkaSource})
}

type kafkaSourceParams struct {
	kafkaClientParams
	Topics       []string `json:"topics"`
	TopicPattern string   `json:"topicPattern"`
	// Format is json (the value is a JSON object mapped onto fields) or raw
	// (the value is the bytes field "value").
	Format string              `json:"format"`
	Fields []nodes.SchemaField `json:"fields"`
	// Metadata fields, added after the value's fields when named.
	KeyField       string `json:"keyField"`
	TopicField     string `json:"topicField"`
	PartitionField string `json:"partitionField"`
	OffsetField    string `json:"offsetField"`
	TimestampField string `json:"timestampField"`
	HeadersField   string `json:"headersField"`
	// StartFrom applies to the partitions found when the job starts without
	// a checkpoint: earliest (default), latest, timestamp (startTimestamp,
	// epoch ms) or group (the committed offsets of group, else earliest).
	StartFrom      string `json:"startFrom"`
	StartTimestamp int64  `json:"startTimestamp"`
	Group          string `json:"group"`
	// EventTime names a timestamp/int64 field; default: the record timestamp.
	EventTime string                `json:"eventTime"`
	Watermark nodes.WatermarkParams `json:"watermark"`
	// DeadLetterOutput is the side output of records that do not parse.
	DeadLetterOutput string `json:"deadLetterOutput"`
	// DiscoveryInterval is how often new partitions are looked for (0: 10s;
	// negative: never).
	DiscoveryInterval spec.Duration `json:"discoveryInterval"`
	// Bounded ends the source once every partition is read up to the end
	// offsets it had when the subtask started.
	Bounded bool `json:"bounded"`
	// Isolation is read_committed (default) or read_uncommitted.
	Isolation string `json:"isolation"`
	// CommitOffsetsToGroup commits the offsets of every completed
	// checkpoint to this consumer group, for lag monitoring. They are never
	// read back, except by a job that starts with startFrom group.
	CommitOffsetsToGroup string `json:"commitOffsetsToGroup"`
	// OffsetReset says what to do with an offset outside a partition's
	// range [log start, high watermark]: fail, earliest or latest. Default:
	// fail under exactly-once, earliest under at-least-once.
	OffsetReset string `json:"offsetReset"`
	// Rate limits the records read per second over the whole source (split
	// evenly across subtasks); 0: no limit.
	Rate float64 `json:"rate"`
}

// Offset reset policies (params.offsetReset).
const (
	resetFail     = "fail"
	resetEarliest = "earliest"
	resetLatest   = "latest"
)

// KafkaDLQSchema is the kafka source's dead-letter side output.
var KafkaDLQSchema = row.MustSchema(
	row.Field{Name: "value", Type: row.Bytes},
	row.Field{Name: "error", Type: row.String},
	row.Field{Name: "topic", Type: row.String},
	row.Field{Name: "partition", Type: row.Int64},
	row.Field{Name: "offset", Type: row.Int64},
)

type kafkaSourceConfig struct {
	p         kafkaSourceParams
	pattern   *regexp.Regexp
	schema    *row.Schema
	nValue    int // the first nValue fields come from the value
	valueSch  *row.Schema
	raw       bool
	meta      [6]int // column of key, topic, partition, offset, timestamp, headers; -1 if absent
	timeCol   int    // event time column, -1: the record timestamp
	ooo       int64
	idle      time.Duration
	discovery time.Duration
	dlq       string
	reset     string // offsetReset as given; "" resolves at Open by the job's mode
}

const (
	metaKey = iota
	metaTopic
	metaPartition
	metaOffset
	metaTimestamp
	metaHeaders
)

func planKafkaSource(c *nodes.PlanContext) (*nodes.Planned, error) {
	var p kafkaSourceParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	cfg := &kafkaSourceConfig{p: p, timeCol: -1, ooo: p.Watermark.OutOfOrderness.Millis(), idle: p.Watermark.IdleTimeout.D()}
	switch {
	case len(p.Topics) > 0 && p.TopicPattern != "":
		return nil, fmt.Errorf("params.topicPattern: give topics or topicPattern, not both")
	case len(p.Topics) == 0 && p.TopicPattern == "":
		return nil, fmt.Errorf("params.topics: required (a list of topics, or topicPattern)")
	case p.TopicPattern != "":
		re, err := regexp.Compile("^(?:" + p.TopicPattern + ")$")
		if err != nil {
			return nil, fmt.Errorf("params.topicPattern: %w", err)
		}
		cfg.pattern = re
	}
	var fields []row.Field
	switch p.Format {
	case "", "json":
		s, err := nodes.ParseFields(p.Fields)
		if err != nil {
			return nil, err
		}
		fields = append(fields, s.Fields...)
	case "raw":
		if len(p.Fields) > 0 {
			return nil, fmt.Errorf("params.fields: not used with format raw (the value is the bytes field \"value\")")
		}
		cfg.raw = true
		fields = append(fields, row.Field{Name: "value", Type: row.Bytes})
	default:
		return nil, fmt.Errorf("params.format: %q is not json or raw", p.Format)
	}
	cfg.nValue = len(fields)
	cfg.valueSch = row.MustSchema(fields...)
	meta := []struct {
		name, param string
		t           row.Type
	}{
		{p.KeyField, "keyField", row.String},
		{p.TopicField, "topicField", row.String},
		{p.PartitionField, "partitionField", row.Int64},
		{p.OffsetField, "offsetField", row.Int64},
		{p.TimestampField, "timestampField", row.Timestamp},
		{p.HeadersField, "headersField", row.String},
	}
	for i, m := range meta {
		cfg.meta[i] = -1
		if m.name == "" {
			continue
		}
		for _, f := range fields {
			if f.Name == m.name {
				return nil, fmt.Errorf("params.%s: %q is already a field", m.param, m.name)
			}
		}
		cfg.meta[i] = len(fields)
		fields = append(fields, row.Field{Name: m.name, Type: m.t})
	}
	schema, err := row.NewSchema(fields...)
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	cfg.schema = schema
	if p.EventTime != "" {
		cfg.timeCol = schema.Index(p.EventTime)
		if cfg.timeCol < 0 || !schema.Fields[cfg.timeCol].Type.IsInt() {
			return nil, fmt.Errorf("params.eventTime: %q is not a timestamp or int64 field of %s", p.EventTime, schema)
		}
	}
	switch p.StartFrom {
	case "", "earliest", "latest":
	case "timestamp":
		if p.StartTimestamp <= 0 {
			return nil, fmt.Errorf("params.startTimestamp: required with startFrom timestamp (epoch milliseconds)")
		}
	case "group":
		if p.Group == "" {
			return nil, fmt.Errorf("params.group: required with startFrom group")
		}
	default:
		return nil, fmt.Errorf("params.startFrom: %q is not earliest, latest, timestamp or group", p.StartFrom)
	}
	switch p.Isolation {
	case "", "read_committed", "read_uncommitted":
	default:
		return nil, fmt.Errorf("params.isolation: %q is not read_committed or read_uncommitted", p.Isolation)
	}
	switch p.OffsetReset {
	case "", resetFail, resetEarliest, resetLatest:
	default:
		return nil, fmt.Errorf("params.offsetReset: %q is not fail, earliest or latest", p.OffsetReset)
	}
	cfg.reset = p.OffsetReset
	if p.Rate < 0 {
		return nil, fmt.Errorf("params.rate: must be > 0 records/s, got %v", p.Rate)
	}
	cfg.discovery = p.DiscoveryInterval.D()
	if cfg.discovery == 0 {
		cfg.discovery = 10 * time.Second
	}
	pl := &nodes.Planned{Schema: schema, NewSource: func() runtime.Source { return &kafkaSource{cfg: cfg} }}
	if !cfg.raw {
		cfg.dlq = p.DeadLetterOutput
		if cfg.dlq == "" {
			cfg.dlq = "dlq"
		}
		pl.Side = map[string]*row.Schema{cfg.dlq: KafkaDLQSchema}
	} else if p.DeadLetterOutput != "" {
		return nil, fmt.Errorf("params.deadLetterOutput: format raw never fails to parse")
	}
	return pl, nil
}

type topicPart struct {
	cluster   int // index into params.clusters; 0 with brokers
	topic     string
	partition int32
}

// kafkaPart is one partition a subtask reads.
type kafkaPart struct {
	topicPart
	pc       sarama.PartitionConsumer // nil while its cluster is down
	next     int64                    // next offset to emit
	end      int64                    // bounded: stop at this offset
	maxTS    int64                    // largest event time emitted
	lastSeen time.Time
	done     bool
	skip     bool // skip the backlog when its cluster returns (SkipBacklog while down)
}

// kafkaSrcCluster is one cluster a source subtask reads. While its health
// watcher says it is down the cluster has no client, and its partitions
// keep their offsets (in checkpoints too) until it returns.
type kafkaSrcCluster struct {
	idx      int
	seeds    []string
	health   *kafkaHealth
	client   sarama.Client
	consumer sarama.Consumer
	started  bool // its initial partitions were opened (startFrom applies before)
	lastDisc time.Time
	nextTry  time.Time // no reconnect attempt before
	errs     int       // fetch errors logged
}

// kafkaSource reads the partitions kafkaOwner gives its subtask, from every
// cluster. Its operator state is one entry per partition: the next offset
// and the largest event time, restored by union so any parallelism can take
// over.
type kafkaSource struct {
	cfg      *kafkaSourceConfig
	ctx      *runtime.Context
	conf     *sarama.Config
	clusters []*kafkaSrcCluster
	parts    []*kafkaPart
	byTP     map[topicPart]*kafkaPart
	restored map[topicPart]kafkaPartState
	closing  sync.WaitGroup // clients of failed clusters being closed
	rr       int
	bad      int64
	wm       int64
	idle     nodes.Idleness
	commit   *kafkaCommitter // commitOffsetsToGroup; nil without
	reset    string          // offsetReset, resolved
	limit    rateLimit
	m        sourceMeter // records, bytes and lag for the metrics (metrics.go)
}

type kafkaPartState struct {
	next, maxTS int64
}

// State entries. Version 1 (single cluster, and cluster 0): version byte 1,
// partition (4), next offset (8), max event time (8), topic. Version 2
// (clusters after the first): version byte 2, cluster (1), then as version
// 1. Cluster 0 keeps writing version 1 so that a single-cluster job's
// checkpoints stay readable by releases that know only version 1.
func encodeKafkaPart(p *kafkaPart) []byte {
	h := 21
	if p.cluster > 0 {
		h = 22
	}
	e := make([]byte, h, h+len(p.topic))
	b := e
	if p.cluster > 0 {
		e[0], e[1] = 2, byte(p.cluster)
		b = e[1:]
	} else {
		e[0] = 1
	}
	binary.BigEndian.PutUint32(b[1:], uint32(p.partition))
	binary.BigEndian.PutUint64(b[5:], uint64(p.next))
	binary.BigEndian.PutUint64(b[13:], uint64(p.maxTS))
	return append(e, p.topic...)
}

func decodeKafkaPart(e []byte) (topicPart, kafkaPartState, error) {
	var tp topicPart
	switch {
	case len(e) >= 21 && e[0] == 1:
	case len(e) >= 22 && e[0] == 2:
		tp.cluster = int(e[1])
		e = e[1:]
	default:
		return tp, kafkaPartState{}, fmt.Errorf("kafka source: bad state entry (%d bytes)", len(e))
	}
	tp.topic, tp.partition = string(e[21:]), int32(binary.BigEndian.Uint32(e[1:]))
	return tp, kafkaPartState{int64(binary.BigEndian.Uint64(e[5:])), int64(binary.BigEndian.Uint64(e[13:]))}, nil
}

func (s *kafkaSource) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.ctx = ctx
	s.byTP = map[topicPart]*kafkaPart{}
	s.wm = runtime.MinWatermark
	s.idle = nodes.NewIdleness(s.cfg.idle)
	s.reset = s.cfg.reset
	if s.reset == "" {
		// Exactly-once must not skip or replay records silently;
		// at-least-once tolerates replays, and below the log start the
		// earliest offset loses the least.
		s.reset = resetEarliest
		if ctx.ExactlyOnce {
			s.reset = resetFail
		}
	}
	if s.cfg.p.Rate > 0 {
		s.limit = rateLimit{perSec: s.cfg.p.Rate / float64(ctx.Parallelism), last: time.Now()}
	}
	seeds := s.cfg.p.clusters()
	if r != nil {
		s.restored = map[topicPart]kafkaPartState{}
		dropped := 0
		for _, e := range r.OperatorState {
			tp, st, err := decodeKafkaPart(e)
			if err != nil {
				return err
			}
			if tp.cluster >= len(seeds) {
				dropped++ // a cluster the job no longer names
				continue
			}
			s.restored[tp] = st
		}
		if dropped > 0 && ctx.Subtask == 0 {
			ctx.Log.Warn("kafka source: the checkpoint has offsets of clusters this job no longer has; ignored", "entries", dropped, "clusters", len(seeds))
		}
	}
	cfg, err := s.cfg.p.config(fmt.Sprintf("sluice-%s-%s-%d", ctx.JobName, ctx.NodeID, ctx.Subtask))
	if err != nil {
		return fmt.Errorf("kafka source: %w", err)
	}
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	if s.cfg.p.Isolation == "read_uncommitted" {
		cfg.Consumer.IsolationLevel = sarama.ReadUncommitted
	}
	cfg.Consumer.Fetch.Default = 1 << 20
	cfg.Consumer.MaxWaitTime = 100 * time.Millisecond
	cfg.ChannelBufferSize = 2 * row.DefaultBatchSize
	s.conf = cfg
	if s.cfg.p.CommitOffsetsToGroup != "" {
		s.commit = newKafkaCommitter(s.cfg.p.CommitOffsetsToGroup, ctx.Log)
	}
	var probe []string // with a pattern, every topic
	if s.cfg.pattern == nil {
		probe = s.cfg.p.Topics
	}
	up := 0
	var firstErr error
	for i, sd := range seeds {
		c := &kafkaSrcCluster{idx: i, seeds: sd}
		s.clusters = append(s.clusters, c)
		err := s.connect(c)
		if err != nil {
			if len(seeds) == 1 {
				return err
			}
			ctx.Log.Warn("kafka source: cluster unreachable at start; reading the others until it returns", "cluster", i, "err", err)
			firstErr = cmp.Or(firstErr, err)
			s.keepRestored(c)
		} else {
			up++
		}
		c.health = newKafkaHealth(i, sd, cfg, probe, &s.cfg.p.kafkaClientParams, err == nil, ctx.Log)
	}
	if up == 0 {
		return fmt.Errorf("kafka source: no cluster reachable: %w", firstErr)
	}
	return nil
}

// keepRestored adds the restored partitions of a cluster that is down, so
// that checkpoints keep their offsets until it returns.
func (s *kafkaSource) keepRestored(c *kafkaSrcCluster) {
	for tp, st := range s.restored {
		if tp.cluster == c.idx && s.byTP[tp] == nil && kafkaClusterOwner(tp.cluster, tp.topic, tp.partition, s.ctx.Parallelism) == s.ctx.Subtask {
			s.addPart(&kafkaPart{topicPart: tp, next: st.next, maxTS: st.maxTS, end: -1, lastSeen: time.Now()})
		}
	}
}

func (s *kafkaSource) addPart(p *kafkaPart) {
	s.parts = append(s.parts, p)
	s.byTP[p.topicPart] = p
}

// connect creates a cluster's client, resumes the partitions it had at their
// recorded offsets and opens the ones it has not read yet.
func (s *kafkaSource) connect(c *kafkaSrcCluster) error {
	addrs := kafkaAddrs(c.seeds)
	client, err := sarama.NewClient(addrs, s.conf)
	if err != nil {
		return fmt.Errorf("kafka source: connecting to %v: %w", addrs, err)
	}
	rememberBrokers(c.seeds, client)
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		_ = client.Close()
		return fmt.Errorf("kafka source: %w", err)
	}
	c.client, c.consumer = client, consumer
	for _, p := range s.parts {
		if p.cluster == c.idx && p.pc == nil && !p.done {
			if err := s.consume(c, p); err != nil {
				s.disconnect(c)
				return err
			}
		}
	}
	if err := s.discover(c); err != nil {
		s.disconnect(c)
		return err
	}
	c.started = true
	return nil
}

// disconnect drops a cluster's client; its partitions keep their offsets.
// Closing runs off the task goroutine: a client of a hanging cluster can
// take its read timeout to close.
func (s *kafkaSource) disconnect(c *kafkaSrcCluster) {
	for _, p := range s.parts {
		if p.cluster == c.idx && p.pc != nil {
			p.pc.AsyncClose()
			p.pc = nil
		}
	}
	client, consumer := c.client, c.consumer
	c.client, c.consumer = nil, nil
	if client == nil {
		return
	}
	s.closing.Add(1)
	go func() {
		defer s.closing.Done()
		_ = consumer.Close()
		_ = client.Close()
	}()
}

// checkClusters follows the health watchers: a cluster that went down is
// dropped, one that came back is taken back in. It runs at every poll, so it
// only reads an atomic per cluster unless something changed. Its error
// (offsetReset fail) fails the task.
func (s *kafkaSource) checkClusters() error {
	now := time.Now()
	for _, c := range s.clusters {
		up := c.health.up()
		switch {
		case c.client != nil && !up:
			s.ctx.Log.Warn("kafka source: cluster down; its partitions wait at their offsets", "cluster", c.idx)
			s.disconnect(c)
		case c.client == nil && up && !now.Before(c.nextTry):
			if err := s.connect(c); err != nil {
				if oe := (*offsetRangeError)(nil); errors.As(err, &oe) {
					return err
				}
				s.ctx.Log.Warn("kafka source: cluster reachable but connecting failed", "cluster", c.idx, "err", err)
				c.health.markDown()
				_, _, retry := s.cfg.p.health()
				c.nextTry = now.Add(retry)
				continue
			}
			c.errs = 0
			s.ctx.Log.Info("kafka source: cluster back; reading its partitions from their offsets", "cluster", c.idx)
		case c.client != nil && !s.cfg.p.Bounded && s.cfg.discovery > 0 && now.Sub(c.lastDisc) >= s.cfg.discovery:
			if err := s.discover(c); err != nil {
				if oe := (*offsetRangeError)(nil); errors.As(err, &oe) {
					return err
				}
				s.ctx.Log.Warn("kafka source: partition discovery failed", "cluster", c.idx, "err", err)
			}
		}
	}
	return nil
}

// discover opens the partitions of a cluster this subtask owns and does not
// read yet.
func (s *kafkaSource) discover(c *kafkaSrcCluster) error {
	c.lastDisc = time.Now()
	var topics []string
	if s.cfg.pattern != nil {
		if err := c.client.RefreshMetadata(); err != nil {
			return fmt.Errorf("kafka source: metadata: %w", err)
		}
		all, err := c.client.Topics()
		if err != nil {
			return fmt.Errorf("kafka source: listing topics: %w", err)
		}
		for _, t := range all {
			if s.cfg.pattern.MatchString(t) {
				topics = append(topics, t)
			}
		}
		sort.Strings(topics)
	} else {
		topics = s.cfg.p.Topics
		if c.started {
			if err := c.client.RefreshMetadata(topics...); err != nil {
				return fmt.Errorf("kafka source: metadata: %w", err)
			}
		}
	}
	var fresh []topicPart
	for _, t := range topics {
		ps, err := c.client.Partitions(t)
		if err != nil {
			if c.started {
				s.ctx.Log.Warn("kafka source: listing partitions", "cluster", c.idx, "topic", t, "err", err)
				continue
			}
			return fmt.Errorf("kafka source: topic %q: %w", t, err)
		}
		for _, p := range ps {
			tp := topicPart{c.idx, t, p}
			if s.byTP[tp] == nil && kafkaClusterOwner(c.idx, t, p, s.ctx.Parallelism) == s.ctx.Subtask {
				fresh = append(fresh, tp)
			}
		}
	}
	var group map[topicPart]int64
	if !c.started && s.restored == nil && s.cfg.p.StartFrom == "group" && len(fresh) > 0 {
		var err error
		if group, err = s.groupOffsets(c, fresh); err != nil {
			return err
		}
	}
	for _, tp := range fresh {
		if err := s.open(c, tp, group); err != nil {
			return err
		}
	}
	return nil
}

func (s *kafkaSource) groupOffsets(c *kafkaSrcCluster, tps []topicPart) (map[topicPart]int64, error) {
	admin, err := sarama.NewClusterAdminFromClient(c.client)
	if err != nil {
		return nil, fmt.Errorf("kafka source: %w", err)
	}
	req := map[string][]int32{}
	for _, tp := range tps {
		req[tp.topic] = append(req[tp.topic], tp.partition)
	}
	resp, err := admin.ListConsumerGroupOffsets(s.cfg.p.Group, req)
	if err != nil {
		return nil, fmt.Errorf("kafka source: offsets of group %q: %w", s.cfg.p.Group, err)
	}
	out := map[topicPart]int64{}
	for _, tp := range tps {
		if b := resp.GetBlock(tp.topic, tp.partition); b != nil && b.Err == sarama.ErrNoError && b.Offset >= 0 {
			out[tp] = b.Offset
		}
	}
	return out, nil
}

// startOffset is where a partition begins: its checkpointed offset, else
// startFrom for the partitions found at a fresh start, else the earliest.
func (s *kafkaSource) startOffset(c *kafkaSrcCluster, tp topicPart, group map[topicPart]int64) (int64, int64, error) {
	if st, ok := s.restored[tp]; ok {
		return st.next, st.maxTS, nil
	}
	at := sarama.OffsetOldest
	if s.restored == nil && !c.started {
		switch s.cfg.p.StartFrom {
		case "latest":
			at = sarama.OffsetNewest
		case "timestamp":
			off, err := c.client.GetOffset(tp.topic, tp.partition, s.cfg.p.StartTimestamp)
			if err != nil {
				return 0, 0, fmt.Errorf("kafka source: offset for time %d of %s/%d: %w", s.cfg.p.StartTimestamp, tp.topic, tp.partition, err)
			}
			if off >= 0 {
				return off, runtime.MinWatermark, nil
			}
			at = sarama.OffsetNewest
		case "group":
			if off, ok := group[tp]; ok {
				return off, runtime.MinWatermark, nil
			}
		}
	}
	// Resolve to a number now: a checkpoint must record where reading
	// began, not "latest".
	off, err := c.client.GetOffset(tp.topic, tp.partition, at)
	if err != nil {
		return 0, 0, fmt.Errorf("kafka source: offsets of %s/%d: %w", tp.topic, tp.partition, err)
	}
	return off, runtime.MinWatermark, nil
}

func (s *kafkaSource) open(c *kafkaSrcCluster, tp topicPart, group map[topicPart]int64) error {
	if s.cfg.p.Bounded && c.started {
		return nil // a bounded source reads the partitions it started with
	}
	next, maxTS, err := s.startOffset(c, tp, group)
	if err != nil {
		return err
	}
	p := &kafkaPart{topicPart: tp, next: next, maxTS: maxTS, end: -1, lastSeen: time.Now()}
	if err := s.consume(c, p); err != nil {
		return err
	}
	s.ctx.Log.Debug("kafka source: reading", "cluster", tp.cluster, "topic", tp.topic, "partition", tp.partition, "offset", p.next)
	s.addPart(p)
	return nil
}

// consume starts a partition consumer at p.next.
func (s *kafkaSource) consume(c *kafkaSrcCluster, p *kafkaPart) error {
	var err error
	if p.skip {
		if err := s.seekNewest(c, p); err != nil {
			return err
		}
	}
	if s.cfg.p.Bounded && p.end < 0 {
		if p.end, err = c.client.GetOffset(p.topic, p.partition, sarama.OffsetNewest); err != nil {
			return fmt.Errorf("kafka source: end offset of %s/%d: %w", p.topic, p.partition, err)
		}
	}
	if p.end >= 0 && p.next > p.end {
		// Past the end offset the partition has now: out of range (a
		// bounded source would otherwise just finish it).
		if err := s.resetOffset(c, p); err != nil {
			return err
		}
	}
	if p.end >= 0 && p.next >= p.end {
		p.done = true
		return nil
	}
	next := p.next
	p.pc, err = c.consumer.ConsumePartition(p.topic, p.partition, next)
	if errors.Is(err, sarama.ErrOffsetOutOfRange) {
		if err = s.resetOffset(c, p); err == nil {
			if p.end >= 0 && p.next >= p.end {
				p.done = true
				return nil
			}
			next = p.next
			p.pc, err = c.consumer.ConsumePartition(p.topic, p.partition, next)
		}
	}
	if err != nil {
		p.pc = nil
		return fmt.Errorf("kafka source: consuming %s/%d at %d: %w", p.topic, p.partition, next, err)
	}
	return nil
}

// resetOffset handles p.next outside the partition's range [log start,
// high watermark]: above it the topic was most likely deleted and
// recreated, below it records were deleted (retention, DeleteRecords)
// before the job read them. offsetReset fail returns an error naming the
// offset and the range; earliest and latest move p.next there, counted in
// the node's offsetResets metric and logged. An offset found in range after
// all (the partition moved between two requests) is left alone.
func (s *kafkaSource) resetOffset(c *kafkaSrcCluster, p *kafkaPart) error {
	oldest, err := c.client.GetOffset(p.topic, p.partition, sarama.OffsetOldest)
	if err != nil {
		return fmt.Errorf("kafka source: log start offset of %s/%d: %w", p.topic, p.partition, err)
	}
	newest, err := c.client.GetOffset(p.topic, p.partition, sarama.OffsetNewest)
	if err != nil {
		return fmt.Errorf("kafka source: high watermark of %s/%d: %w", p.topic, p.partition, err)
	}
	if p.next >= oldest && p.next <= newest && (p.end < 0 || p.next <= p.end) {
		return nil
	}
	why := "below the log start: records were deleted (retention or DeleteRecords) before the job read them"
	if p.next > newest || (p.end >= 0 && p.next > p.end) {
		why = "above the high watermark: the topic was probably deleted and recreated"
	}
	if s.reset == resetFail {
		return &offsetRangeError{fmt.Sprintf("kafka source: offset %d of %s/%d (cluster %d) is out of range [%d, %d], %s; offsetReset is fail (the default under exactly-once): set it to earliest or latest to go on from there",
			p.next, p.topic, p.partition, p.cluster, oldest, newest, why)}
	}
	to := oldest
	if s.reset == resetLatest {
		to = newest
	}
	s.ctx.Metrics.OffsetResets.Add(1)
	s.ctx.Log.Warn("kafka source: offset out of range, reset", "cluster", p.cluster, "topic", p.topic, "partition", p.partition,
		"offset", p.next, "logStart", oldest, "highWatermark", newest, "offsetReset", s.reset, "to", to, "reason", why)
	p.next = to
	if p.end >= 0 && p.end < to {
		p.end = to // a recreated topic: its end moved back and forth
	}
	return nil
}

// offsetRangeError is offsetReset fail's refusal: it fails the task, where
// other errors of a returning cluster are retried.
type offsetRangeError struct{ msg string }

func (e *offsetRangeError) Error() string { return e.msg }

// reopen restarts a partition whose consumer stopped while the task ran:
// sarama stops a partition consumer whose fetch offset went out of range.
func (s *kafkaSource) reopen(p *kafkaPart) error {
	if p.pc != nil {
		p.pc.AsyncClose()
		p.pc = nil
	}
	c := s.clusters[p.cluster]
	if c.client == nil || p.done {
		return nil // its cluster is down: reopened when it returns
	}
	return s.consume(c, p)
}

// rateLimit is a token bucket of records per second, holding at most one
// batch so that a pause (idle partitions) is not followed by a burst.
type rateLimit struct {
	perSec float64 // 0: no limit
	tokens float64
	last   time.Time
}

// budget returns how many records may be read now (at most a batch).
func (r *rateLimit) budget() int {
	if r.perSec <= 0 {
		return row.DefaultBatchSize
	}
	now := time.Now()
	r.tokens = min(float64(row.DefaultBatchSize), r.tokens+now.Sub(r.last).Seconds()*r.perSec)
	r.last = now
	return int(r.tokens)
}

func (r *rateLimit) took(n int) {
	if r.perSec > 0 {
		r.tokens -= float64(n)
	}
}

func (s *kafkaSource) Poll() (bool, error) {
	if err := s.checkClusters(); err != nil {
		return false, err
	}
	b := row.NewBatch(s.cfg.schema)
	vb := &row.Batch{Schema: s.cfg.valueSch, Cols: b.Cols[:s.cfg.nValue]}
	var dlq *row.Batch
	open := 0
	var now time.Time // read once per poll, not per record
	budget := s.limit.budget()
	if budget == 0 {
		b.Release()
		time.Sleep(min(time.Duration(float64(time.Second)/s.limit.perSec), 10*time.Millisecond))
		return false, nil
	}
	n := 0 // records taken, dead letters included
	for i := 0; i < len(s.parts) && n < budget; i++ {
		p := s.parts[(s.rr+i)%len(s.parts)]
		if p.done {
			continue
		}
		open++
		if p.pc == nil {
			continue // its cluster is down
		}
	drain:
		for n < budget {
			select {
			case m, ok := <-p.pc.Messages():
				if !ok {
					// sarama stopped the partition consumer (an offset out
					// of range): resume at p.next, resetting by policy.
					if err := s.reopen(p); err != nil {
						b.Release()
						return false, err
					}
					break drain
				}
				n++
				if now.IsZero() {
					now = time.Now()
				}
				p.lastSeen = now
				dlq = s.add(p, m, b, vb, dlq)
				if p.end >= 0 && p.next >= p.end {
					p.done = true
					p.pc.AsyncClose()
					break drain
				}
			case err, ok := <-p.pc.Errors():
				if !ok || errors.Is(err, sarama.ErrOffsetOutOfRange) {
					// sarama stops a partition consumer whose fetch offset
					// is out of range and closes its channels.
					if err := s.reopen(p); err != nil {
						b.Release()
						return false, err
					}
					break drain
				}
				// While a cluster fails, sarama retries and reports every
				// attempt; the health watcher decides when it is down.
				if c := s.clusters[p.cluster]; c.errs < 10 || c.errs%1000 == 0 {
					s.ctx.Log.Warn("kafka source: fetch error", "cluster", p.cluster, "topic", p.topic, "partition", p.partition, "err", err)
				}
				s.clusters[p.cluster].errs++
			default:
				break drain
			}
		}
	}
	if len(s.parts) > 0 {
		s.rr = (s.rr + 1) % len(s.parts)
	}
	s.limit.took(n)
	s.m.flush(s, now)
	if dlq != nil {
		s.ctx.Side[s.cfg.dlq].Collect(dlq)
	}
	s.idle.Saw(b.Len)
	if b.Len == 0 {
		b.Release()
		if s.cfg.p.Bounded && open == 0 {
			return true, nil
		}
		time.Sleep(2 * time.Millisecond)
		return false, nil
	}
	s.ctx.Out.Collect(b)
	return false, nil
}

// add appends one record to b (or to the dead letters).
func (s *kafkaSource) add(p *kafkaPart, m *sarama.ConsumerMessage, b, vb *row.Batch, dlq *row.Batch) *row.Batch {
	p.next = m.Offset + 1
	s.m.read(m)
	if s.cfg.raw {
		b.Cols[0].Bytes = append(b.Cols[0].Bytes, m.Value)
	} else {
		vb.Len = b.Len
		if err := row.ParseJSON(m.Value, vb); err != nil {
			s.bad++
			s.ctx.Metrics.Invalid.Add(1)
			if s.bad <= 10 {
				s.ctx.Log.Warn("kafka source: record does not parse", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			}
			if out := s.ctx.Side[s.cfg.dlq]; out != nil {
				if dlq == nil {
					dlq = row.NewBatch(KafkaDLQSchema)
				}
				_ = dlq.AppendRow(m.Value, err.Error(), m.Topic, int64(m.Partition), m.Offset)
			}
			return dlq
		}
	}
	ts := m.Timestamp.UnixMilli()
	for i, c := range s.cfg.meta {
		if c < 0 {
			continue
		}
		col := &b.Cols[c]
		switch i {
		case metaKey:
			col.Strs = append(col.Strs, string(m.Key))
		case metaTopic:
			col.Strs = append(col.Strs, m.Topic)
		case metaPartition:
			col.Ints = append(col.Ints, int64(m.Partition))
		case metaOffset:
			col.Ints = append(col.Ints, m.Offset)
		case metaTimestamp:
			col.Ints = append(col.Ints, ts)
		case metaHeaders:
			h := make(map[string]string, len(m.Headers))
			for _, rh := range m.Headers {
				if rh != nil {
					h[string(rh.Key)] = string(rh.Value)
				}
			}
			js, _ := json.Marshal(h)
			col.Strs = append(col.Strs, string(js))
		}
	}
	b.Len++
	if s.cfg.timeCol >= 0 {
		ts = b.Cols[s.cfg.timeCol].Ints[b.Len-1]
	} else if m.Timestamp.IsZero() {
		return dlq
	}
	p.maxTS = max(p.maxTS, ts)
	return dlq
}

// Watermark is the minimum over the subtask's partitions of each one's
// largest event time minus the out-of-orderness; partitions with nothing
// for the idle timeout (and finished ones) leave the minimum. With several
// clusters, the partitions of a cluster that is down leave it too: the job
// runs on the others (their rows may be late when it returns).
func (s *kafkaSource) Watermark() (int64, bool) {
	wm, active := runtime.MaxWatermark, 0
	now := time.Now()
	multi := len(s.clusters) > 1
	for _, p := range s.parts {
		if p.done || (s.cfg.idle > 0 && now.Sub(p.lastSeen) >= s.cfg.idle) || (multi && p.pc == nil) {
			continue
		}
		active++
		if p.maxTS == runtime.MinWatermark {
			wm = runtime.MinWatermark
		} else {
			wm = min(wm, p.maxTS-s.cfg.ooo-1)
		}
	}
	if active == 0 {
		// No partition, or all idle: do not hold back downstream.
		return s.wm, len(s.parts) == 0 || s.cfg.idle > 0 || s.idle.Idle()
	}
	s.wm = max(s.wm, wm)
	return s.wm, s.idle.Idle()
}

func (s *kafkaSource) Snapshot(id int64) (runtime.Snapshot, error) {
	entries := make([][]byte, len(s.parts))
	for i, p := range s.parts {
		entries[i] = encodeKafkaPart(p)
	}
	if s.commit != nil {
		s.commit.snapshot(id, s.parts)
	}
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for _, e := range entries {
			w.AddOperatorState(e)
		}
		return nil
	}), nil
}

func (s *kafkaSource) CheckpointComplete(id int64) error {
	if s.commit != nil {
		clients := make([]sarama.Client, len(s.clusters))
		for i, c := range s.clusters {
			clients[i] = c.client
		}
		s.commit.complete(id, clients)
	}
	return nil
}

func (s *kafkaSource) Close() error {
	for _, p := range s.parts {
		if p.pc != nil && !p.done {
			p.pc.AsyncClose()
		}
		p.pc = nil
	}
	if s.commit != nil {
		s.commit.close()
		s.commit = nil
	}
	for _, c := range s.clusters {
		if c.health != nil {
			c.health.close()
			c.health = nil
		}
		if c.consumer != nil {
			_ = c.consumer.Close()
		}
		if c.client != nil {
			_ = c.client.Close()
		}
		c.client, c.consumer = nil, nil
	}
	s.closing.Wait()
	return nil
}
