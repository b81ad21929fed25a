package nodes

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

func init() {
	Register("kafka", Factory{Kind: Source, Plan: planKafkaSource})
}

type kafkaSourceParams struct {
	kafkaClientParams
	Topics       []string `json:"topics"`
	TopicPattern string   `json:"topicPattern"`
	// Format is json (the value is a JSON object mapped onto fields) or raw
	// (the value is the bytes field "value").
	Format string        `json:"format"`
	Fields []schemaField `json:"fields"`
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
	EventTime string          `json:"eventTime"`
	Watermark WatermarkParams `json:"watermark"`
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
}

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
}

const (
	metaKey = iota
	metaTopic
	metaPartition
	metaOffset
	metaTimestamp
	metaHeaders
)

func planKafkaSource(c *PlanContext) (*Planned, error) {
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
		s, err := parseFields(p.Fields)
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
	cfg.discovery = p.DiscoveryInterval.D()
	if cfg.discovery == 0 {
		cfg.discovery = 10 * time.Second
	}
	pl := &Planned{Schema: schema, NewSource: func() runtime.Source { return &kafkaSource{cfg: cfg} }}
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
	topic     string
	partition int32
}

// kafkaPart is one partition a subtask reads.
type kafkaPart struct {
	topicPart
	pc       sarama.PartitionConsumer
	next     int64 // next offset to emit
	end      int64 // bounded: stop at this offset
	maxTS    int64 // largest event time emitted
	lastSeen time.Time
	done     bool
}

// kafkaSource reads the partitions kafkaOwner gives its subtask. Its
// operator state is one entry per partition: the next offset and the largest
// event time, restored by union so any parallelism can take over.
type kafkaSource struct {
	cfg      *kafkaSourceConfig
	ctx      *runtime.Context
	client   sarama.Client
	consumer sarama.Consumer
	parts    []*kafkaPart
	byTP     map[topicPart]*kafkaPart
	restored map[topicPart]kafkaPartState
	started  bool // the initial partitions are open (later ones start at earliest)
	lastDisc time.Time
	rr       int
	bad      int64
	wm       int64
	idle     idleness
}

type kafkaPartState struct {
	next, maxTS int64
}

// State entry: version byte 1, partition (4), next offset (8), max event
// time (8), topic.
func encodeKafkaPart(p *kafkaPart) []byte {
	e := make([]byte, 21, 21+len(p.topic))
	e[0] = 1
	binary.BigEndian.PutUint32(e[1:], uint32(p.partition))
	binary.BigEndian.PutUint64(e[5:], uint64(p.next))
	binary.BigEndian.PutUint64(e[13:], uint64(p.maxTS))
	return append(e, p.topic...)
}

func (s *kafkaSource) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.ctx = ctx
	s.byTP = map[topicPart]*kafkaPart{}
	s.wm = runtime.MinWatermark
	s.idle = newIdleness(s.cfg.idle)
	if r != nil {
		s.restored = map[topicPart]kafkaPartState{}
		for _, e := range r.OperatorState {
			if len(e) < 21 || e[0] != 1 {
				return fmt.Errorf("kafka source: bad state entry (%d bytes)", len(e))
			}
			tp := topicPart{string(e[21:]), int32(binary.BigEndian.Uint32(e[1:]))}
			s.restored[tp] = kafkaPartState{int64(binary.BigEndian.Uint64(e[5:])), int64(binary.BigEndian.Uint64(e[13:]))}
		}
	}
	cfg := s.cfg.p.config(fmt.Sprintf("sluice-%s-%s-%d", ctx.JobName, ctx.NodeID, ctx.Subtask))
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	if s.cfg.p.Isolation == "read_uncommitted" {
		cfg.Consumer.IsolationLevel = sarama.ReadUncommitted
	}
	cfg.Consumer.Fetch.Default = 1 << 20
	cfg.Consumer.MaxWaitTime = 100 * time.Millisecond
	cfg.ChannelBufferSize = 2 * row.DefaultBatchSize
	client, err := sarama.NewClient(s.cfg.p.Brokers, cfg)
	if err != nil {
		return fmt.Errorf("kafka source: connecting to %v: %w", s.cfg.p.Brokers, err)
	}
	s.client = client
	if s.consumer, err = sarama.NewConsumerFromClient(client); err != nil {
		return fmt.Errorf("kafka source: %w", err)
	}
	if err := s.discover(); err != nil {
		return err
	}
	s.started = true
	return nil
}

// discover opens the partitions this subtask owns and does not read yet.
func (s *kafkaSource) discover() error {
	s.lastDisc = time.Now()
	var topics []string
	if s.cfg.pattern != nil {
		if err := s.client.RefreshMetadata(); err != nil {
			return fmt.Errorf("kafka source: metadata: %w", err)
		}
		all, err := s.client.Topics()
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
		if s.started {
			if err := s.client.RefreshMetadata(topics...); err != nil {
				return fmt.Errorf("kafka source: metadata: %w", err)
			}
		}
	}
	var fresh []topicPart
	for _, t := range topics {
		ps, err := s.client.Partitions(t)
		if err != nil {
			if s.started {
				s.ctx.Log.Warn("kafka source: listing partitions", "topic", t, "err", err)
				continue
			}
			return fmt.Errorf("kafka source: topic %q: %w", t, err)
		}
		for _, p := range ps {
			tp := topicPart{t, p}
			if s.byTP[tp] == nil && kafkaOwner(t, p, s.ctx.Parallelism) == s.ctx.Subtask {
				fresh = append(fresh, tp)
			}
		}
	}
	var group map[topicPart]int64
	if !s.started && s.restored == nil && s.cfg.p.StartFrom == "group" && len(fresh) > 0 {
		var err error
		if group, err = s.groupOffsets(fresh); err != nil {
			return err
		}
	}
	for _, tp := range fresh {
		if err := s.open(tp, group); err != nil {
			return err
		}
	}
	return nil
}

