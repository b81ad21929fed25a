package kafka

import (
	"time"

	"github.com/IBM/sarama"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// The source's measurements for the job's metrics: the messages' bytes
// (key, value and headers, as Kafka stores them: the record size `sluice
// size` takes) and, per partition, the offset it reads next against the
// partition's high watermark (sluice_kafka_source_lag_records, GET
// /v1/kafka-lag).

var _ runtime.RecordSizeCounter = (*kafkaSource)(nil)

// CountsRecordSize: the source counts its messages' bytes itself.
func (s *kafkaSource) CountsRecordSize() {}

// lagEvery is how often the partitions' positions are published.
const lagEvery = time.Second

// sourceMeter sums what a poll read and publishes it once per poll.
type sourceMeter struct {
	records, bytes int64
	lagAt          time.Time
	hw             map[topicPart]int64 // last known high watermarks (a consumer closes while its cluster is down)
}

func (m *sourceMeter) read(msg *sarama.ConsumerMessage) {
	m.records++
	n := len(msg.Key) + len(msg.Value)
	for _, h := range msg.Headers {
		if h != nil {
			n += len(h.Key) + len(h.Value)
		}
	}
	m.bytes += int64(n)
}

// flush adds what the poll read to the subtask's counters and, about once
// every lagEvery, publishes the partitions' positions. now is zero when the
// poll read nothing.
func (m *sourceMeter) flush(s *kafkaSource, now time.Time) {
	c := s.ctx.Counters
	if c == nil {
		return
	}
	if m.records > 0 {
		c.SourceRecords.Add(m.records)
		c.SourceBytes.Add(m.bytes)
		m.records, m.bytes = 0, 0
	}
	if now.IsZero() {
		now = time.Now()
	}
	if now.Before(m.lagAt) {
		return
	}
	m.lagAt = now.Add(lagEvery)
	if m.hw == nil {
		m.hw = map[topicPart]int64{}
	}
	ps := make([]runtime.SourcePartition, 0, len(s.parts))
	for _, p := range s.parts {
		hw := m.hw[p.topicPart]
		switch {
		case p.done && p.end >= 0:
			hw = p.end // bounded and read to its end
		case p.pc != nil:
			if h := p.pc.HighWaterMarkOffset(); h > 0 {
				hw = h
			}
		}
		m.hw[p.topicPart] = hw
		ps = append(ps, runtime.SourcePartition{Cluster: p.cluster, Topic: p.topic, Partition: p.partition,
			Offset: p.next, HighWatermark: hw})
	}
	c.SetSourcePartitions(ps)
}

var (
	_ runtime.RecordSizeCounter = (*kafkaSinkEO)(nil)
	_ runtime.RecordSizeCounter = (*kafkaSinkALO)(nil)
)

// CountsRecordSize: the sinks count their messages' bytes themselves.
func (s *kafkaSinkBase) CountsRecordSize() {}

// sent counts one message the sink produces (a resend is not counted
// again: the record size is what one record takes).
func (s *kafkaSinkBase) sent(m *sarama.ProducerMessage) {
	s.sentRecords++
	if m.Key != nil {
		s.sentBytes += int64(m.Key.Length())
	}
	if m.Value != nil {
		s.sentBytes += int64(m.Value.Length())
	}
}

// flushSent adds what send counted to the subtask's counters.
func (s *kafkaSinkBase) flushSent() {
	if c := s.Ctx.Counters; c != nil && s.sentRecords > 0 {
		c.SinkRecords.Add(s.sentRecords)
		c.SinkBytes.Add(s.sentBytes)
	}
	s.sentRecords, s.sentBytes = 0, 0
}
