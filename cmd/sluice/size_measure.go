package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/internal/sizing"
)

// `sluice size --job ID` and `--metrics URL`: the inputs from a running
// job's master's /metrics, scraped twice --sample apart for the rate. See
// docs/sizing.md.

// promSample is one sample of the Prometheus text format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	promLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$`)
	promLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseProm reads the text exposition format (what /metrics serves).
func parseProm(r io.Reader) ([]promSample, error) {
	var out []promSample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m := promLine.FindStringSubmatch(l)
		if m == nil {
			return nil, fmt.Errorf("not a Prometheus sample: %q", l)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", l, err)
		}
		s := promSample{name: m[1], labels: map[string]string{}, value: v}
		for _, p := range promLabel.FindAllStringSubmatch(m[2], -1) {
			s.labels[p[1]] = p[2]
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// scrapeProm GETs url (a /metrics page) with the bearer token, if any.
func scrapeProm(ctx context.Context, c *http.Client, url, token string) ([]promSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return parseProm(resp.Body)
}

// byVertex sums name's samples per vertex label.
func byVertex(ss []promSample, name string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ss {
		if s.name == name {
			out[s.labels["vertex"]] += s.value
		}
	}
	return out
}

func total(ss []promSample, name string) (float64, bool) {
	var v float64
	found := false
	for _, s := range ss {
		if s.name == name {
			v += s.value
			found = true
		}
	}
	return v, found
}

func sum(m map[string]float64) float64 {
	var v float64
	for _, x := range m {
		v += x
	}
	return v
}

// measured is what two scrapes say of the sizing's inputs; Source names
// where each figure came from (for the output), by the input's JSON name.
type measured struct {
	in     sizing.Inputs
	have   map[string]bool
	source map[string]string
	used   map[string]string // merge: the measured inputs taken or overridden
}

// measure derives the inputs from two scrapes, elapsed apart.
func measure(first, second []promSample, elapsed time.Duration) measured {
	m := measured{have: map[string]bool{}, source: map[string]string{}}
	set := func(name string, v float64, how string) {
		switch name {
		case "recordsPerSecond":
			m.in.RecordsPerSecond = v
		case "recordBytes":
			m.in.RecordBytes = v
		case "keys":
			m.in.Keys = v
		case "stateBytesPerKey":
			m.in.StateBytes = v
		case "emitBytesPerKey":
			m.in.EmitBytes = v
		}
		m.have[name], m.source[name] = true, how
	}
	// Records per second into the job: the sources' records (rows out
	// where a process predates the record counters).
	recs0, recs1 := byVertex(first, "sluice_vertex_source_records_total"), byVertex(second, "sluice_vertex_source_records_total")
	if len(recs1) > 0 && elapsed > 0 {
		set("recordsPerSecond", (sum(recs1)-sum(recs0))/elapsed.Seconds(),
			fmt.Sprintf("sluice_vertex_source_records_total over %v", elapsed.Round(time.Millisecond)))
	}
	srcBytes := sum(byVertex(second, "sluice_vertex_source_bytes_total"))
	if r := sum(recs1); r > 0 && srcBytes > 0 {
		set("recordBytes", srcBytes/r, "sluice_vertex_source_bytes_total / sluice_vertex_source_records_total")
	}
	// The stateful vertex with the most state is the one the job is sized
	// by; its window's panes turn accumulators into keys.
	keys, bytes := byVertex(second, "sluice_vertex_state_keys"), byVertex(second, "sluice_vertex_state_bytes")
	var vertex string
	for v, b := range bytes {
		if vertex == "" || b > bytes[vertex] || b == bytes[vertex] && v < vertex {
			vertex = v
		}
	}
	size, slide := byVertex(second, "sluice_vertex_window_size_seconds"), byVertex(second, "sluice_vertex_window_slide_seconds")
	if vertex == "" {
		for v := range size { // no state yet: the window still tells its panes
			if vertex == "" || v < vertex {
				vertex = v
			}
		}
	}
	if s, ok := size[vertex]; ok && s > 0 {
		m.in.Window = time.Duration(s * float64(time.Second))
		m.in.Slide = time.Duration(slide[vertex] * float64(time.Second))
		m.have["window"], m.source["window"] = true, "sluice_vertex_window_size_seconds{vertex=\""+vertex+"\"}"
		m.have["slide"], m.source["slide"] = true, "sluice_vertex_window_slide_seconds{vertex=\""+vertex+"\"}"
	}
	if k := keys[vertex]; k > 0 {
		panes := 1.0
		if m.have["window"] && m.in.Slide > 0 {
			panes = float64(m.in.Window) / float64(m.in.Slide)
			panes = float64(int64(panes + 0.999999)) // as sizing.Compute: ceil
		}
		set("keys", k/panes, fmt.Sprintf("sluice_vertex_state_keys{vertex=%q} / %g panes", vertex, panes))
		set("stateBytesPerKey", bytes[vertex]/k, fmt.Sprintf("sluice_vertex_state_bytes / sluice_vertex_state_keys{vertex=%q}", vertex))
	}
	sinkRecs, sinkBytes := sum(byVertex(second, "sluice_vertex_sink_records_total")), sum(byVertex(second, "sluice_vertex_sink_bytes_total"))
	if sinkRecs > 0 {
		set("emitBytesPerKey", sinkBytes/sinkRecs, "sluice_vertex_sink_bytes_total / sluice_vertex_sink_records_total")
	}
	if v, ok := total(second, "sluice_checkpoint_interval_seconds"); ok && v > 0 {
		m.in.CheckpointInterval = time.Duration(v * float64(time.Second))
		m.have["checkpointInterval"], m.source["checkpointInterval"] = true, "sluice_checkpoint_interval_seconds"
	}
	if v, ok := total(second, "sluice_checkpoint_incremental"); ok {
		m.in.Incremental = v > 0
		m.have["incremental"], m.source["incremental"] = true, "sluice_checkpoint_incremental"
	}
	if v, ok := total(second, "sluice_taskmanagers_registered"); ok && v > 0 {
		m.in.Machines = int(v)
		m.have["machines"], m.source["machines"] = true, "sluice_taskmanagers_registered"
	} else if len(recs1) > 0 {
		m.in.Machines = 1
		m.have["machines"], m.source["machines"] = true, "one process (no TaskManagers registered)"
	}
	return m
}

// flagOf is the `sluice size` flag of each input, by its JSON name.
var flagOf = map[string]string{"recordsPerSecond": "records-per-second", "recordBytes": "record-size", "keys": "keys",
	"stateBytesPerKey": "state-per-key", "emitBytesPerKey": "emit-per-key", "window": "window", "slide": "slide",
	"checkpointInterval": "checkpoint-interval", "incremental": "incremental", "machines": "machines"}

// merge puts the measured inputs into in (the flags' values) where no flag
// was given explicitly; m.used keeps the sources of those it took.
func (m *measured) merge(in sizing.Inputs, given map[string]bool) sizing.Inputs {
	m.used = map[string]string{}
	for name, f := range flagOf {
		if !m.have[name] {
			continue
		}
		if given[f] {
			m.used[name] = "--" + f + " (given; measured by " + m.source[name] + ")"
			continue
		}
		m.used[name] = m.source[name]
		switch name {
		case "recordsPerSecond":
			in.RecordsPerSecond = m.in.RecordsPerSecond
		case "recordBytes":
			in.RecordBytes = m.in.RecordBytes
		case "keys":
			in.Keys = m.in.Keys
		case "stateBytesPerKey":
			in.StateBytes = m.in.StateBytes
		case "emitBytesPerKey":
			in.EmitBytes = m.in.EmitBytes
		case "window":
			in.Window = m.in.Window
		case "slide":
			in.Slide = m.in.Slide
		case "checkpointInterval":
			in.CheckpointInterval = m.in.CheckpointInterval
		case "incremental":
			in.Incremental = m.in.Incremental
		case "machines":
			in.Machines = m.in.Machines
		}
	}
	return in
}

// printMeasured lists the inputs and where each came from.
func printMeasured(w io.Writer, in sizing.Inputs, m *measured) {
	from := func(name string) string {
		if s, ok := m.used[name]; ok {
			return s
		}
		return "--" + flagOf[name] + " (not measured)"
	}
	fmt.Fprintln(w, "inputs:")
	fmt.Fprintf(w, "  records/s            %-12.4g %s\n", in.RecordsPerSecond, from("recordsPerSecond"))
	fmt.Fprintf(w, "  record size          %-12s %s\n", sizing.Bytes(in.RecordBytes), from("recordBytes"))
	fmt.Fprintf(w, "  keys                 %-12.4g %s\n", in.Keys, from("keys"))
	fmt.Fprintf(w, "  state per key        %-12s %s\n", sizing.Bytes(in.StateBytes), from("stateBytesPerKey"))
	fmt.Fprintf(w, "  emitted per key      %-12s %s\n", sizing.Bytes(in.EmitBytes), from("emitBytesPerKey"))
	fmt.Fprintf(w, "  window / slide       %-12s %s\n", in.Window.String()+" / "+in.Slide.String(), from("window"))
	fmt.Fprintf(w, "  checkpoint interval  %-12v %s\n", in.CheckpointInterval, from("checkpointInterval"))
	fmt.Fprintf(w, "  incremental          %-12v %s\n", in.Incremental, from("incremental"))
	fmt.Fprintf(w, "  machines             %-12d %s\n", in.Machines, from("machines"))
	fmt.Fprintln(w)
}

// measureJob scrapes the job's master twice, sample apart: at metricsURL,
// or the master of the dispatcher's job id (through the dispatcher's
// proxy GET /v1/jobs/{id}/master/metrics where it has one, else at the
// address the job's status gives).
func measureJob(c *client, id, metricsURL string, sample time.Duration, stderr io.Writer) (measured, int) {
	ctx := context.Background()
	hc, token := c.http, ""
	if id != "" {
		var st struct {
			State  string `json:"state"`
			Master *struct {
				HTTP string `json:"http"`
			} `json:"master"`
		}
		js := c.json
		c.json = false
		code := c.do("GET", jobPath(id, ""), nil, "", &st)
		c.json = js
		if code != exitOK {
			return measured{}, code
		}
		proxy := c.base + jobPath(id, "/master/metrics")
		if _, err := scrapeProm(ctx, hc, proxy, c.token); err == nil {
			metricsURL, token = proxy, c.token
		} else if st.Master != nil && st.Master.HTTP != "" {
			metricsURL = "http://" + st.Master.HTTP + "/metrics"
		} else {
			fmt.Fprintf(stderr, "sluice size: job %s (%s) has no master serving /metrics to measure\n", id, st.State)
			return measured{}, exitConflict
		}
	}
	first, err := scrapeProm(ctx, hc, metricsURL, token)
	if err != nil {
		fmt.Fprintf(stderr, "sluice size: %v\n", err)
		return measured{}, exitUnreachable
	}
	start := time.Now()
	time.Sleep(sample)
	second, err := scrapeProm(ctx, hc, metricsURL, token)
	if err != nil {
		fmt.Fprintf(stderr, "sluice size: %v\n", err)
		return measured{}, exitUnreachable
	}
	return measure(first, second, time.Since(start)), exitOK
}
