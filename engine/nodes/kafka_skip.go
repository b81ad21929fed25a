package nodes

import (
	"fmt"

	"github.com/IBM/sarama"
)

// TEMPORARY (branch kafka-cmd): a minimal SkipBacklog so that the runtime
// plumbing and `sluice skip-backlog` can be tested end to end. The kafka-ops
// branch owns the real implementation of this file; keep theirs on merge.

// SkipBacklog seeks every partition this subtask reads to its latest
// offset (a bounded source: to its end offset, which finishes it). It runs
// on the task goroutine between two polls, so the next snapshot records the
// new offsets.
func (s *kafkaSource) SkipBacklog() error {
	for _, p := range s.parts {
		if p.done {
			continue
		}
		latest, err := s.client.GetOffset(p.topic, p.partition, sarama.OffsetNewest)
		if err != nil {
			return fmt.Errorf("kafka source: latest offset of %s/%d: %w", p.topic, p.partition, err)
		}
		if p.end >= 0 {
			latest = min(latest, p.end)
		}
		if latest <= p.next {
			continue
		}
		if p.pc != nil {
			// Close drains what was fetched from before the new offset.
			if err := p.pc.Close(); err != nil {
				s.ctx.Log.Debug("kafka source: closing a partition consumer to skip", "topic", p.topic, "partition", p.partition, "err", err)
			}
			p.pc = nil
		}
		if p.end >= 0 && latest >= p.end {
			p.next, p.done = latest, true
			continue
		}
		pc, err := s.consumer.ConsumePartition(p.topic, p.partition, latest)
		if err != nil {
			// Keep reading where we were rather than not at all.
			if p.pc, err = s.consumer.ConsumePartition(p.topic, p.partition, p.next); err != nil {
				panic(fmt.Sprintf("kafka source: %s/%d: cannot consume at %d nor at %d: %v", p.topic, p.partition, latest, p.next, err))
			}
			return fmt.Errorf("kafka source: consuming %s/%d at %d: %w", p.topic, p.partition, latest, err)
		}
		s.ctx.Log.Info("kafka source: skipped backlog", "topic", p.topic, "partition", p.partition, "from", p.next, "to", latest)
		p.pc, p.next = pc, latest
	}
	return nil
}
