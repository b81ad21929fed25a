// Package kafkatest starts an in-process Kafka cluster for tests
// (github.com/twmb/franz-go/pkg/kfake: the real protocol, transactions
// included) and gives a producer and a read_committed reader of it built on
// franz-go's kgo client, independent of the sarama code under test.
package kafkatest

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Cluster is a running kfake cluster.
type Cluster struct {
	*kfake.Cluster
	Addrs []string
	// Gate cuts the cluster off the network (Down) and back (Up) without
	// losing its data: an outage as clients see it.
	Gate  *Gate
	opts  []kgo.Opt      // of the test's own clients (SASL, TLS)
	marks map[string]int // end markers appended per topic
}

// Start starts a cluster of three brokers with the topics (partitions each)
// and stops it when the test ends. port 0 picks free ports; a fixed port
// lets another process reach the first broker at 127.0.0.1:port.
func Start(t testing.TB, port int, partitions int32, topics ...string) *Cluster {
	t.Helper()
	return StartWith(t, Options{Port: port, Partitions: partitions, Topics: topics})
}

// Options of StartWith.
type Options struct {
	Port       int // of the first of three brokers; 0: free ports
	Partitions int32
	Topics     []string
	Kfake      []kfake.Opt // more cluster options (SASL, TLS, configs)
	Client     []kgo.Opt   // options of Produce's and ReadCommitted's clients to match
}

// StartWith starts a cluster of three brokers as Start does, with options.
func StartWith(t testing.TB, o Options) *Cluster {
	t.Helper()
	g := &Gate{conns: map[net.Conn]struct{}{}}
	opts := []kfake.Opt{kfake.NumBrokers(3), kfake.SeedTopics(o.Partitions, o.Topics...),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			l, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			return g.wrap(l), nil
		})}
	if o.Port != 0 {
		opts = append(opts, kfake.Ports(o.Port, o.Port+1, o.Port+2))
	}
	c, err := kfake.NewCluster(append(opts, o.Kfake...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Cluster{Cluster: c, Addrs: c.ListenAddrs(), Gate: g, opts: o.Client, marks: map[string]int{}}
}

// Gate cuts a set of listeners' connections: while down, every connection
// they accepted is closed and new ones are closed as soon as accepted, so
// clients see refused/reset connections until Up.
type Gate struct {
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

// Down closes every connection and refuses new ones until Up.
func (g *Gate) Down() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = true
	for c := range g.conns {
		_ = c.(*gatedConn).Conn.Close() // not gatedConn.Close: it takes g.mu
	}
	clear(g.conns)
}

// Up lets connections through again.
func (g *Gate) Up() {
	g.mu.Lock()
	g.down = false
	g.mu.Unlock()
}

func (g *Gate) wrap(l net.Listener) net.Listener { return &gatedListener{Listener: l, g: g} }

type gatedListener struct {
	net.Listener
	g *Gate
}

func (l *gatedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.g.mu.Lock()
		if l.g.down {
			l.g.mu.Unlock()
			_ = c.Close()
			continue
		}
		gc := &gatedConn{Conn: c, g: l.g}
		l.g.conns[gc] = struct{}{}
		l.g.mu.Unlock()
		return gc, nil
	}
}

type gatedConn struct {
	net.Conn
	g *Gate
}

func (c *gatedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c)
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// Proxy forwards a loopback address to a target address, with a Gate: a
// bootstrap address that can go away while the brokers stay.
type Proxy struct {
	Addr string
	Gate *Gate
}

// NewProxy starts a proxy to target, stopped when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{conns: map[net.Conn]struct{}{}}
	l := g.wrap(raw)
	t.Cleanup(func() { _ = l.Close(); g.Down() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
				<-done // either side ends (or the gate cut c): end both
			}()
		}
	}()
	return &Proxy{Addr: raw.Addr().String(), Gate: g}
}

