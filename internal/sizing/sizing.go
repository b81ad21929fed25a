// Package sizing is the back-of-the-envelope calculation of "How To Size
// Your Apache Flink Cluster" for a keyed, windowed Kafka-to-Kafka job: the
// network each machine needs for its share of the Kafka input, the keyBy
// shuffle, the window's emits, state on network-attached disks and the
// checkpoint upload. Pure arithmetic: `sluice size` reads the inputs and
// prints the result.
package sizing

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Inputs describe the job and the cluster. Sizes are bytes; rates per
// second.
type Inputs struct {
	RecordsPerSecond float64 `json:"recordsPerSecond"`
	RecordBytes      float64 `json:"recordBytes"`
	// Keys: distinct keys over the whole window.
	Keys float64 `json:"keys"`
	// StateBytes: one accumulator of one key (eager aggregation: one per
	// key per slide, so a window of size/slide slides keeps size/slide).
	StateBytes float64 `json:"stateBytesPerKey"`
	// EmitBytes: a window result row of one key.
	EmitBytes float64       `json:"emitBytesPerKey"`
	Window    time.Duration `json:"window"`
	// Slide: 0 or Window for tumbling windows.
	Slide              time.Duration `json:"slide"`
	CheckpointInterval time.Duration `json:"checkpointInterval"`
	Incremental        bool          `json:"incremental"`
	Machines           int           `json:"machines"`
	// NIC: a machine's network capacity in bytes/s each way (full
	// duplex).
	NIC float64 `json:"nicBytesPerSecond"`
}

// MarshalJSON writes the durations as Go durations ("5m0s").
func (in Inputs) MarshalJSON() ([]byte, error) {
	type plain Inputs
	return json.Marshal(struct {
		plain
		Window             string `json:"window"`
		Slide              string `json:"slide"`
		CheckpointInterval string `json:"checkpointInterval"`
	}{plain(in), in.Window.String(), in.Slide.String(), in.CheckpointInterval.String()})
}

// Validate names the first input that cannot be used.
func (in Inputs) Validate() error {
	pos := []struct {
		name string
		v    float64
	}{{"records per second", in.RecordsPerSecond}, {"record size", in.RecordBytes}, {"keys", in.Keys},
		{"state bytes per key", in.StateBytes}, {"NIC capacity", in.NIC}}
	for _, p := range pos {
		if !(p.v > 0) || math.IsInf(p.v, 0) {
			return fmt.Errorf("%s: must be > 0, got %v", p.name, p.v)
		}
	}
	if in.EmitBytes < 0 {
		return fmt.Errorf("emitted bytes per key: must be ≥ 0, got %v", in.EmitBytes)
	}
	if in.Window <= 0 {
		return fmt.Errorf("window: must be > 0, got %v", in.Window)
	}
	if in.Slide < 0 || in.Slide > in.Window {
		return fmt.Errorf("slide: must be between 0 (tumbling) and the window (%v), got %v", in.Window, in.Slide)
	}
	if in.CheckpointInterval <= 0 {
		return fmt.Errorf("checkpoint interval: must be > 0, got %v", in.CheckpointInterval)
	}
	if in.Machines < 1 {
		return fmt.Errorf("machines: must be ≥ 1, got %d", in.Machines)
	}
	return nil
}

// Line is one figure of the result with how it was computed.
type Line struct {
	Name string `json:"name"`
	// Dir is "in", "out" or "" (not network: a total or a ratio).
	Dir string `json:"direction,omitempty"`
	// BytesPerSecond per machine (Ratio for the headroom).
	BytesPerSecond float64 `json:"bytesPerSecond,omitempty"`
	Ratio          float64 `json:"ratio,omitempty"`
	Formula        string  `json:"formula"`
}

