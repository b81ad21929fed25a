package sizing

import (
	"math"
	"strings"
	"testing"
	"time"
)

// article is the example of "How To Size Your Apache Flink Cluster".
var article = Inputs{RecordsPerSecond: 1e6, RecordBytes: 2e3, Keys: 500e6, StateBytes: 40, EmitBytes: 40,
	Window: 5 * time.Minute, Slide: time.Minute, CheckpointInterval: time.Minute, Machines: 5, NIC: 10e9 / 8}

// TestArticle pins the article's figures per machine: 400 MB/s Kafka in,
// 320 MB/s shuffle each way, 67 MB/s window emit, 40 MB/s state each way,
// 333 MB/s checkpoint, 760 MB/s in and out, about 40 % NIC headroom.
func TestArticle(t *testing.T) {
	r, err := Compute(article)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"Kafka in": 400e6, "shuffle out": 320e6, "shuffle in": 320e6, "window emit": 66.67e6,
		"state reads": 40e6, "state writes": 40e6, "checkpoint upload (full)": 333.3e6}
	for _, l := range r.Lines {
		w, ok := want[l.Name]
		if !ok {
			t.Errorf("unexpected line %q", l.Name)
			continue
		}
		if math.Abs(l.BytesPerSecond-w)/w > 0.001 {
			t.Errorf("%s: %s, want %s", l.Name, Rate(l.BytesPerSecond), Rate(w))
		}
		delete(want, l.Name)
	}
	if len(want) > 0 {
		t.Errorf("missing lines %v", want)
	}
	if math.Abs(r.In-760e6) > 1e6 || math.Abs(r.Out-760e6) > 1e6 {
		t.Errorf("in %s, out %s; want 760 MB/s each", Rate(r.In), Rate(r.Out))
	}
	if math.Abs(r.ClusterIn-3.8e9) > 5e6 {
		t.Errorf("cluster in %s, want 3.8 GB/s", Rate(r.ClusterIn))
	}
	if r.Headroom < 0.38 || r.Headroom > 0.41 {
		t.Errorf("headroom %.3f, want about 0.4", r.Headroom)
	}
	if r.StateBytes != 100e9 {
		t.Errorf("state %s, want 100 GB", Bytes(r.StateBytes))
	}
}

func TestIncremental(t *testing.T) {
	in := article
	in.Incremental = true
	r, err := Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	// 60 M records a minute touch at most 60 M of the 500 M keys.
	for _, l := range r.Lines {
		if strings.HasPrefix(l.Name, "checkpoint") {
			if w := 60e6 * 5 * 40 / 5 / 60; math.Abs(l.BytesPerSecond-w) > 1 {
				t.Errorf("incremental upload %s, want %s", Rate(l.BytesPerSecond), Rate(w))
			}
		}
	}
}

func TestMachinesFor(t *testing.T) {
	// At the article's load with a peak of 1.5× and 30 % headroom: at 5
	// machines 760 MB/s × 1.5 is above 875 MB/s; more machines cut the
	// per-machine share.
	m, r, err := MachinesFor(article, 1.5, 0.3, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if m <= 5 || math.Max(r.In, r.Out)*1.5 > article.NIC*0.7 {
		t.Fatalf("%d machines, busier direction %s", m, Rate(math.Max(r.In, r.Out)))
	}
	in := article
	in.Machines = m - 1
	prev, _ := Compute(in)
	if math.Max(prev.In, prev.Out)*1.5 <= article.NIC*0.7 {
		t.Fatalf("%d machines would do", m-1)
	}
	if _, _, err := MachinesFor(article, 0.5, 0, 10); err == nil || !strings.Contains(err.Error(), "peak factor") {
		t.Fatalf("peak 0.5: %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		f    func(*Inputs)
		want string
	}{
		{func(i *Inputs) { i.RecordsPerSecond = 0 }, "records per second"},
		{func(i *Inputs) { i.Slide = 10 * time.Minute }, "slide"},
		{func(i *Inputs) { i.Machines = 0 }, "machines"},
		{func(i *Inputs) { i.CheckpointInterval = 0 }, "checkpoint interval"},
		{func(i *Inputs) { i.NIC = math.Inf(1) }, "NIC"},
	} {
		in := article
		c.f(&in)
		if _, err := Compute(in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error naming %q, got %v", c.want, err)
		}
	}
}

func TestParse(t *testing.T) {
	for s, want := range map[string]float64{"2KB": 2e3, "2 kB": 2e3, "40": 40, "1.5MiB": 1.5 * (1 << 20), "3GB": 3e9} {
		if v, err := ParseBytes(s); err != nil || v != want {
			t.Errorf("ParseBytes(%q) = %v, %v; want %v", s, v, err, want)
		}
	}
	for s, want := range map[string]float64{"10GbE": 1.25e9, "10Gbit": 1.25e9, "25G": 3.125e9, "1000Mbit": 125e6, "1250MB/s": 1.25e9} {
		if v, err := ParseNIC(s); err != nil || v != want {
			t.Errorf("ParseNIC(%q) = %v, %v; want %v", s, v, err, want)
		}
	}
	for s, want := range map[string]float64{"500M": 500e6, "1e6": 1e6, "1_000_000": 1e6, "2k": 2e3} {
		if v, err := ParseCount(s); err != nil || v != want {
			t.Errorf("ParseCount(%q) = %v, %v; want %v", s, v, err, want)
		}
	}
	for _, s := range []string{"", "KB", "2XB", "ten"} {
		if _, err := ParseBytes(s); err == nil {
			t.Errorf("ParseBytes(%q): no error", s)
		}
	}
}
