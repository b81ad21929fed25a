// Command bench is the engine's benchmark harness (`make bench`): it runs
// each scenario through the engine (plan + runtime, in-process) and beside
// it a hand-written single-goroutine Go loop computing the same result over
// the same rows (the COST baseline), in the same run, and prints a Markdown
// table for docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/engine/plan"
	rt "github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

var (
	only  = flag.String("only", "", "comma-separated scenarios to run (a,b,c,pause,restore,incremental,bigstate,kafka,cluster,recovery,mesos,dispatcher,nexmark); empty = all")
	reps  = flag.Int("reps", 3, "repetitions per measurement; the best is reported")
	scale = flag.Float64("scale", 1, "multiply row counts (e.g. 0.1 for a quick run)")
	prof  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	mprof = flag.String("memprofile", "", "write a heap profile to this file (incremental: once the state is loaded)")
)

// measurement is one timed run.
type measurement struct {
	rows int64
	wall time.Duration
	cpu  time.Duration
}

func (m measurement) perSec() float64    { return float64(m.rows) / m.wall.Seconds() }
func (m measurement) perCPUSec() float64 { return float64(m.rows) / m.cpu.Seconds() }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func timeIt(rows int64, f func()) measurement {
	runtime.GC()
	c0, t0 := cpuTime(), time.Now()
	f()
	return measurement{rows: rows, wall: time.Since(t0), cpu: cpuTime() - c0}
}

func best(n int, f func() measurement) measurement {
	var b measurement
	for i := 0; i < n; i++ {
		m := f()
		if i == 0 || m.wall < b.wall {
			b = m
		}
	}
	return b
}

// graphHook, if set, may change a planned graph before it runs (the pause
// scenario wraps its window operator to time every batch).
var graphHook func(*rt.Graph)

// runJob plans and runs a spec in-process; it returns the runtime's result.
func runJob(specJSON string, sets ...string) (*rt.Result, error) {
	dir, err := os.MkdirTemp("", "sluice-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sets = append(sets, "checkpoint.storage=file://"+dir)
	j, err := spec.Parse([]byte(specJSON), sets)
	if err != nil {
		return nil, err
	}
	g, err := plan.Build(j)
	if err != nil {
		return nil, err
	}
	if graphHook != nil {
		graphHook(g)
	}
	opts, err := plan.Options(j)
	if err != nil {
		return nil, err
	}
	opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return rt.Run(context.Background(), g, opts)
}

func mustRun(specJSON string, sets ...string) *rt.Result {
	res, err := runJob(specJSON, sets...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	return res
}

type tableRow struct{ cells []string }

var table []tableRow

func add(cells ...string) { table = append(table, tableRow{cells}) }

func mrps(v float64) string { return fmt.Sprintf("%.1f M", v/1e6) }

func main() {
	flag.Parse()
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	want := func(s string) bool { return *only == "" || strings.Contains(","+*only+",", ","+s+",") }
	fmt.Fprintf(os.Stderr, "bench: GOMAXPROCS=%d, %s\n", runtime.GOMAXPROCS(0), runtime.Version())
	if want("a") {
		scenarioA()
	}
	if want("b") {
		scenarioB()
	}
	if want("c") {
		scenarioC()
	}
	if want("pause") {
		scenarioPause()
	}
	if want("restore") {
		scenarioRestore()
	}
	if want("incremental") {
		scenarioIncremental()
	}
	if want("bigstate") {
		scenarioBigstate()
	}
	if want("kafka") {
		scenarioKafka()
	}
	if want("cluster") {
		scenarioCluster()
	}
	if want("recovery") {
		scenarioRecovery()
	}
	if want("mesos") {
		scenarioMesos()
	}
	if want("dispatcher") {
		scenarioDispatcher()
	}
	if want("nexmark") {
		scenarioNexmark()
	}
	fmt.Println("| scenario | what | rows | wall | rows/s | rows per CPU-second | vs loop (time) |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range table {
		fmt.Println("| " + strings.Join(r.cells, " | ") + " |")
	}
	_ = sort.Strings
	_ = debug.SetGCPercent
}
