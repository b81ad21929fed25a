package kafka

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// The at-least-once sink over one or several clusters.
//
// Each cluster that is up has a producer (acks=all, not idempotent: see
// openALO). A batch
// goes to one cluster, chosen by the mode: round-robin over the clusters
// that are up, or primary-backup (the first cluster that is up, in the
// order of params.clusters). A health watcher per cluster (kafkaHealth)
// says when a cluster is down: its producer is closed, and it gets a new
// one when the watcher sees it back.
//
// A record whose write fails for a reason of the cluster (unreachable,
// leaderless, timed out) is sent again, to another cluster when there is
// one, up to kafkaMaxResends times. A record the cluster refuses (too
// large, unknown topic, not authorised), or one out of resends, is a
// failure: within tolerateFailures it is dropped and counted, otherwise the
// task fails. The checkpoint barrier waits until every record is
// acknowledged or dropped, so a completed checkpoint never covers a record
// that is neither in Kafka nor counted as dropped.

// kafkaSinkALO is the at-least-once kafka sink.
type kafkaSinkALO struct {
	kafkaSinkBase
	alo *kafkaALO
}

func (s *kafkaSinkALO) Open(ctx *runtime.Context, _ *runtime.Restored) error {
	s.Ctx = ctx
	return s.openALO()
}

func (s *kafkaSinkALO) Process(_ int, b *row.Batch) error {
	defer b.Release()
	return s.processALO(b)
}

// Snapshot returns once every row so far is acknowledged (or dropped within
// the tolerance); the sink has no state.
func (s *kafkaSinkALO) Snapshot(int64) (runtime.Snapshot, error) { return nil, s.flushALO() }

func (s *kafkaSinkALO) Close() error {
	if s.alo == nil {
		return nil // Open failed before it had anything to close
	}
	return s.closeALO()
}

// kafkaMaxResends bounds how often one record is sent again.
const kafkaMaxResends = 5

// kafkaSent marks a message with the cluster it went to. Every message of
// a first send of a batch shares its cluster's mark; a resend gets its own.
type kafkaSent struct {
	cluster int
	resends int
}

type kafkaSinkCluster struct {
	idx     int
	seeds   []string
	health  *kafkaHealth
	prod    sarama.AsyncProducer // nil while down
	mark    *kafkaSent
	nextTry time.Time
}

// kafkaALO is the at-least-once state. mu guards what the goroutines
// reading the producers' results share with the task goroutine.
type kafkaALO struct {
	clusters []*kafkaSinkCluster
	conf     *sarama.Config
	rr       int
	readers  sync.WaitGroup

	mu       sync.Mutex
	inflight int64
	resend   []*sarama.ProducerMessage
	err      error
	loss     *lossWindow // nil: no tolerance
	dropped  int64
	resent   int64
	notify   chan struct{} // something above changed
}

func (s *kafkaSinkALO) openALO() error {
	conf, err := s.producerConfig()
	if err != nil {
		return err
	}
	// Not sarama's idempotent producer: a connection cut while batches are
	// in flight (a broker restart, a flapping network) makes it answer many
	// writes with sequence errors and can wedge a partition for good (every
	// later batch out of order; the Java client bumps the epoch, sarama
	// does not reliably) — records ran out of resends and the job restarted
	// again and again (TestKafkaSinkALOFlappingCluster). It cannot go on
	// past a record the broker refused either (tolerateFailures). A retried
	// write may then be duplicated, which at-least-once allows;
	// MaxOpenRequests 1 keeps each partition in order.
	conf.Producer.Idempotent = false
	a := &kafkaALO{conf: conf, notify: make(chan struct{}, 1)}
	if s.cfg.tolWindow > 0 {
		a.loss = newLossWindow(s.cfg.tolRatio, s.cfg.tolWindow)
	}
	s.alo = a
	var probe []string // with topicField, every topic
	if s.cfg.p.Topic != "" {
		probe = []string{s.cfg.p.Topic}
	}
	seeds := s.cfg.p.clusters()
	up := 0
	var firstErr error
	for i, sd := range seeds {
		c := &kafkaSinkCluster{idx: i, seeds: sd, mark: &kafkaSent{cluster: i}}
		a.clusters = append(a.clusters, c)
		err := s.connectALO(c)
		if err != nil {
			if len(seeds) == 1 {
				return err
			}
			s.Ctx.Log.Warn("kafka sink: cluster unreachable at start; writing to the others until it returns", "cluster", i, "err", err)
			if firstErr == nil {
				firstErr = err
			}
		} else {
			up++
		}
		c.health = newKafkaHealth(i, sd, conf, probe, &s.cfg.p.kafkaClientParams, err == nil, s.Ctx.Log)
	}
	if up == 0 {
		return fmt.Errorf("kafka sink: no cluster reachable: %w", firstErr)
	}
	return nil
}

