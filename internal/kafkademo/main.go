// Command kafkademo shows a Kafka job at work with no Kafka installed
// (`make run-kafka`): it starts an in-process Kafka cluster (kfake, the real
// protocol on a fixed port), creates the job's topics, produces generated
// Keystone events continuously, runs bin/sluice on the job
// (examples/keystone-router.json by default) pointed at that cluster, and
// prints how many records each output topic holds, read_committed, every few
// seconds until Ctrl-C.
//
// It lives under internal/ so that kfake is never linked into bin/sluice.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/engine/spec"
)

type config struct {
	job        string
	sluice     string
	port       int
	partitions int
	rate       int
	every      time.Duration
	duration   time.Duration
	httpAddr   string
	// expect: when stopping, wait until every output topic has records
	// (or fail): the smoke test's check that the job routed.
	expect bool
	out    io.Writer // counts
	log    io.Writer // sluice's own output
}

func main() {
	cfg := config{out: os.Stdout, log: os.Stderr}
	flag.StringVar(&cfg.job, "job", "examples/keystone-router.json", "job spec; every kafka node is pointed at the demo cluster")
	flag.StringVar(&cfg.sluice, "sluice", "bin/sluice", "the sluice binary (make build)")
	flag.IntVar(&cfg.port, "port", 9092, "port of the demo Kafka broker on 127.0.0.1 (0: any free port)")
	flag.IntVar(&cfg.partitions, "partitions", 3, "partitions per topic")
	flag.IntVar(&cfg.rate, "rate", 2000, "generated events per second")
	flag.DurationVar(&cfg.every, "every", 3*time.Second, "how often to print the counts")
	flag.DurationVar(&cfg.duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	flag.StringVar(&cfg.httpAddr, "http", "127.0.0.1:8081", `the job's REST API address (try "bin/sluice skip-backlog"); "" for none`)
	flag.BoolVar(&cfg.expect, "expect", false, "on stop, wait until every output topic has records; exit 1 if they do not")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "kafkademo:", err)
		os.Exit(1)
	}
}

// jobTopics are the topics a job's kafka nodes read and write.
type jobTopics struct {
	nodes   []string // ids of kafka nodes
	sources []string
	sinks   []string
}

func readJob(path string) (*jobTopics, error) {
	j, err := spec.ParseFile(path, nil)
	if err != nil {
		return nil, err
	}
	jt := &jobTopics{}
	for _, n := range j.Nodes {
		if n.Type != "kafka" {
			continue
		}
		var p struct {
			Topics []string `json:"topics"`
			Topic  string   `json:"topic"`
		}
		if err := json.Unmarshal(n.Params, &p); err != nil {
			return nil, fmt.Errorf("%s: node %s: %w", path, n.ID, err)
		}
		jt.nodes = append(jt.nodes, n.ID)
		if len(n.Inputs) == 0 {
			jt.sources = append(jt.sources, p.Topics...)
		} else if p.Topic != "" && !contains(jt.sinks, p.Topic) {
			jt.sinks = append(jt.sinks, p.Topic)
		}
	}
	if len(jt.sources) == 0 || len(jt.sinks) == 0 {
		return nil, fmt.Errorf("%s: want a kafka source with topics and a kafka sink with a topic", path)
	}
	return jt, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// run runs the demo until ctx ends or cfg.duration passes, and returns the
// final counts per output topic.
func run(ctx context.Context, cfg config) (map[string]int64, error) {
	jt, err := readJob(cfg.job)
	if err != nil {
		return nil, err
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(int32(cfg.partitions), append(append([]string{}, jt.sources...), jt.sinks...)...)}
	if cfg.port != 0 {
		opts = append(opts, kfake.Ports(cfg.port))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting the demo Kafka on port %d (is a Kafka already there? try -port): %w", cfg.port, err)
	}
	defer cluster.Close()
	addrs := cluster.ListenAddrs()
	fmt.Fprintf(cfg.out, "kafkademo: Kafka (kfake) at %s; topics %s → %s\n", strings.Join(addrs, ","), strings.Join(jt.sources, ","), strings.Join(jt.sinks, ","))

	dir, err := os.MkdirTemp("", "sluice-kafkademo")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	brokers, _ := json.Marshal(addrs)
	args := []string{"run", "--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints"), "--local-dir", filepath.Join(dir, "local")}
	for _, id := range jt.nodes {
		args = append(args, "--set", fmt.Sprintf("nodes.%s.params.brokers=%s", id, brokers))
	}
	if cfg.httpAddr != "" {
		args = append(args, "--http", cfg.httpAddr)
	}
	args = append(args, cfg.job)

	var produced atomic.Int64
	genCtx, stopGen := context.WithCancel(ctx)
	defer stopGen()
	genDone := make(chan error, 1)
	go func() { genDone <- generate(genCtx, addrs, jt.sources, cfg.rate, &produced) }()

	counter := newCounter(jt.sinks)
	countCtx, stopCount := context.WithCancel(context.Background())
	defer stopCount()
	countDone := make(chan error, 1)
	go func() { countDone <- counter.run(countCtx, addrs) }()

	cmd := exec.Command(cfg.sluice, args...)
	cmd.Stdout, cmd.Stderr = cfg.log, cfg.log
	// Its own process group: Ctrl-C reaches the demo, which stops the job.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (run make build first): %w", cfg.sluice, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Fprintf(cfg.out, "kafkademo: running %s %s\n", cfg.sluice, strings.Join(args, " "))

	began := time.Now()
	report := func() {
		fmt.Fprintf(cfg.out, "[%4.0fs] produced %d → %s\n", time.Since(began).Seconds(), produced.Load(), counter.String())
	}
	tick := time.NewTicker(cfg.every)
	defer tick.Stop()
	var until <-chan time.Time
	if cfg.duration > 0 {
		until = time.After(cfg.duration)
	}
	var runErr error
loop:
	for {
		select {
		case <-tick.C:
			report()
		case <-ctx.Done():
			break loop
		case <-until:
			break loop
		case err := <-genDone:
			if err != nil && genCtx.Err() == nil {
				runErr = err
				break loop
			}
			genDone = nil
		case err := <-countDone:
			runErr = fmt.Errorf("counting the output: %w", err)
			break loop
		case err := <-exited:
			runErr = fmt.Errorf("sluice exited: %v", err)
			exited = nil
			break loop
		}
	}
	stopGen()
	if runErr == nil && cfg.expect {
		runErr = waitRouted(counter, exited, report, cfg.every)
	}
	if exited != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	report()
	return counter.snapshot(), runErr
}