// Result is the calculation per machine.
type Result struct {
	Inputs Inputs `json:"inputs"`
	// Panes: accumulators per key (window / slide).
	Panes float64 `json:"panes"`
	// StateBytes: the whole job's state.
	StateBytes float64 `json:"stateBytes"`
	Lines      []Line  `json:"perMachine"`
	In         float64 `json:"inBytesPerSecond"`
	Out        float64 `json:"outBytesPerSecond"`
	// ClusterIn and ClusterOut: over every machine.
	ClusterIn  float64 `json:"clusterInBytesPerSecond"`
	ClusterOut float64 `json:"clusterOutBytesPerSecond"`
	// Headroom: the NIC's share left in the busier direction (negative:
	// over capacity).
	Headroom float64 `json:"nicHeadroom"`
}

// Compute does the calculation.
func Compute(in Inputs) (*Result, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	slide := in.Slide
	if slide == 0 {
		slide = in.Window
	}
	m := float64(in.Machines)
	panes := math.Ceil(float64(in.Window) / float64(slide))
	r := &Result{Inputs: in, Panes: panes, StateBytes: in.Keys * in.StateBytes * panes}
	add := func(name, dir string, v float64, formula string, args ...any) {
		r.Lines = append(r.Lines, Line{Name: name, Dir: dir, BytesPerSecond: v, Formula: fmt.Sprintf(formula, args...)})
		switch dir {
		case "in":
			r.In += v
		case "out":
			r.Out += v
		}
	}
	kafkaIn := in.RecordsPerSecond * in.RecordBytes / m
	add("Kafka in", "in", kafkaIn, "records/s × record size / machines = %s × %s / %d",
		num(in.RecordsPerSecond), Bytes(in.RecordBytes), in.Machines)
	// A keyBy sends each record to the machine of its key: all but the
	// machine's own share leaves it, and as much comes in from the others.
	shuffle := kafkaIn * (m - 1) / m
	add("shuffle out", "out", shuffle, "Kafka in × (machines − 1) / machines = %s × %d / %d", Rate(kafkaIn), in.Machines-1, in.Machines)
	add("shuffle in", "in", shuffle, "as shuffle out")
	emit := in.Keys * in.EmitBytes / slide.Seconds() / m
	add("window emit", "out", emit, "keys × emitted bytes per key / slide / machines = %s × %s / %v / %d",
		num(in.Keys), Bytes(in.EmitBytes), slide, in.Machines)
	// Each record updates the accumulator of every window it falls in:
	// read, then written back (state on network-attached disks).
	state := in.RecordsPerSecond / m * panes * in.StateBytes
	add("state reads", "in", state, "records/s / machines × window/slide × state bytes per key = %s / %d × %s × %s",
		num(in.RecordsPerSecond), in.Machines, num(panes), Bytes(in.StateBytes))
	add("state writes", "out", state, "as state reads")
	interval := in.CheckpointInterval.Seconds()
	if in.Incremental {
		// Only the accumulators written since the last checkpoint: at most
		// one per key and pane, at most one per record and pane.
		touched := math.Min(in.Keys, in.RecordsPerSecond*interval)
		cp := touched * panes * in.StateBytes / m / interval
		add("checkpoint upload (incremental)", "out", cp,
			"min(keys, records/s × interval) × window/slide × state bytes per key / machines / interval = min(%s, %s × %v) × %s × %s / %d / %v",
			num(in.Keys), num(in.RecordsPerSecond), in.CheckpointInterval, num(panes), Bytes(in.StateBytes), in.Machines, in.CheckpointInterval)
	} else {
		cp := r.StateBytes / m / interval
		add("checkpoint upload (full)", "out", cp, "keys × window/slide × state bytes per key / machines / interval = %s × %s × %s / %d / %v",
			num(in.Keys), num(panes), Bytes(in.StateBytes), in.Machines, in.CheckpointInterval)
	}
	r.ClusterIn, r.ClusterOut = r.In*m, r.Out*m
	r.Headroom = 1 - math.Max(r.In, r.Out)/in.NIC
	return r, nil
}

