package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
	"github.com/sluice-stream/sluice/internal/kafkatest"
	"github.com/sluice-stream/sluice/internal/procs"
)

// sizingJob reads Kafka topic "in" (records of a fixed size), counts per
// key in a sliding window and writes the counts to topic "out".
const sizingJob = `{
  "name": "sizing", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "500ms", "mode": "at-least-once", "retained": 2},
  "restart": {"strategy": "fixed-delay", "attempts": 5, "delay": "100ms"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": %[1]s, "topics": ["in"], "timestampField": "ts",
      "fields": [{"name": "k", "type": "string"}, {"name": "pad", "type": "string"}]}},
    {"id": "win", "type": "window", "inputs": [{"from": "src", "partition": "hash", "keys": ["k"]}], "params": {
      "keys": ["k"], "timeField": "ts", "type": "sliding", "size": "4s", "slide": "2s",
      "aggregates": [{"name": "n", "fn": "count"}]}},
    {"id": "out", "type": "kafka", "inputs": ["win"], "params": {"brokers": %[1]s, "topic": "out"}}
  ]
}`

// sizingRecord is record i of topic in: all the same size.
func sizingRecord(i int) []byte {
	return fmt.Appendf(nil, `{"k":"k%03d","pad":"%s"}`, i%200, strings.Repeat("p", 150))
}

