package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/internal/kafkatest"
)

type countOut struct{ n int }

func (o *countOut) Collect(b *row.Batch) { o.n += b.Len; b.Release() }
func (o *countOut) Watermark(int64)      {}

// TestKafkaSourceOffsetResetOnReconnect: a cluster the source dropped comes
// back with the topic recreated. offsetReset fail must fail the task, not
// keep reconnecting (and warning) forever.
func TestKafkaSourceOffsetResetOnReconnect(t *testing.T) {
	c := kafkatest.Start(t, 0, 1, "in")
	produce := func(from, to int) {
		var recs []kafkatest.Record
		for i := from; i < to; i++ {
			recs = append(recs, kafkatest.Record{Value: fmt.Appendf(nil, `{"id":%d}`, i)})
		}
		c.Produce(t, "in", 0, recs)
	}
	produce(0, 100)
	brokers, _ := json.Marshal(c.Addrs)
	params := fmt.Sprintf(`{"brokers": %s, "topics": ["in"], "fields": [{"name": "id", "type": "int64"}],
		"healthCheckInterval": "100ms", "retryInterval": "100ms", "offsetReset": "fail"}`, brokers)
	pl, err := planKafkaSource(&nodes.PlanContext{Job: &spec.Job{Name: "reconnect"}, Node: &spec.Node{ID: "src", Type: "kafka", Params: json.RawMessage(params)}})
	if err != nil {
		t.Fatal(err)
	}
	s := pl.NewSource().(*kafkaSource)
	out := &countOut{}
	ctx := &runtime.Context{JobName: "reconnect", NodeID: "src", Parallelism: 1, MaxParallelism: 64, ExactlyOnce: true, Out: out,
		Side: map[string]runtime.Output{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: &runtime.NodeMetrics{}}
	if err := s.Open(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	poll := func(what string, until func() bool) error {
		for deadline := time.Now().Add(30 * time.Second); !until(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			if _, err := s.Poll(); err != nil {
				return err
			}
		}
		return nil
	}
	if err := poll("the 100 records", func() bool { return out.n == 100 }); err != nil {
		t.Fatal(err)
	}
	// The task drops the cluster (as when its probes fail) ...
	cl := s.clusters[0]
	cl.health.markDown()
	if err := poll("the cluster to be dropped", func() bool { return cl.client == nil }); err != nil {
		t.Fatal(err)
	}
	// ... the topic is recreated meanwhile, and the cluster returns.
	admin, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs...))
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrDeleteTopicsRequest()
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr("in")
	req.Topics, req.TopicNames = append(req.Topics, rt), []string{"in"}
	if _, err := req.RequestWith(context.Background(), admin); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	c.CreateTopic(t, "in", 1, nil)
	produce(1000, 1020)
	err = poll("the out-of-range error", func() bool { return false })
	want := "offset 100 of in/0 (cluster 0) is out of range [0, 20], above the high watermark"
	if !strings.Contains(fmt.Sprint(err), want) {
		t.Fatalf("poll error %v, want one containing %q", err, want)
	}
}
