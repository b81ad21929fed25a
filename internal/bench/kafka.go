package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafka: Kafka→Kafka routing on kfake (in this process, over loopback TCP):
// read ~200-byte JSON events from a 4-partition topic, keep play/stop
// events (half of them), project 5 of their fields and write them keyed by
// device. The engine runs it as kafka source → filter → project → kafka sink
// (bounded source, so the job ends); beside it, in the same run, bare sarama
// programs consume → produce the same records with the same client settings.

const kafkaParts = 4

const specKafka = `{"name": "bench-kafka", "parallelism": 1, "maxParallelism": 8,
 "checkpoint": {"interval": "1s", "mode": "at-least-once"},
 "restart": {"strategy": "none"},
 "nodes": [
  {"id": "src", "type": "kafka", "params": {"brokers": [], "topics": ["bench-in"], "bounded": true,
    "fields": [{"name": "event_id", "type": "string"}, {"name": "type", "type": "string"},
               {"name": "device", "type": "string"}, {"name": "country", "type": "string"},
               {"name": "duration_ms", "type": "int64"}, {"name": "ts", "type": "timestamp"}]}},
  {"id": "route", "type": "filter", "inputs": ["src"], "params": {"expr": "type == \"play\" || type == \"stop\""}},
  {"id": "slim", "type": "project", "inputs": ["route"], "params": {"fields": [
    {"name": "event_id", "expr": "event_id"}, {"name": "type", "expr": "type"}, {"name": "device", "expr": "device"},
    {"name": "duration_ms", "expr": "duration_ms"}, {"name": "ts", "expr": "ts"}]}},
  {"id": "out", "type": "kafka", "inputs": ["slim"], "params": {"brokers": [], "topic": "", "keyField": "device"}}]}`

var kafkaTypes = []string{"play", "stop", "error", "browse"}

// kafkaEvent is one input record (~200 bytes of JSON).
func kafkaEvent(i int) []byte {
	return fmt.Appendf(nil, `{"event_id":"e%08d","type":%q,"device":"d%05d","country":"NL","duration_ms":%d,"ts":%d,"ua":"Mozilla/5.0 (X11; Linux x86_64) sluice-bench/1.0","session":"s%08d"}`,
		i, kafkaTypes[i%4], i%10007, i%60000, 1_700_000_000_000+int64(i), i/16)
}

func scenarioKafka() {
	n := int(1_000_000 * *scale)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(kafkaParts, "bench-in"))
	if err != nil {
		fail(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	t0 := time.Now()
	size, err := produceEvents(addrs, n)
	if err != nil {
		fail(err)
	}
	want := int64(n / 2) // play and stop
	fmt.Fprintf(os.Stderr, "bench kafka: %d records (%.0f B each on average) produced in %v\n", n, float64(size)/float64(n), time.Since(t0).Round(time.Millisecond))

	run := 0
	topic := func() string {
		run++
		t := fmt.Sprintf("bench-out-%d", run)
		if err := c.CreateTopic(t, kafkaParts, nil); err != nil {
			fail(fmt.Errorf("creating %s: %w", t, err))
		}
		return t
	}
	loop := func(decode bool) measurement {
		return best(*reps, func() measurement {
			out := topic()
			defer c.DeleteTopic(out)
			var got int64
			m := timeIt(int64(n), func() {
				if got, err = kafkaLoop(addrs, out, decode); err != nil {
					fail(err)
				}
			})
			if decode && got != want || !decode && got != int64(n)/2 {
				fail(fmt.Errorf("bare loop wrote %d records, want %d", got, want))
			}
			return m
		})
	}
	raw := loop(false)
	kline("bare sarama loop, no JSON decoding (byte match, value copied)", raw, nil)
	bare := loop(true)
	kline("bare sarama loop, encoding/json (1 goroutine)", bare, nil)
	brokers, _ := json.Marshal(addrs)
	for _, p := range []int{1, 2} {
		for _, mode := range []string{"at-least-once", "exactly-once"} {
			m := best(*reps, func() measurement {
				out := topic()
				defer c.DeleteTopic(out)
				var got int64
				mm := timeIt(int64(n), func() {
					r := mustRun(specKafka, fmt.Sprintf("parallelism=%d", p), "checkpoint.mode="+mode,
						"nodes.src.params.brokers="+string(brokers), "nodes.out.params.brokers="+string(brokers),
						"nodes.out.params.topic="+out)
					got = r.Metrics["out"].RowsIn.Load()
				})
				if got != want {
					fail(fmt.Errorf("engine wrote %d records, want %d", got, want))
				}
				return mm
			})
			kline(fmt.Sprintf("engine, parallelism %d, %s", p, mode), m, &bare)
		}
	}
}

// produceEvents fills bench-in, round robin over its partitions.
func produceEvents(addrs []string, n int) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var size int64
	const chunk = 50_000
	for i := 0; i < n; i += chunk {
		recs := make([]*kgo.Record, 0, chunk)
		for j := i; j < min(n, i+chunk); j++ {
			v := kafkaEvent(j)
			size += int64(len(v))
			recs = append(recs, &kgo.Record{Topic: "bench-in", Partition: int32(j % kafkaParts), Value: v})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return 0, fmt.Errorf("producing the input: %w", err)
		}
	}
	return size, nil
}