// TestSizeMeasuredAndDashboards runs a Kafka job through a dispatcher
// (local resource manager: a framework master and TaskManagers):
// `sluice size --job ID` takes its inputs from the job master's
// measurements (record size, rate, keys, state and emitted bytes per key,
// the window, the checkpoint settings, the TaskManagers) and `--metrics
// URL` too, an explicit flag winning; GET /v1/kafka-lag lists the source's
// partitions; and every metric docs/grafana/sluice.json and
// docs/alerts.yml use is one the dispatcher or the master exports.
func TestSizeMeasuredAndDashboards(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	c := kafkatest.Start(t, 0, 2, "in", "out")
	// Records keep coming, so event time moves on and windows fire.
	ctx, stop := context.WithCancel(context.Background())
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; ctx.Err() == nil; i += 100 {
			for p := int32(0); p < 2; p++ {
				var recs []kafkatest.Record
				for j := int(p); j < 100; j += 2 {
					recs = append(recs, kafkatest.Record{Value: sizingRecord(i + j)})
				}
				c.Produce(t, "in", p, recs)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { stop(); <-produced })
	recordSize := float64(len(sizingRecord(0)))

	brokers, _ := json.Marshal(c.Addrs)
	jobFile := filepath.Join(dir, "job.json")
	if err := os.WriteFile(jobFile, fmt.Appendf(nil, sizingJob, brokers), 0o644); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t0ken-for-the-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, url, dlog := startDispatcher(t, dir, "file://"+filepath.Join(dir, "store"), token)
	out, code := dcli(t, url, token, "submit", jobFile, "--json")
	var sub struct{ ID string }
	if code != 0 || json.Unmarshal([]byte(out), &sub) != nil || sub.ID == "" {
		t.Fatalf("submit: exit %d: %q\n%s", code, out, tail(dlog.String(), 3000))
	}
	st := waitDispatcherJob(t, url, token, sub.ID, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil && s.Master.HTTP != ""
	}, "RUNNING")
	master := "http://" + st.Master.HTTP

	// Wait for every measurement: rows through the window into the sink,
	// state, the partitions, a checkpoint.
	var ss []sample
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ss = scrape(t, master+"/metrics")
		if sumOf(ss, "sluice_vertex_sink_records_total") > 0 && sumOf(ss, "sluice_vertex_state_keys") > 0 &&
			len(find(ss, "sluice_kafka_source_lag_records", nil)) == 2 && len(find(ss, "sluice_checkpoint_last_id", nil)) == 1 &&
			sumOf(ss, "sluice_taskmanager_heartbeat_rtt_seconds") > 0 && len(find(ss, "sluice_vertex_watermark_lag_seconds", nil)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job's measurements are not all there after 2 minutes; /metrics has %d samples\n%s", len(ss), tail(dlog.String(), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, s := range find(ss, "sluice_kafka_source_lag_records", nil) {
		if s.labels["vertex"] != "src" || s.labels["topic"] != "in" || s.labels["cluster"] != "0" || s.labels["subtask"] == "" || s.value < 0 {
			t.Errorf("lag sample %+v", s)
		}
	}

	// GET /v1/kafka-lag: the same partitions.
	var lag struct {
		Partitions []struct {
			Vertex                     string
			Subtask, Cluster           int
			Topic                      string
			Partition                  int32
			Offset, HighWatermark, Lag int64
		}
	}
	// Offsets are published about once a second and reach the master with
	// the TaskManagers' reports: wait until both partitions were read from.
	for deadline := time.Now().Add(time.Minute); ; {
		getJSON(t, master+"/v1/kafka-lag", &lag)
		if len(lag.Partitions) != 2 {
			t.Fatalf("kafka-lag: %+v", lag)
		}
		if lag.Partitions[0].Offset > 0 && lag.Partitions[1].Offset > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, p := range lag.Partitions {
		if p.Vertex != "src" || p.Topic != "in" || p.Partition != int32(i) || p.Offset <= 0 || p.Lag != max(0, p.HighWatermark-p.Offset) {
			t.Errorf("kafka-lag partition %d: %+v", i, p)
		}
	}

	// sluice size --job: every input measured.
	out, code = dcli(t, url, token, "size", "--job", sub.ID, "--sample", "1s", "--json")
	if code != 0 {
		t.Fatalf("size --job: exit %d", code)
	}
	var r struct {
		Inputs struct {
			RecordsPerSecond, RecordBytes, Keys float64
			StateBytes                          float64 `json:"stateBytesPerKey"`
			EmitBytes                           float64 `json:"emitBytesPerKey"`
			Window, Slide, CheckpointInterval   string
			Incremental                         bool
			Machines                            int
		}
		Measured map[string]string
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("size --json: %v\n%s", err, out)
	}
	in := r.Inputs
	if in.RecordBytes != recordSize || !(in.RecordsPerSecond > 0) || !(in.Keys > 0) || !(in.StateBytes > 0) || !(in.EmitBytes > 0) ||
		in.Window != "4s" || in.Slide != "2s" || in.CheckpointInterval != "500ms" || in.Incremental ||
		in.Machines != int(sumOf(ss, "sluice_taskmanagers_registered")) {
		t.Errorf("size --job: inputs %+v (record size %v)\n%s", in, recordSize, out)
	}
	for _, k := range []string{"recordsPerSecond", "recordBytes", "keys", "stateBytesPerKey", "emitBytesPerKey", "window", "slide", "checkpointInterval", "incremental", "machines"} {
		if !strings.HasPrefix(r.Measured[k], "sluice_") {
			t.Errorf("size --job: %s not from the metrics: %q", k, r.Measured[k])
		}
	}

	// sluice size --metrics: the table, with the flag given winning.
	out, code = dcli(t, url, token, "size", "--metrics", master+"/metrics", "--sample", "500ms", "--record-size", "5KB")
	if code != 0 {
		t.Fatalf("size --metrics: exit %d", code)
	}
	t.Logf("sluice size --metrics %s/metrics --record-size 5KB:\n%s", master, out)
	for _, want := range []string{"record size          5 kB", "--record-size (given; measured by sluice_vertex_source_bytes_total",
		"window / slide       4s / 2s", "sluice_vertex_state_keys{vertex=\"win\"} / 2 panes", "per machine", "NIC headroom"} {
		if !strings.Contains(out, want) {
			t.Errorf("size --metrics output lacks %q:\n%s", want, out)
		}
	}

	// Every metric the dashboard and the alerts use is exported.
	exported := map[string]bool{"up": true}
	for _, s := range ss {
		exported[s.name] = true
	}
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t0ken-for-the-test")
	for _, s := range scrapeReq(t, req) {
		exported[s.name] = true
	}
	checkMetricNames(t, exported)
}

// metricName finds the Sluice metric names in a query.
var metricName = regexp.MustCompile(`\bsluice_[a-z0-9_]+\b`)

// checkMetricNames fails on a metric name in docs/grafana/sluice.json or
// docs/alerts.yml that exported lacks. The dispatcher's quota gauges exist
// only on Mesos (a quota set per role): those are looked up in the
// dispatcher's source instead.
func checkMetricNames(t *testing.T, exported map[string]bool) {
	t.Helper()
	quotaSrc, err := os.ReadFile(repoFile(t, "dispatcher/metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile(repoFile(t, "docs/grafana/sluice.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("docs/grafana/sluice.json: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	alerts, err := os.ReadFile(repoFile(t, "docs/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(alerts), "\n") {
		if l = strings.TrimSpace(l); !strings.HasPrefix(l, "#") && !strings.Contains(l, "summary:") && !strings.Contains(l, "description:") {
			exprs = append(exprs, l)
		}
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			seen[n] = true
		}
	}
	if len(seen) < 30 {
		t.Fatalf("only %d metric names found in the dashboard and the alerts", len(seen))
	}
	var missing []string
	for n := range seen {
		if exported[n] {
			continue
		}
		if strings.HasPrefix(n, "sluice_dispatcher_quota_") && bytes.Contains(quotaSrc, []byte(`"`+n+`"`)) {
			continue
		}
		missing = append(missing, n)
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Fatalf("used by the dashboard or the alerts but not exported: %v", missing)
	}
}

func sumOf(ss []sample, name string) float64 {
	var v float64
	for _, s := range find(ss, name, nil) {
		v += s.value
	}
	return v
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// scrapeReq is scrape with a request of its own (a bearer token).
func scrapeReq(t *testing.T, req *http.Request) []sample {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ps, err := parseProm(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v", req.URL, resp.Status, err)
	}
	out := make([]sample, len(ps))
	for i, p := range ps {
		out[i] = sample{name: p.name, labels: p.labels, value: p.value}
	}
	return out
}

// TestSizeMetricsOneProcess: `sluice run --http` serves the measurements
// too (the tasks count straight into the /metrics counters), and `sluice
// size --metrics` takes them: the sequence source's rows sized in the row
// codec's encoding, the window's keys and state, one machine; GET
// /v1/kafka-lag answers an empty list for a job without Kafka.
func TestSizeMetricsOneProcess(t *testing.T) {
	p := startSluice(t, obsJob(t)...)
	api := p.apiURL()
	p.waitFor("state, output and a checkpoint", func() bool {
		resp, err := http.Get(api + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		ps, err := parseProm(resp.Body)
		if err != nil {
			return false
		}
		var keys, sink, cps float64
		for _, s := range ps {
			switch s.name {
			case "sluice_vertex_state_keys":
				keys += s.value
			case "sluice_vertex_sink_records_total":
				sink += s.value
			case "sluice_checkpoint_last_id":
				cps++
			}
		}
		return keys > 0 && sink > 0 && cps > 0
	})
	var lag struct{ Partitions []any }
	getJSON(t, api+"/v1/kafka-lag", &lag)
	if lag.Partitions == nil || len(lag.Partitions) != 0 {
		t.Errorf("kafka-lag of a job without Kafka: %+v, want an empty list", lag)
	}
	var out, errb bytes.Buffer
	if code := sizeMain([]string{"--metrics", api + "/metrics", "--sample", "300ms", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("size --metrics: exit %d: %s", code, errb.String())
	}
	var r struct {
		Inputs struct {
			RecordsPerSecond, RecordBytes, Keys float64
			StateBytes                          float64 `json:"stateBytesPerKey"`
			EmitBytes                           float64 `json:"emitBytesPerKey"`
			Window, Slide, CheckpointInterval   string
			Machines                            int
		}
		Measured map[string]string
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	// The sequence source's rows: an id, a key below 1000 and an event
	// time, a few bytes each as varints.
	in := r.Inputs
	if !(in.RecordBytes > 2 && in.RecordBytes < 30) || !(in.Keys > 0) || !(in.StateBytes > 0) || !(in.EmitBytes > 0) ||
		in.Window != "1s" || in.Slide != "1s" || in.CheckpointInterval != "100ms" || in.Machines != 1 {
		t.Errorf("inputs %+v\n%s", in, out.String())
	}
	if r.Measured["machines"] != "one process (no TaskManagers registered)" || !strings.HasPrefix(r.Measured["recordBytes"], "sluice_vertex_source_bytes_total") {
		t.Errorf("measured %v", r.Measured)
	}
}