func (s *kafkaSource) groupOffsets(tps []topicPart) (map[topicPart]int64, error) {
	admin, err := sarama.NewClusterAdminFromClient(s.client)
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
func (s *kafkaSource) startOffset(tp topicPart, group map[topicPart]int64) (int64, int64, error) {
	if st, ok := s.restored[tp]; ok {
		return st.next, st.maxTS, nil
	}
	at := sarama.OffsetOldest
	if s.restored == nil && !s.started {
		switch s.cfg.p.StartFrom {
		case "latest":
			at = sarama.OffsetNewest
		case "timestamp":
			off, err := s.client.GetOffset(tp.topic, tp.partition, s.cfg.p.StartTimestamp)
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
	off, err := s.client.GetOffset(tp.topic, tp.partition, at)
	if err != nil {
		return 0, 0, fmt.Errorf("kafka source: offsets of %s/%d: %w", tp.topic, tp.partition, err)
	}
	return off, runtime.MinWatermark, nil
}

func (s *kafkaSource) open(tp topicPart, group map[topicPart]int64) error {
	next, maxTS, err := s.startOffset(tp, group)
	if err != nil {
		return err
	}
	p := &kafkaPart{topicPart: tp, next: next, maxTS: maxTS, end: -1, lastSeen: time.Now()}
	if s.cfg.p.Bounded {
		if s.started {
			return nil // a bounded source reads the partitions it started with
		}
		if p.end, err = s.client.GetOffset(tp.topic, tp.partition, sarama.OffsetNewest); err != nil {
			return fmt.Errorf("kafka source: end offset of %s/%d: %w", tp.topic, tp.partition, err)
		}
		p.done = p.next >= p.end
	}
	if !p.done {
		p.pc, err = s.consumer.ConsumePartition(tp.topic, tp.partition, next)
		if errors.Is(err, sarama.ErrOffsetOutOfRange) {
			s.ctx.Log.Warn("kafka source: offset out of range, reading from the earliest", "topic", tp.topic, "partition", tp.partition, "offset", next)
			if p.next, err = s.client.GetOffset(tp.topic, tp.partition, sarama.OffsetOldest); err == nil {
				p.pc, err = s.consumer.ConsumePartition(tp.topic, tp.partition, p.next)
			}
		}
		if err != nil {
			return fmt.Errorf("kafka source: consuming %s/%d at %d: %w", tp.topic, tp.partition, next, err)
		}
	}
	s.ctx.Log.Debug("kafka source: reading", "topic", tp.topic, "partition", tp.partition, "offset", p.next)
	s.parts = append(s.parts, p)
	s.byTP[tp] = p
	return nil
}

func (s *kafkaSource) Poll() (bool, error) {
	if !s.cfg.p.Bounded && s.cfg.discovery > 0 && time.Since(s.lastDisc) >= s.cfg.discovery {
		if err := s.discover(); err != nil {
			s.ctx.Log.Warn("kafka source: partition discovery failed", "err", err)
		}
	}
	b := row.NewBatch(s.cfg.schema)
	vb := &row.Batch{Schema: s.cfg.valueSch, Cols: b.Cols[:s.cfg.nValue]}
	var dlq *row.Batch
	open := 0
	for i := 0; i < len(s.parts) && b.Len < row.DefaultBatchSize; i++ {
		p := s.parts[(s.rr+i)%len(s.parts)]
		if p.done {
			continue
		}
		open++
	drain:
		for b.Len < row.DefaultBatchSize {
			select {
			case m := <-p.pc.Messages():
				dlq = s.add(p, m, b, vb, dlq)
				if p.end >= 0 && p.next >= p.end {
					p.done = true
					p.pc.AsyncClose()
					break drain
				}
			case err := <-p.pc.Errors():
				s.ctx.Log.Warn("kafka source: fetch error", "topic", p.topic, "partition", p.partition, "err", err)
			default:
				break drain
			}
		}
	}
	if len(s.parts) > 0 {
		s.rr = (s.rr + 1) % len(s.parts)
	}
	if dlq != nil {
		s.ctx.Side[s.cfg.dlq].Collect(dlq)
	}
	s.idle.saw(b.Len)
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
	p.lastSeen = time.Now()
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
// for the idle timeout (and finished ones) leave the minimum.
func (s *kafkaSource) Watermark() (int64, bool) {
	wm, active := runtime.MaxWatermark, 0
	now := time.Now()
	for _, p := range s.parts {
		if p.done || (s.cfg.idle > 0 && now.Sub(p.lastSeen) >= s.cfg.idle) {
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
		return s.wm, len(s.parts) == 0 || s.cfg.idle > 0 || s.idle.idle()
	}
	s.wm = max(s.wm, wm)
	return s.wm, s.idle.idle()
}

func (s *kafkaSource) Snapshot(int64) (runtime.Snapshot, error) {
	entries := make([][]byte, len(s.parts))
	for i, p := range s.parts {
		entries[i] = encodeKafkaPart(p)
	}
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for _, e := range entries {
			w.AddOperatorState(e)
		}
		return nil
	}), nil
}

func (s *kafkaSource) CheckpointComplete(int64) error { return nil }

func (s *kafkaSource) Close() error {
	for _, p := range s.parts {
		if p.pc != nil && !p.done {
			p.pc.AsyncClose()
		}
	}
	if s.consumer != nil {
		_ = s.consumer.Close()
	}
	if s.client != nil {
		return s.client.Close()
	}
	return nil
}
