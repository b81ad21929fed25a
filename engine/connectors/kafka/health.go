package kafka

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// kafkaHealth watches one cluster of a kafka node from its own goroutine,
// so that a cluster whose brokers hang (not just refuse) never blocks the
// task goroutine: the task only reads up() between polls or batches and
// closes or re-creates its clients when the answer changes.
//
// A probe is a metadata request through a client of its own. A probe that
// fails closes that client, and the next one bootstraps a new client from
// the configured brokers plus every broker metadata ever reported
// (kafkaAddrs): sarama forgets brokers that fail and falls back to the
// bootstrap list only, which is gone when the bootstrap brokers were
// replaced.
type kafkaHealth struct {
	cluster   int
	seeds     []string
	conf      *sarama.Config
	topics    []string // probed; nil: all topics
	interval  time.Duration
	failAfter time.Duration
	retry     time.Duration
	log       *slog.Logger

	ok   atomic.Bool
	stop chan struct{}
	done chan struct{}
}

// newKafkaHealth starts watching a cluster; up says whether it is up now
// (the node just connected to it, or failed to).
func newKafkaHealth(cluster int, seeds []string, base *sarama.Config, topics []string, p *kafkaClientParams, up bool, log *slog.Logger) *kafkaHealth {
	interval, failAfter, retry := p.health()
	conf := *base // a shallow copy: only scalars change below
	// Bounded probes: a hanging broker fails the probe, not the watcher.
	// As long as the failure timeout (a slow cluster is not a down one),
	// within 1s..10s.
	timeout := min(max(failAfter, time.Second), 10*time.Second)
	conf.Net.DialTimeout, conf.Net.ReadTimeout, conf.Net.WriteTimeout = timeout, timeout, timeout
	conf.Metadata.Full = false
	conf.Metadata.RefreshFrequency = 0
	conf.Metadata.Retry.Max = 0
	conf.Metadata.Timeout = timeout
	conf.ClientID = base.ClientID + "-health"
	h := &kafkaHealth{cluster: cluster, seeds: seeds, conf: &conf, topics: topics, interval: interval,
		failAfter: failAfter, retry: retry, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	h.ok.Store(up)
	go h.run()
	return h
}

func (h *kafkaHealth) up() bool { return h.ok.Load() }

// markDown is for the task: it could not use a cluster the watcher thinks
// is up (connecting failed). The watcher declares it up again after its next
// successful probe, retryInterval later.
func (h *kafkaHealth) markDown() { h.ok.Store(false) }

func (h *kafkaHealth) close() {
	close(h.stop)
	<-h.done
}

func (h *kafkaHealth) run() {
	defer close(h.done)
	var cl sarama.Client
	defer func() {
		if cl != nil {
			_ = cl.Close()
		}
	}()
	var failing time.Time // when the current run of failed probes began
	for {
		d := h.interval
		if !h.ok.Load() {
			d = h.retry
		}
		t := time.NewTimer(d)
		select {
		case <-h.stop:
			t.Stop()
			return
		case <-t.C:
		}
		began := time.Now()
		err := h.probe(&cl)
		if err == nil {
			failing = time.Time{}
			if !h.ok.Load() {
				h.log.Info("kafka: cluster reachable", "cluster", h.cluster)
				h.ok.Store(true)
			}
			continue
		}
		if cl != nil {
			_ = cl.Close()
			cl = nil
		}
		if failing.IsZero() {
			failing = began
		}
		if h.ok.Load() && time.Since(failing) >= h.failAfter {
			h.log.Warn("kafka: cluster unreachable; using the others until it returns", "cluster", h.cluster, "since", failing, "err", err)
			h.ok.Store(false)
		}
	}
}

func (h *kafkaHealth) probe(cl *sarama.Client) error {
	if *cl == nil {
		c, err := sarama.NewClient(kafkaAddrs(h.seeds), h.conf)
		if err != nil {
			return err
		}
		*cl = c
	}
	err := (*cl).RefreshMetadata(h.topics...)
	var kerr sarama.KError
	if err != nil && (!errors.As(err, &kerr) || errors.Is(err, sarama.ErrSASLAuthenticationFailed)) {
		return err
	}
	// A broker answered, if only with an error about a topic: the cluster
	// is there.
	rememberBrokers(h.seeds, *cl)
	return nil
}