// MachinesFor is the fewest machines (up to max) whose busier NIC
// direction, at peak times the computed rate, leaves at least headroom of
// the NIC free: the step the article leaves to the reader.
func MachinesFor(in Inputs, peak, headroom float64, max int) (int, *Result, error) {
	if !(peak >= 1) {
		return 0, nil, fmt.Errorf("peak factor: must be ≥ 1, got %v", peak)
	}
	if headroom < 0 || headroom >= 1 {
		return 0, nil, fmt.Errorf("headroom: must be in [0, 1), got %v", headroom)
	}
	for m := 1; m <= max; m++ {
		in.Machines = m
		r, err := Compute(in)
		if err != nil {
			return 0, nil, err
		}
		if math.Max(r.In, r.Out)*peak <= in.NIC*(1-headroom) {
			return m, r, nil
		}
	}
	return 0, nil, errors.New("no cluster of up to " + fmt.Sprint(max) + " machines has that headroom: the checkpoint upload or the window emit alone may exceed a NIC; try incremental checkpoints or a longer interval")
}

// Rate formats bytes per second in decimal units, as the article does.
func Rate(v float64) string { return Bytes(v) + "/s" }

// Bytes formats a size in decimal units (kB, MB, GB, TB).
func Bytes(v float64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	i := 0
	for math.Abs(v) >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return fmt.Sprintf("%.3g %s", v, units[i])
}

// num formats a count.
func num(v float64) string {
	switch {
	case v >= 1e9 && math.Mod(v, 1e9) == 0:
		return fmt.Sprintf("%.0f G", v/1e9)
	case v >= 1e6 && math.Mod(v, 1e6) == 0:
		return fmt.Sprintf("%.0f M", v/1e6)
	case v >= 1e3 && math.Mod(v, 1e3) == 0:
		return fmt.Sprintf("%.0f k", v/1e3)
	}
	return fmt.Sprintf("%.4g", v)
}

// ParseBytes reads a size: a number with an optional unit, decimal (B, kB
// or KB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB).
func ParseBytes(s string) (float64, error) {
	v, unit, err := splitUnit(s)
	if err != nil {
		return 0, err
	}
	mult, ok := map[string]float64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, unit)
	}
	return v * mult, nil
}

// ParseNIC reads a network capacity in bits per second ("10GbE",
// "10Gbit", "25G", "1000Mbit") or bytes per second ("1250MB/s") and
// returns bytes per second.
func ParseNIC(s string) (float64, error) {
	if strings.HasSuffix(s, "/s") {
		return ParseBytes(strings.TrimSuffix(s, "/s"))
	}
	v, unit, err := splitUnit(s)
	if err != nil {
		return 0, err
	}
	u := strings.ToLower(unit)
	for _, suf := range []string{"bit", "bps", "be", "b"} {
		if strings.HasSuffix(u, suf) {
			u = strings.TrimSuffix(u, suf)
			break
		}
	}
	mult, ok := map[string]float64{"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[u]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (say 10GbE, 10Gbit, 25G or 1250MB/s)", s, unit)
	}
	return v * mult / 8, nil
}

// ParseCount reads a count with an optional k, M or G (decimal).
func ParseCount(s string) (float64, error) {
	v, unit, err := splitUnit(s)
	if err != nil {
		return 0, err
	}
	mult, ok := map[string]float64{"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}[unit]
	if !ok {
		return 0, fmt.Errorf("%q: unknown suffix %q (k, M or G)", s, unit)
	}
	return v * mult, nil
}

func splitUnit(s string) (float64, string, error) {
	t := strings.TrimSpace(strings.ReplaceAll(s, "_", ""))
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.' || t[i] == 'e' && i > 0 && i+1 < len(t) && (t[i+1] >= '0' && t[i+1] <= '9' || t[i+1] == '-')) {
		i++
	}
	v, err := strconv.ParseFloat(t[:i], 64)
	if err != nil || i == 0 {
		return 0, "", fmt.Errorf("%q: not a number", s)
	}
	return v, strings.TrimSpace(t[i:]), nil
}
