package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/sluice-stream/sluice/internal/sizing"
)

// cmdSize runs `sluice size`: the back-of-the-envelope network sizing of a
// keyed, windowed Kafka-to-Kafka job (docs/sizing.md). Its defaults are
// the example of "How To Size Your Apache Flink Cluster".
func cmdSize(args []string) int {
	return sizeMain(args, os.Stdout, os.Stderr)
}

func sizeMain(args []string, stdout, stderr io.Writer) int {
	// The dispatcher's flags (--dispatcher, --token-file, --ca-file) and
	// --json come with the client, for --job.
	c := newClient("size")
	fs := c.fs
	fs.SetOutput(stderr)
	jobID := fs.String("job", "", "measure the inputs on this job of the dispatcher (--dispatcher): its master's /metrics")
	metricsURL := fs.String("metrics", "", "measure the inputs on a job master's /metrics at this URL (e.g. http://127.0.0.1:8081/metrics)")
	sample := fs.Duration("sample", 5*time.Second, "with --job or --metrics: scrape twice this far apart for the records per second")
	rps := fs.String("records-per-second", "1M", "records per second into the job, over the whole cluster (k, M, G)")
	recSize := fs.String("record-size", "2KB", "bytes per Kafka record (kB, MB; KiB, MiB)")
	keys := fs.String("keys", "500M", "distinct keys over a window")
	state := fs.String("state-per-key", "40B", "bytes of one key's accumulator")
	emit := fs.String("emit-per-key", "40B", "bytes of one key's window result row")
	window := fs.Duration("window", 5*time.Minute, "window size")
	slide := fs.Duration("slide", time.Minute, "window slide (0: tumbling); eager aggregation keeps one accumulator per key per slide")
	interval := fs.Duration("checkpoint-interval", time.Minute, "checkpoint interval")
	incremental := fs.Bool("incremental", false, "incremental checkpoints: upload only the accumulators written since the last one")
	machines := fs.Int("machines", 5, "machines (TaskManager hosts)")
	nic := fs.String("nic", "10GbE", "each machine's network capacity, each way (10GbE, 25Gbit, 1250MB/s)")
	peak := fs.Float64("peak", 0, "with --headroom: size for this factor above the given rate, and print the machines needed")
	headroom := fs.Float64("headroom", -1, "with --peak: the share of the NIC to keep free (0–1)")
	asJSON := &c.json
	fs.Lookup("json").Usage = "print the result as JSON"
	explain := fs.Bool("explain", false, "show each figure's formula with the inputs")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sluice size: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var meas *measured
	if *jobID != "" || *metricsURL != "" {
		if *jobID != "" && *metricsURL != "" {
			return fail("give --job or --metrics, not both")
		}
		if _, code := c.parse(nil, 0, "size --job ID [flags]"); code != exitOK {
			return code
		}
		m, code := measureJob(c, *jobID, *metricsURL, *sample, stderr)
		if code != exitOK {
			return code
		}
		meas = &m
	}
	var in sizing.Inputs
	var err error
	for _, p := range []struct {
		flag  string
		v     string
		parse func(string) (float64, error)
		dst   *float64
	}{
		{"--records-per-second", *rps, sizing.ParseCount, &in.RecordsPerSecond},
		{"--record-size", *recSize, sizing.ParseBytes, &in.RecordBytes},
		{"--keys", *keys, sizing.ParseCount, &in.Keys},
		{"--state-per-key", *state, sizing.ParseBytes, &in.StateBytes},
		{"--emit-per-key", *emit, sizing.ParseBytes, &in.EmitBytes},
		{"--nic", *nic, sizing.ParseNIC, &in.NIC},
	} {
		if *p.dst, err = p.parse(p.v); err != nil {
			return fail("%s: %v", p.flag, err)
		}
	}
	in.Window, in.Slide, in.CheckpointInterval, in.Incremental, in.Machines = *window, *slide, *interval, *incremental, *machines
	if meas != nil {
		in = meas.merge(in, given)
	}
	r, err := sizing.Compute(in)
	if err != nil {
		return fail("%v", err)
	}
	type need struct {
		Peak     float64        `json:"peak"`
		Headroom float64        `json:"headroom"`
		Machines int            `json:"machines"`
		Result   *sizing.Result `json:"result"`
		Err      string         `json:"error,omitempty"`
	}
	var needed *need
	if *peak != 0 || *headroom >= 0 {
		p, h := *peak, *headroom
		if p == 0 {
			p = 1
		}
		if h < 0 {
			h = 0
		}
		m, nr, err := sizing.MachinesFor(in, p, h, 100000)
		needed = &need{Peak: p, Headroom: h, Machines: m, Result: nr}
		if err != nil {
			if nr == nil && m == 0 && (p < 1 || h >= 1) {
				return fail("%v", err)
			}
			needed.Err = err.Error()
		}
	}
	if *asJSON {
		out := struct {
			*sizing.Result
			Needed *need `json:"needed,omitempty"`
			// Measured: where each measured input came from.
			Measured map[string]string `json:"measured,omitempty"`
		}{r, needed, nil}
		if meas != nil {
			out.Measured = meas.used
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fail("%v", err)
		}
		return 0
	}
	if meas != nil {
		printMeasured(stdout, in, meas)
	}
	printSizing(stdout, r, *explain)
	if needed != nil {
		fmt.Fprintln(stdout)
		if needed.Err != "" {
			fmt.Fprintf(stdout, "machines needed at %.2g× peak with %.0f%% NIC headroom: %s\n", needed.Peak, 100*needed.Headroom, needed.Err)
		} else {
			fmt.Fprintf(stdout, "machines needed at %.2g× peak with %.0f%% NIC headroom: %d (per machine %s in, %s out; %s at peak)\n",
				needed.Peak, 100*needed.Headroom, needed.Machines, sizing.Rate(needed.Result.In), sizing.Rate(needed.Result.Out),
				sizing.Rate(max(needed.Result.In, needed.Result.Out)*needed.Peak))
		}
	}
	return 0
}

