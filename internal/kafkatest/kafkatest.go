// Package kafkatest starts an in-process Kafka cluster for tests
// (github.com/twmb/franz-go/pkg/kfake: the real protocol, transactions
// included) and gives a producer and a read_committed reader of it built on
// franz-go's kgo client, independent of the sarama code under test.
package kafkatest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Cluster is a running kfake cluster.
type Cluster struct {
	*kfake.Cluster
	Addrs []string
	marks map[string]int // end markers appended per topic
}

// Start starts a cluster of three brokers with the topics (partitions each)
// and stops it when the test ends. port 0 picks free ports; a fixed port
// lets another process reach the first broker at 127.0.0.1:port.
func Start(t testing.TB, port int, partitions int32, topics ...string) *Cluster {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(3), kfake.SeedTopics(partitions, topics...)}
	if port != 0 {
		opts = append(opts, kfake.Ports(port, port+1, port+2))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Cluster{Cluster: c, Addrs: c.ListenAddrs(), marks: map[string]int{}}
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
	opts := []kgo.Opt{kgo.SeedBrokers(c.Addrs...), kgo.ProducerLinger(0)}
	if partition >= 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
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
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
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
