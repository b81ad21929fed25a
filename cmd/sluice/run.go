package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	sfs "github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/framework"
)

// setFlags collects repeated --set KEY=VALUE flags.
type setFlags []string

func (s *setFlags) String() string { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*s = append(*s, v)
	return nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func loadJob(fs *flag.FlagSet, sets []string) (*spec.Job, error) {
	if fs.NArg() != 1 {
		return nil, fmt.Errorf("want exactly one job file, got %d arguments", fs.NArg())
	}
	return spec.ParseFile(fs.Arg(0), sets)
}

// loadJobURI reads a job spec from a file:// or hdfs:// URI (a master the
// dispatcher runs as a Mesos task reads the spec from the job store).
func loadJobURI(uri string, sets []string) (*spec.Job, error) {
	f, p, err := sfs.Open(uri)
	if err != nil {
		return nil, fmt.Errorf("--job %s: %w", uri, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data, err := f.ReadFile(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("--job %s: %w", uri, err)
	}
	j, err := spec.Parse(data, sets)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", uri, err)
	}
	return j, nil
}

func cmdValidate(args []string) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	var sets setFlags
	fs.Var(&sets, "set", "override a spec value by dotted path, KEY=VALUE (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	j, err := loadJob(fs, sets)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice validate: %v\n", err)
		return 1
	}
	g, err := plan.Build(j)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice validate: %s: %v\n", fs.Arg(0), err)
		return 1
	}
	fmt.Printf("job %q is valid: %d nodes\n", j.Name, len(g.Nodes))
	for _, n := range g.Nodes {
		schema := "(sink)"
		if n.Schema != nil {
			schema = n.Schema.String()
		}
		fmt.Printf("  %-12s %-10s parallelism %-3d %s\n", n.ID, n.Type, n.Parallelism, schema)
	}
	return 0
}

func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cl := clusterFlags(fs, false)
	return runJob(fs, args, cl)
}