// client is a franz-go client of the cluster for the test's own use.
func (c *Cluster) client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(c.Addrs...)}, c.opts...)
	cl, err := kgo.NewClient(append(all, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// CreateTopic creates a topic with topic configs (e.g. max.message.bytes).
func (c *Cluster) CreateTopic(t testing.TB, topic string, partitions int32, configs map[string]string) {
	t.Helper()
	cl := c.client(t)
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, 1
	for k, v := range configs {
		cfg := kmsg.NewCreateTopicsRequestTopicConfig()
		cfg.Name, cfg.Value = k, kmsg.StringPtr(v)
		rt.Configs = append(rt.Configs, cfg)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
	for _, r := range resp.Topics {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			t.Fatalf("creating topic %s: %v", topic, err)
		}
	}
}

// AddPartitions grows a topic to total partitions.
func (c *Cluster) AddPartitions(t testing.TB, topic string, total int32) {
	t.Helper()
	cl := c.client(t)
	defer cl.Close()
	req := kmsg.NewPtrCreatePartitionsRequest()
	rt := kmsg.NewCreatePartitionsRequestTopic()
	rt.Topic, rt.Count = topic, total
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("adding partitions to %s: %v", topic, err)
	}
	for _, r := range resp.Topics {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			t.Fatalf("adding partitions to %s: %v", topic, err)
		}
	}
}

// FreePort returns a loopback port with two more free after it (best effort).
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		var ls []net.Listener
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		for k := 1; k <= 2 && ok; k++ {
			l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", itoa(port+k)))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l2)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no three consecutive free ports")
	return 0
}

func itoa(n int) string {
	b := []byte{}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// Record is what Produce writes and ReadCommitted returns.
type Record struct {
	Key, Value []byte
	Partition  int32
	Offset     int64
	Timestamp  time.Time
}

// Produce writes records to topic (partition -1: by key hash, round robin
// without a key).
func (c *Cluster) Produce(t testing.TB, topic string, partition int32, recs []Record) {
	t.Helper()
	opts := []kgo.Opt{kgo.ProducerLinger(0)}
	if partition >= 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	cl := c.client(t, opts...)
	defer cl.Close()
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		krs[i] = &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Partition: partition, Timestamp: r.Timestamp}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}

// endMarker is the value of the records ReadCommitted appends to find the end.
const endMarker = "\x00kafkatest-end"

// ReadCommitted returns every committed record of topic's partitions 0 to
// partitions-1. It first appends a marker record (not transactional) to
// each partition and reads with isolation read_committed until it has seen
// every marker: a marker becomes visible only once every transaction before
// it ended, so what was read before it is everything committed. Markers
// are left out of the result; a transaction left open makes it time out.
func (c *Cluster) ReadCommitted(t testing.TB, topic string, partitions int32) []Record {
	t.Helper()
	for p := int32(0); p < partitions; p++ {
		c.Produce(t, topic, p, []Record{{Value: []byte(endMarker)}})
	}
	c.marks[topic]++
	need := c.marks[topic]
	cl := c.client(t, kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []Record
	seen := map[int32]int{}
	complete := func() bool {
		for p := int32(0); p < partitions; p++ {
			if seen[p] < need {
				return false
			}
		}
		return true
	}
	for !complete() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s read_committed: markers seen per partition %v, want %d each (a transaction left open?)", topic, seen, need)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("reading %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == endMarker {
				seen[r.Partition]++ // markers of earlier calls count too
				return
			}
			out = append(out, Record{Key: r.Key, Value: r.Value, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp})
		})
	}
	return out
}

// Reader consumes a topic from the start in the background (isolation
// read_uncommitted: what at-least-once writers wrote), following new
// partitions, until the test ends.
type Reader struct {
	mu   sync.Mutex
	recs []Record
}

// NewReader starts reading topic.
func (c *Cluster) NewReader(t testing.TB, topic string) *Reader {
	t.Helper()
	cl := c.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.MetadataMinAge(100*time.Millisecond), kgo.MetadataMaxAge(time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	r := &Reader{}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			var batch []Record
			fs.EachRecord(func(k *kgo.Record) {
				if string(k.Value) != endMarker {
					batch = append(batch, Record{Key: k.Key, Value: k.Value, Partition: k.Partition, Offset: k.Offset, Timestamp: k.Timestamp})
				}
			})
			r.mu.Lock()
			r.recs = append(r.recs, batch...)
			r.mu.Unlock()
		}
	}()
	return r
}

// Records returns what was read so far.
func (r *Reader) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.recs...)
}