// The bare programs use the kafka source's consumer settings and the kafka
// sink's at-least-once producer settings (engine/connectors/kafka).
func loopConsumerConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.ClientID = "bench-loop"
	c.Consumer.Return.Errors = true
	c.Consumer.IsolationLevel = sarama.ReadCommitted
	c.Consumer.Fetch.Default = 1 << 20
	c.Consumer.MaxWaitTime = 100 * time.Millisecond
	c.ChannelBufferSize = 2 * 1024
	return c
}

func loopProducerConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.ClientID = "bench-loop"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 10
	c.Producer.Partitioner = sarama.NewReferenceHashPartitioner
	c.Producer.Flush.Bytes = 1 << 20
	c.Producer.Flush.Frequency = 5 * time.Millisecond
	c.Producer.MaxMessageBytes = 1 << 20
	return c
}

// kline is line with rates in thousands: Kafka rates are far below the
// in-memory scenarios' millions.
func kline(what string, m measurement, loop *measurement) {
	ratio := "—"
	if loop != nil {
		ratio = fmt.Sprintf("%.2f×", m.wall.Seconds()/loop.wall.Seconds())
	}
	add("kafka→kafka routing", what, fmt.Sprintf("%d", m.rows), m.wall.Round(time.Millisecond).String(),
		fmt.Sprintf("%.0f k", m.perSec()/1e3), fmt.Sprintf("%.0f k", m.perCPUSec()/1e3), ratio)
}

type loopEvent struct {
	EventID    string `json:"event_id"`
	Type       string `json:"type"`
	Device     string `json:"device"`
	Country    string `json:"country"`
	DurationMs int64  `json:"duration_ms"`
	TS         int64  `json:"ts"`
}

type loopSlim struct {
	EventID    string `json:"event_id"`
	Type       string `json:"type"`
	Device     string `json:"device"`
	DurationMs int64  `json:"duration_ms"`
	TS         int64  `json:"ts"`
}

// kafkaLoop reads bench-in to its current end and writes the routed
// records to out; it returns how many were acknowledged. With decode it
// does what the engine does (parse, filter, project, encode); without, it
// routes by a byte match and copies values as they are: the floor of what
// the Kafka clients and kfake cost.
func kafkaLoop(addrs []string, out string, decode bool) (int64, error) {
	client, err := sarama.NewClient(addrs, loopConsumerConfig())
	if err != nil {
		return 0, err
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return 0, err
	}
	defer consumer.Close()
	prod, err := sarama.NewAsyncProducer(addrs, loopProducerConfig())
	if err != nil {
		return 0, err
	}
	var acked int64
	var firstErr error
	var acks sync.WaitGroup
	acks.Add(2)
	go func() {
		defer acks.Done()
		for range prod.Successes() {
			acked++
		}
	}()
	go func() {
		defer acks.Done()
		for e := range prod.Errors() {
			if firstErr == nil {
				firstErr = e.Err
			}
		}
	}()

	// One goroutine per partition hands messages to the single worker, as
	// sarama's partition consumers do for the kafka source.
	msgs := make(chan *sarama.ConsumerMessage, 2*1024)
	var readers sync.WaitGroup
	for p := int32(0); p < kafkaParts; p++ {
		end, err := client.GetOffset("bench-in", p, sarama.OffsetNewest)
		if err != nil {
			return 0, err
		}
		pc, err := consumer.ConsumePartition("bench-in", p, sarama.OffsetOldest)
		if err != nil {
			return 0, err
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for m := range pc.Messages() {
				if m.Offset < end {
					msgs <- m
				}
				if m.Offset+1 >= end {
					pc.AsyncClose()
				}
			}
		}()
	}
	go func() { readers.Wait(); close(msgs) }()

	play, stop := []byte(`"type":"play"`), []byte(`"type":"stop"`)
	in := prod.Input()
	for m := range msgs {
		if !decode {
			if bytes.Contains(m.Value, play) || bytes.Contains(m.Value, stop) {
				in <- &sarama.ProducerMessage{Topic: out, Value: sarama.ByteEncoder(m.Value)}
			}
			continue
		}
		var ev loopEvent
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			return 0, fmt.Errorf("bad record at %d/%d: %w", m.Partition, m.Offset, err)
		}
		if ev.Type != "play" && ev.Type != "stop" {
			continue
		}
		v, err := json.Marshal(loopSlim{ev.EventID, ev.Type, ev.Device, ev.DurationMs, ev.TS})
		if err != nil {
			return 0, err
		}
		in <- &sarama.ProducerMessage{Topic: out, Key: sarama.StringEncoder(ev.Device), Value: sarama.ByteEncoder(v)}
	}
	prod.AsyncClose()
	acks.Wait()
	if firstErr != nil {
		return acked, errors.Join(errors.New("bare loop: producing"), firstErr)
	}
	return acked, nil
}