// runJob runs a job: in this process, or (cl.taskManagers > 0) as a job
// master with TaskManager processes. `sluice run` and `sluice framework`
// share it.
func runJob(fs *flag.FlagSet, args []string, cl *clusterOpts) int {
	var sets setFlags
	fs.Var(&sets, "set", "override a spec value by dotted path, KEY=VALUE (repeatable), like Flink's -D")
	restore := fs.String("restore", env("SLUICE_RESTORE", ""), `restore from "latest" (newest complete checkpoint) or a checkpoint/savepoint path`)
	spOnStop := fs.Bool("savepoint-on-stop", false, "on SIGTERM, write a final savepoint and stop")
	localDir := fs.String("local-dir", env("SLUICE_LOCAL_DIR", ""), "directory for local state (badger) and local recovery copies (default: the system temp directory)")
	logLevel := fs.String("log-level", env("SLUICE_LOG_LEVEL", "info"), "debug, info, warn or error")
	allowDup := fs.Bool("allow-fallback-duplicates", false, "when the latest checkpoint is corrupt, fall back to an older one even if a sink (Kafka exactly-once) cannot show it committed nothing after it: that output is written again")
	acceptLost := fs.Bool("accept-lost-transactions", false, "when a sink's pre-committed output was lost (a Kafka transaction aborted by the broker) and no older checkpoint is retained to replay it, restore anyway and count the loss")
	httpAddr := fs.String("http", env("SLUICE_HTTP", ""), "serve the job's REST API (status, vertices, checkpoints, taskmanagers, skip-backlog, savepoint, cancel) and Prometheus /metrics on this address, e.g. 127.0.0.1:8081")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cl.framework {
		if *cl.job == "" || fs.NArg() > 0 {
			fmt.Fprintln(os.Stderr, "sluice framework: give the job spec with --job FILE or URI (file://, hdfs://; and no arguments)")
			return 2
		}
		_ = fs.Parse([]string{*cl.job}) // the job file as the one argument
		if *cl.standby && *httpAddr == "" {
			fmt.Fprintln(os.Stderr, "sluice framework: --standby needs --http ADDR (the job starts on POST /v1/start)")
			return 2
		}
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: %v\n", fs.Name(), err)
		return 2
	}
	var j *spec.Job
	if cl.framework && strings.Contains(*cl.job, "://") {
		j, err = loadJobURI(*cl.job, sets)
	} else {
		j, err = loadJob(fs, sets)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: %v\n", fs.Name(), err)
		return 1
	}
	g, opts, err := plan.Prepare(j)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: %s: %v\n", fs.Name(), fs.Arg(0), err)
		return 1
	}
	opts.Restore = *restore
	opts.LocalStateDir = *localDir
	opts.AllowFallbackDuplicates = *allowDup
	opts.AcceptLostTransactions = *acceptLost
	opts.Log = log
	opts.Storage.Log = log
	savepoints := make(chan runtime.SavepointRequest)
	opts.Savepoints = savepoints

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range sigs {
			stop := sig != syscall.SIGUSR1
			if stop && !*spOnStop {
				log.Info("stopping without a savepoint", "signal", sig)
				cancel()
				return
			}
			reply := make(chan runtime.SavepointResult, 1)
			select {
			case savepoints <- runtime.SavepointRequest{Stop: stop, Reply: reply}:
			case <-ctx.Done():
				return
			}
			go func() {
				r := <-reply
				switch {
				case r.Err != nil && stop:
					// As in Flink, the job goes on: the signal can be sent again.
					log.Error("stop-with-savepoint failed; the job keeps running (send the signal again to retry)", "signal", sig, "err", r.Err)
				case r.Err != nil:
					log.Error("savepoint failed", "err", r.Err)
				default:
					fmt.Fprintf(os.Stderr, "savepoint: %s\n", r.Path)
				}
			}()
		}
	}()

	start := time.Now()
	run := func(ctx context.Context) (*runtime.Result, error) { return runtime.Run(ctx, g, opts) }
	var apiLn net.Listener
	if *httpAddr != "" {
		if apiLn, err = listenAPI(*httpAddr); err != nil {
			fmt.Fprintf(os.Stderr, "sluice %s: %v\n", fs.Name(), err)
			return 2
		}
		defer apiLn.Close()
	}
	var m *framework.Master
	if cl.on() {
		var httpAt string
		if apiLn != nil {
			httpAt = apiLn.Addr().String()
		}
		m, err = cl.master(j, g, *localDir, *logLevel, httpAt, log)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice %s: %v\n", fs.Name(), err)
			return 2
		}
		defer m.Close()
		run = func(ctx context.Context) (*runtime.Result, error) { return m.Run(ctx, opts) }
	}
	if *httpAddr != "" {
		// The counters /metrics reads: the master's sums for a cluster,
		// else the run's own (the tasks count into them).
		nodes := map[string]*runtime.NodeMetrics{}
		if m != nil {
			nodes = m.NodeMetrics()
		} else {
			for _, n := range g.Nodes {
				nodes[n.ID] = &runtime.NodeMetrics{}
			}
			opts.Metrics = nodes
		}
		progress := runtime.NewProgress() // a cluster's master has its own (Run uses it)
		if m != nil {
			progress = m.Progress()
		}
		opts.Progress = progress
		obs := newJobObserver(g, nodes, m)
		obs.setSpec(j)
		opts.OnCheckpoint, opts.OnRestart = obs.checkpoint, obs.restart
		cmds := make(chan runtime.Command)
		opts.Commands = cmds
		apiCtx, apiCancel := context.WithCancel(ctx)
		stopAPI := serveAPI(apiCtx, apiLn, &jobAPI{cmds: cmds, savepoints: savepoints, obs: obs, cancel: cancel, log: log, progress: progress})
		// Requests end with the job (apiCancel), then the server stops.
		defer stopAPI()
		defer apiCancel()
	}

	res, err := run(ctx)
	if m != nil && !errors.Is(err, framework.ErrSuperseded) {
		// For a dispatcher that adopted this master: its exit code.
		switch {
		case errors.Is(err, context.Canceled):
			m.RecordEnd(130, "cancelled")
		case err != nil:
			m.RecordEnd(1, err.Error())
		default:
			m.RecordEnd(0, "finished")
		}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(os.Stderr, "sluice %s: cancelled\n", fs.Name())
			return 130
		}
		fmt.Fprintf(os.Stderr, "sluice %s: job %q failed: %v\n", fs.Name(), j.Name, err)
		return 1
	}
	state := "finished"
	if res.Stopped {
		state = "stopped with a savepoint"
		time.Sleep(50 * time.Millisecond) // let the savepoint path print first
	}
	attrs := []any{"job", j.Name, "took", time.Since(start).Round(time.Millisecond), "checkpoints", res.Checkpoints, "failedCheckpoints", res.FailedCheckpoints, "restarts", res.Restarts}
	if l, r := res.Restored.LocalBytes.Load(), res.Restored.RemoteBytes.Load(); l+r > 0 {
		attrs = append(attrs, "restoredLocalBytes", l, "restoredRemoteBytes", r)
	}
	if p := res.Pauses; p.N > 0 {
		attrs = append(attrs, "checkpointPause", fmt.Sprintf("p50=%v p99=%v max=%v", p.P50, p.P99, p.Max))
	}
	for _, n := range g.Nodes {
		m := res.Metrics[n.ID]
		nm := fmt.Sprintf("in=%d out=%d", m.RowsIn.Load(), m.RowsOut.Load())
		if r := m.OffsetResets.Load(); r > 0 {
			nm += fmt.Sprintf(" offsetResets=%d", r)
		}
		attrs = append(attrs, n.ID, nm)
	}
	log.Info(state, attrs...)
	return 0
}