// waitRouted waits until every output topic has records.
func waitRouted(c *counter, exited <-chan error, report func(), every time.Duration) error {
	deadline := time.After(2 * time.Minute)
	tick := time.NewTicker(min(every, 200*time.Millisecond))
	defer tick.Stop()
	for {
		if c.allSeen() {
			return nil
		}
		select {
		case <-tick.C:
		case err := <-exited:
			return fmt.Errorf("sluice exited before every output topic had records: %v", err)
		case <-deadline:
			report()
			return errors.New("some output topics got no records within 2 minutes")
		}
	}
}

var eventTypes = []string{"play", "stop", "error", "browse"}

// generate produces Keystone events at rate per second; one in 500 does
// not parse, for the dead-letter topic.
func generate(ctx context.Context, addrs, topics []string, rate int, produced *atomic.Int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	const tick = 20 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	rng := rand.New(rand.NewPCG(1, 2))
	var failed atomic.Value
	carry := 0.0
	for i := 0; ; {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err, _ := failed.Load().(error); err != nil {
			return fmt.Errorf("producing events: %w", err)
		}
		carry += float64(rate) * tick.Seconds()
		for ; carry >= 1; carry-- {
			var v []byte
			if i%500 == 499 {
				v = []byte(`{"event_id": 42, "type": "not an event"`)
			} else {
				v = fmt.Appendf(nil, `{"event_id":"e%d","type":%q,"device":"d%d","country":%q,"duration_ms":%d,"ts":%d}`,
					i, eventTypes[rng.IntN(4)], rng.IntN(1000), []string{"NL", "BR", "US", "JP"}[rng.IntN(4)], rng.IntN(600_000), time.Now().UnixMilli())
			}
			cl.Produce(ctx, &kgo.Record{Topic: topics[i%len(topics)], Value: v}, func(_ *kgo.Record, err error) {
				if err != nil && !errors.Is(err, context.Canceled) {
					failed.CompareAndSwap(nil, err)
					return
				}
				if err == nil {
					produced.Add(1)
				}
			})
			i++
		}
	}
}

// counter counts the committed records of the output topics.
type counter struct {
	topics []string
	mu     sync.Mutex
	n      map[string]int64
}

func newCounter(topics []string) *counter {
	return &counter{topics: topics, n: map[string]int64{}}
}

func (c *counter) run(ctx context.Context, addrs []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(c.topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("%s/%d: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		c.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) { c.n[r.Topic]++ })
		c.mu.Unlock()
	}
}

func (c *counter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int64, len(c.n))
	for k, v := range c.n {
		m[k] = v
	}
	return m
}

func (c *counter) allSeen() bool {
	m := c.snapshot()
	for _, t := range c.topics {
		if m[t] == 0 {
			return false
		}
	}
	return true
}

func (c *counter) String() string {
	m := c.snapshot()
	ts := append([]string{}, c.topics...)
	sort.Strings(ts)
	var b strings.Builder
	for i, t := range ts {
		if i > 0 {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, "%s %d", t, m[t])
	}
	return b.String()
}
