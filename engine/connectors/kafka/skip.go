package kafka

import (
	"fmt"

	"github.com/IBM/sarama"

	"github.com/sluice-stream/sluice/engine/runtime"
)

var _ runtime.BacklogSkipper = (*kafkaSource)(nil)

// SkipBacklog moves every partition this subtask reads, on every cluster,
// to its latest offset: the records in between are never read, and the next
// checkpoint records the new positions. The runtime calls it on the task
// goroutine between two polls. A partition of a cluster that is down skips
// when the cluster returns.
func (s *kafkaSource) SkipBacklog() error {
	var skipped int64
	moved, later := 0, 0
	for _, p := range s.parts {
		if p.done {
			continue
		}
		c := s.clusters[p.cluster]
		if c.client == nil {
			p.skip = true
			later++
			continue
		}
		from := p.next
		if p.pc != nil {
			// Close (not AsyncClose): the consumer refuses a second
			// consumer of the partition until the first is gone. Records
			// it had fetched are dropped with it.
			_ = p.pc.Close()
			p.pc = nil
		}
		if err := s.seekNewest(c, p); err != nil {
			return err
		}
		if err := s.consume(c, p); err != nil {
			return err
		}
		skipped += max(0, p.next-from)
		moved++
	}
	s.ctx.Log.Info("kafka source: skipped the backlog", "partitions", moved, "records", skipped, "whenClusterReturns", later)
	return nil
}

// seekNewest sets p.next to the partition's latest offset, resolved to a
// number so that a checkpoint never says "latest".
func (s *kafkaSource) seekNewest(c *kafkaSrcCluster, p *kafkaPart) error {
	off, err := c.client.GetOffset(p.topic, p.partition, sarama.OffsetNewest)
	if err != nil {
		return fmt.Errorf("kafka source: latest offset of %s/%d: %w", p.topic, p.partition, err)
	}
	// Never backwards: a partition already past the offset (a race with a
	// produce is harmless) keeps its position.
	p.next = max(p.next, off)
	p.skip = false
	return nil
}
