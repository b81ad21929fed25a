package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/sizing"
)

// TestSizeArticle: `sluice size` with its defaults (the article's example)
// prints the article's figures, as a table and as JSON; a bad flag names
// itself.
func TestSizeArticle(t *testing.T) {
	var out, errb bytes.Buffer
	if code := sizeMain([]string{"--explain"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"400 MB/s", "320 MB/s", "66.7 MB/s", "40 MB/s", "333 MB/s", "total                     760 MB/s  760 MB/s", "3.8 GB/s in", "NIC headroom: 39%", "checkpoint upload (full) = keys × window/slide"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := sizeMain([]string{"--json", "--peak", "1.5", "--headroom", "0.3"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r struct {
		In     float64 `json:"inBytesPerSecond"`
		Inputs struct {
			Window string `json:"window"`
		} `json:"inputs"`
		Needed struct {
			Machines int `json:"machines"`
		} `json:"needed"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if r.In != 760e6 || r.Inputs.Window != "5m0s" || r.Needed.Machines != 7 {
		t.Fatalf("json: in %v, window %q, machines needed %d\n%s", r.In, r.Inputs.Window, r.Needed.Machines, out.String())
	}
	errb.Reset()
	if code := sizeMain([]string{"--record-size", "2XB"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--record-size") {
		t.Fatalf("bad size: exit %d, %q", code, errb.String())
	}
}

// TestSizeMeasure: the inputs from two scrapes of a master's /metrics,
// and a flag given explicitly winning over its measurement.
func TestSizeMeasure(t *testing.T) {
	page := func(records float64) []promSample {
		ps, err := parseProm(strings.NewReader(fmt.Sprintf(`# HELP x y
sluice_vertex_source_records_total{job_name="j",vertex="src"} %g
sluice_vertex_source_bytes_total{job_name="j",vertex="src"} %g
sluice_vertex_state_keys{job_name="j",vertex="win"} 5000
sluice_vertex_state_bytes{job_name="j",vertex="win"} 200000
sluice_vertex_state_keys{job_name="j",vertex="small"} 10
sluice_vertex_state_bytes{job_name="j",vertex="small"} 100
sluice_vertex_window_size_seconds{job_name="j",vertex="win"} 300
sluice_vertex_window_slide_seconds{job_name="j",vertex="win"} 60
sluice_vertex_sink_records_total{job_name="j",vertex="out"} 10
sluice_vertex_sink_bytes_total{job_name="j",vertex="out"} 400
sluice_checkpoint_interval_seconds{job_name="j"} 60
sluice_checkpoint_incremental{job_name="j"} 1
sluice_taskmanagers_registered{job_name="j"} 3
`, records, records*2000)))
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	m := measure(page(1000), page(11000), 2*time.Second)
	want := sizing.Inputs{RecordsPerSecond: 5000, RecordBytes: 2000, Keys: 1000, StateBytes: 40, EmitBytes: 40,
		Window: 5 * time.Minute, Slide: time.Minute, CheckpointInterval: time.Minute, Incremental: true, Machines: 3}
	in := m.merge(sizing.Inputs{NIC: 1.25e9}, map[string]bool{"machines": true})
	want.Machines, want.NIC = 0, 1.25e9 // --machines given (its value is the caller's)
	if in != want {
		t.Fatalf("inputs %+v, want %+v", in, want)
	}
	if got := m.used["keys"]; got != `sluice_vertex_state_keys{vertex="win"} / 5 panes` {
		t.Errorf("keys from %q", got)
	}
	if got := m.used["machines"]; !strings.HasPrefix(got, "--machines (given") {
		t.Errorf("machines from %q", got)
	}
}
