package kafka

import (
	"fmt"
	"log/slog"

	"github.com/IBM/sarama"
)

// kafkaCommitter commits a source subtask's checkpointed offsets to a
// consumer group (commitOffsetsToGroup), for lag tools: Kafka's own offset
// monitoring then shows how far the job is. The offsets in the checkpoint
// stay the truth; these commits are never read back except by a job
// started with startFrom group.
//
// Commits run on a goroutine of their own so that a slow or unreachable
// coordinator never holds up the task; when they fall behind, only the
// newest checkpoint's offsets are committed.
type kafkaCommitter struct {
	group   string
	log     *slog.Logger
	pending map[int64][]kafkaOffset // by checkpoint, until it completes
	work    chan []kafkaCommitBatch // capacity 1: the newest wins
	done    chan struct{}
	failed  int
}

type kafkaOffset struct {
	topicPart
	next int64
}

type kafkaCommitBatch struct {
	client  sarama.Client
	offsets []kafkaOffset // of one cluster
}

func newKafkaCommitter(group string, log *slog.Logger) *kafkaCommitter {
	c := &kafkaCommitter{group: group, log: log, pending: map[int64][]kafkaOffset{},
		work: make(chan []kafkaCommitBatch, 1), done: make(chan struct{})}
	go c.run()
	return c
}

// snapshot records the offsets of checkpoint id (task goroutine).
func (c *kafkaCommitter) snapshot(id int64, parts []*kafkaPart) {
	offs := make([]kafkaOffset, 0, len(parts))
	for _, p := range parts {
		offs = append(offs, kafkaOffset{p.topicPart, p.next})
	}
	c.pending[id] = offs
}

// complete hands the offsets of checkpoint id to the committing goroutine
// (task goroutine). clients are the clusters' current clients, nil for a
// cluster that is down: its offsets wait for a later checkpoint.
func (c *kafkaCommitter) complete(id int64, clients []sarama.Client) {
	offs, ok := c.pending[id]
	for k := range c.pending {
		if k <= id {
			delete(c.pending, k)
		}
	}
	if !ok {
		return
	}
	var batches []kafkaCommitBatch
	for cl, client := range clients {
		if client == nil {
			continue
		}
		var b []kafkaOffset
		for _, o := range offs {
			if o.cluster == cl {
				b = append(b, o)
			}
		}
		if len(b) > 0 {
			batches = append(batches, kafkaCommitBatch{client, b})
		}
	}
	if len(batches) == 0 {
		return
	}
	select {
	case c.work <- batches:
	default:
		select { // an older checkpoint waits: replace it
		case <-c.work:
		default:
		}
		c.work <- batches
	}
}

func (c *kafkaCommitter) close() {
	close(c.work)
	<-c.done
}

func (c *kafkaCommitter) run() {
	defer close(c.done)
	for batches := range c.work {
		for _, b := range batches {
			if err := commitGroupOffsets(b.client, c.group, b.offsets); err != nil {
				if c.failed++; c.failed <= 10 || c.failed%100 == 0 {
					c.log.Warn("kafka source: committing offsets to the group failed (monitoring only)", "group", c.group, "err", err)
				}
			}
		}
	}
}

// commitGroupOffsets commits offsets as a client outside the group's
// membership (generation -1, no member id), as Flink's Kafka source does.
func commitGroupOffsets(client sarama.Client, group string, offs []kafkaOffset) error {
	req := &sarama.OffsetCommitRequest{Version: 2, ConsumerGroup: group, ConsumerGroupGeneration: -1, RetentionTime: -1}
	for _, o := range offs {
		req.AddBlock(o.topic, o.partition, o.next, 0, "")
	}
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			_ = client.RefreshCoordinator(group)
		}
		b, err := client.Coordinator(group)
		if err != nil {
			last = err
			continue
		}
		resp, err := b.CommitOffset(req)
		if err != nil {
			last = err
			continue
		}
		last = nil
		for t, ps := range resp.Errors {
			for p, kerr := range ps {
				if kerr != sarama.ErrNoError {
					last = fmt.Errorf("%s/%d: %w", t, p, kerr)
				}
			}
		}
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("kafka: committing offsets of group %q: %w", group, last)
}