func (s *kafkaSinkALO) connectALO(c *kafkaSinkCluster) error {
	addrs := kafkaAddrs(c.seeds)
	client, err := sarama.NewClient(addrs, s.alo.conf)
	if err != nil {
		return fmt.Errorf("kafka sink: connecting to %v: %w", addrs, err)
	}
	rememberBrokers(c.seeds, client)
	p, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return fmt.Errorf("kafka sink: %w", err)
	}
	c.prod = p
	a := s.alo
	// The producer does not own the client: close it once both result
	// channels are closed (the producer is done).
	var results sync.WaitGroup
	results.Add(2)
	a.readers.Add(3)
	go func() {
		defer a.readers.Done()
		results.Wait()
		_ = client.Close()
	}()
	go func() {
		defer a.readers.Done()
		defer results.Done()
		for range p.Successes() {
			a.mu.Lock()
			a.inflight--
			a.mu.Unlock()
			a.signal()
		}
	}()
	go func() {
		defer a.readers.Done()
		defer results.Done()
		for e := range p.Errors() {
			s.failedALO(c.idx, e)
		}
	}()
	return nil
}

func (a *kafkaALO) signal() {
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

// failedALO takes a failed write (on a result goroutine): sent again,
// dropped within the loss tolerance, or the task's error.
func (s *kafkaSinkALO) failedALO(cluster int, e *sarama.ProducerError) {
	a := s.alo
	resends := 0
	if m, ok := e.Msg.Metadata.(*kafkaSent); ok {
		resends = m.resends
	}
	a.mu.Lock()
	defer a.signal()
	defer a.mu.Unlock()
	a.inflight--
	if !kafkaRefused(e.Err) && resends < kafkaMaxResends {
		m := e.Msg
		a.resend = append(a.resend, &sarama.ProducerMessage{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: m.Headers,
			Metadata: &kafkaSent{cluster: cluster, resends: resends + 1}})
		if a.resent++; a.resent <= 10 || a.resent%1000 == 0 {
			s.Ctx.Log.Warn("kafka sink: write failed; sending the record again", "cluster", cluster, "topic", m.Topic, "resent", a.resent, "err", e.Err)
		}
		return
	}
	if a.loss != nil && a.loss.fail(time.Now()) {
		a.dropped++
		s.Ctx.Metrics.Dropped.Add(1)
		if a.dropped <= 10 || a.dropped%1000 == 0 {
			s.Ctx.Log.Warn("kafka sink: write failed; dropped within the loss tolerance", "cluster", cluster, "topic", e.Msg.Topic, "dropped", a.dropped, "err", e.Err)
		}
		return
	}
	if a.err == nil {
		a.err = fmt.Errorf("kafka sink: writing to %s (cluster %d): %w", e.Msg.Topic, cluster, e.Err)
		if a.loss != nil {
			a.err = fmt.Errorf("%w (failed writes above the tolerated %g over %v)", a.err, s.cfg.tolRatio, s.cfg.tolWindow)
		}
	}
}

// kafkaRefused says whether the cluster refused the record itself: sending
// it again, or elsewhere, would not help.
func kafkaRefused(err error) bool {
	for _, k := range []sarama.KError{sarama.ErrMessageSizeTooLarge, sarama.ErrInvalidMessage, sarama.ErrInvalidMessageSize,
		sarama.ErrUnknownTopicOrPartition, sarama.ErrInvalidTopic, sarama.ErrTopicAuthorizationFailed,
		sarama.ErrMessageSetSizeTooLarge, sarama.ErrInvalidRecord, sarama.ErrInvalidTimestamp, sarama.ErrPolicyViolation,
		sarama.ErrInvalidRequiredAcks, sarama.ErrClusterAuthorizationFailed} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// checkClustersALO follows the health watchers (task goroutine).
func (s *kafkaSinkALO) checkClustersALO() {
	now := time.Now()
	for _, c := range s.alo.clusters {
		up := c.health.up()
		switch {
		case c.prod != nil && !up:
			// Its records in flight come back as errors and are sent again.
			s.Ctx.Log.Warn("kafka sink: cluster down; writing to the others", "cluster", c.idx)
			c.prod.AsyncClose()
			c.prod = nil
		case c.prod == nil && up && !now.Before(c.nextTry):
			if err := s.connectALO(c); err != nil {
				s.Ctx.Log.Warn("kafka sink: cluster reachable but connecting failed", "cluster", c.idx, "err", err)
				c.health.markDown()
				_, _, retry := s.cfg.p.health()
				c.nextTry = now.Add(retry)
				continue
			}
			s.Ctx.Log.Info("kafka sink: cluster back", "cluster", c.idx)
		}
	}
}

// route picks the cluster for the next batch; avoid is a cluster the
// records just failed on, taken only when no other is up.
func (s *kafkaSinkALO) route(avoid int) *kafkaSinkCluster {
	cs := s.alo.clusters
	var fallback *kafkaSinkCluster
	for i := range cs {
		k := i
		if !s.cfg.primary {
			k = (s.alo.rr + i) % len(cs)
		}
		c := cs[k]
		if c.prod == nil {
			continue
		}
		if c.idx == avoid {
			fallback = c
			continue
		}
		if !s.cfg.primary {
			s.alo.rr = k + 1
		}
		return c
	}
	return fallback
}

func (s *kafkaSinkALO) noCluster() error {
	return fmt.Errorf("kafka sink: no cluster reachable (of %d)", len(s.alo.clusters))
}

func (s *kafkaSinkALO) processALO(b *row.Batch) error {
	s.checkClustersALO()
	if err := s.resendALO(); err != nil {
		return err
	}
	a := s.alo
	c := s.route(-1)
	if c == nil {
		return s.noCluster()
	}
	a.mu.Lock()
	err := a.err
	a.inflight += int64(b.Len)
	if a.loss != nil {
		a.loss.sent(time.Now(), int64(b.Len))
	}
	a.mu.Unlock()
	if err != nil {
		return err
	}
	s.send(c.prod.Input(), b, c.mark)
	return nil
}

// resendALO sends the records that failed for a reason of their cluster
// again, to another cluster if one is up.
func (s *kafkaSinkALO) resendALO() error {
	a := s.alo
	a.mu.Lock()
	ms := a.resend
	a.resend = nil
	a.inflight += int64(len(ms))
	a.mu.Unlock()
	for i, m := range ms {
		c := s.route(m.Metadata.(*kafkaSent).cluster)
		if c == nil {
			a.mu.Lock()
			a.inflight -= int64(len(ms) - i)
			a.resend = append(a.resend, ms[i:]...)
			a.mu.Unlock()
			return s.noCluster()
		}
		c.prod.Input() <- m
	}
	return nil
}

// flushALO is the checkpoint barrier: it returns once every record sent so
// far is acknowledged (or dropped within the tolerance).
func (s *kafkaSinkALO) flushALO() error {
	a := s.alo
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.checkClustersALO()
		if err := s.resendALO(); err != nil {
			return err
		}
		a.mu.Lock()
		err, busy := a.err, a.inflight > 0 || len(a.resend) > 0
		a.mu.Unlock()
		if err != nil || !busy {
			return err
		}
		select {
		case <-a.notify:
		case <-tick.C:
		}
	}
}

func (s *kafkaSinkALO) closeALO() error {
	a := s.alo
	for _, c := range a.clusters {
		if c.prod != nil {
			c.prod.AsyncClose()
			c.prod = nil
		}
		if c.health != nil {
			c.health.close()
			c.health = nil
		}
	}
	a.readers.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// lossWindow counts writes and failed writes over a sliding window, in
// kafkaLossBuckets steps.
type lossWindow struct {
	ratio   float64
	step    int64 // ns per bucket
	buckets [kafkaLossBuckets]struct{ at, sent, failed int64 }
}

const kafkaLossBuckets = 20

func newLossWindow(ratio float64, window time.Duration) *lossWindow {
	return &lossWindow{ratio: ratio, step: max(1, int64(window)/kafkaLossBuckets)}
}

func (w *lossWindow) bucket(now time.Time) *struct{ at, sent, failed int64 } {
	at := now.UnixNano() / w.step
	b := &w.buckets[at%kafkaLossBuckets]
	if b.at != at {
		b.at, b.sent, b.failed = at, 0, 0
	}
	return b
}

func (w *lossWindow) sent(now time.Time, n int64) { w.bucket(now).sent += n }

// fail counts a failed write and says whether the failures over the window
// stay within the ratio.
func (w *lossWindow) fail(now time.Time) bool {
	w.bucket(now).failed++
	at := now.UnixNano() / w.step
	var sent, failed int64
	for _, b := range w.buckets {
		if b.at > at-kafkaLossBuckets {
			sent, failed = sent+b.sent, failed+b.failed
		}
	}
	return float64(failed) <= w.ratio*float64(max(sent, failed))
}