func printSizing(w io.Writer, r *sizing.Result, explain bool) {
	in := r.Inputs
	fmt.Fprintf(w, "%d machines, NIC %s each way; state %s (%g accumulators per key)\n\n", in.Machines, sizing.Rate(in.NIC), sizing.Bytes(r.StateBytes), r.Panes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "per machine\tin\tout\t")
	for _, l := range r.Lines {
		cin, cout := "", ""
		if l.Dir == "in" {
			cin = sizing.Rate(l.BytesPerSecond)
		} else {
			cout = sizing.Rate(l.BytesPerSecond)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", l.Name, cin, cout)
	}
	fmt.Fprintf(tw, "total\t%s\t%s\t\n", sizing.Rate(r.In), sizing.Rate(r.Out))
	tw.Flush()
	fmt.Fprintf(w, "\ncluster network: %s in, %s out\n", sizing.Rate(r.ClusterIn), sizing.Rate(r.ClusterOut))
	fmt.Fprintf(w, "NIC headroom: %.0f%%", 100*r.Headroom)
	if r.Headroom < 0 {
		fmt.Fprint(w, " (over capacity)")
	}
	fmt.Fprintln(w)
	if explain {
		fmt.Fprintln(w, "\nformulas (decimal units, per machine):")
		for _, l := range r.Lines {
			fmt.Fprintf(w, "  %s = %s = %s\n", l.Name, l.Formula, sizing.Rate(l.BytesPerSecond))
		}
		fmt.Fprintln(w, "  in = Kafka in + shuffle in + state reads; out = shuffle out + window emit + state writes + checkpoint upload")
		fmt.Fprintln(w, "  NIC headroom = 1 − max(in, out) / NIC")
	}
}
