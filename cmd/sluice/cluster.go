package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/framework"
	"github.com/sluice-stream/sluice/taskmanager"
)

// clusterOpts are the flags of a job master: `sluice run --cluster N` and
// `sluice framework`.
type clusterOpts struct {
	framework    bool    // sluice framework: always a master
	job          *string // framework: --job
	rm           *string
	taskManagers *int
	slots        *int
	spares       *int
	listen       *string
	haDir        *string
	hbInterval   *time.Duration
	hbTimeout    *time.Duration
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func clusterFlags(fs *flag.FlagSet, framework bool) *clusterOpts {
	c := &clusterOpts{framework: framework}
	if framework {
		c.job = fs.String("job", env("SLUICE_JOB", ""), "the job spec file")
		c.rm = fs.String("resource-manager", env("SLUICE_RESOURCE_MANAGER", "local"), "where TaskManagers come from: local (child processes)")
		c.taskManagers = fs.Int("taskmanagers", envInt("SLUICE_TASKMANAGERS", 0), "TaskManagers to keep (default: enough slots for the job's highest parallelism)")
	} else {
		local := "local"
		c.rm = &local
		c.taskManagers = fs.Int("cluster", 0, "run the job on N TaskManager processes (`sluice taskmanager` children) with this process as their job master; 0: in this process")
	}
	c.slots = fs.Int("slots", envInt("SLUICE_SLOTS", 0), "slots per TaskManager (default: enough for the job over the TaskManagers)")
	c.spares = fs.Int("spare-taskmanagers", envInt("SLUICE_SPARE_TASKMANAGERS", -1), "idle TaskManagers kept registered to take a failed one's work at once (default: the spec's resources.spareTaskManagers)")
	c.listen = fs.String("control", env("SLUICE_CONTROL", "127.0.0.1:0"), "the job master's control address (gRPC) TaskManagers register with")
	c.haDir = fs.String("ha-dir", env("SLUICE_HA_DIR", ""), "the job's HA directory (file:// or hdfs://): the master's fencing epoch, address, job and latest checkpoint; a master restarted on it resumes the job with the TaskManagers still running")
	c.hbInterval = fs.Duration("heartbeat-interval", envDuration("SLUICE_HEARTBEAT_INTERVAL", 0), "heartbeat interval between master and TaskManagers (default: the spec's heartbeat.interval, 1s)")
	c.hbTimeout = fs.Duration("heartbeat-timeout", envDuration("SLUICE_HEARTBEAT_TIMEOUT", 0), "a TaskManager silent this long is lost (default: the spec's heartbeat.timeout, 4s)")
	return c
}

// on says whether the job runs on TaskManagers.
func (c *clusterOpts) on() bool { return c.framework || *c.taskManagers > 0 }

// master starts the job master and its resource manager.
// httpAddr is the REST API's address, published in the HA directory.
func (c *clusterOpts) master(j *spec.Job, g *runtime.Graph, localDir, logLevel, httpAddr string, log *slog.Logger) (*framework.Master, error) {
	if *c.rm != "local" {
		return nil, fmt.Errorf("--resource-manager %q: only local is built (mesos comes with the Mesos framework)", *c.rm)
	}
	res := spec.Resources{}
	if j.Resources != nil {
		res = *j.Resources
	}
	n := *c.taskManagers
	slots := *c.slots
	if slots <= 0 && res.Slots > 0 {
		slots = res.Slots
	}
	need := framework.Pipelines(runtime.Tasks(g))
	if n <= 0 {
		n = max(1, (need+max(slots, 1)-1)/max(slots, 1))
	}
	if slots <= 0 {
		slots = (need + n - 1) / n
	}
	spares := *c.spares
	if spares < 0 {
		spares = res.SpareTaskManagers
	}
	hbi, hbt := *c.hbInterval, *c.hbTimeout
	if hbi <= 0 {
		hbi = j.Heartbeat.Interval.D()
	}
	if hbt <= 0 {
		hbt = j.Heartbeat.Timeout.D()
	}
	rm := &framework.Local{Slots: slots, LocalDir: localDir, Args: []string{"--log-level", logLevel}, Log: log}
	var ha *framework.HA
	if *c.haDir != "" {
		var err error
		if ha, err = framework.OpenHA(*c.haDir); err != nil {
			return nil, err
		}
		rm.HADir = *c.haDir
	}
	return framework.New(framework.Config{Job: j, Graph: g, Listen: *c.listen, TaskManagers: n, Slots: slots, Spares: spares,
		HeartbeatInterval: hbi, HeartbeatTimeout: hbt, RM: rm, HA: ha, HTTP: httpAddr, Log: log})
}

func cmdFramework(args []string) int {
	fs := flag.NewFlagSet("framework", flag.ContinueOnError)
	return runJob(fs, args, clusterFlags(fs, true))
}

func cmdTaskManager(args []string) int {
	fs := flag.NewFlagSet("taskmanager", flag.ContinueOnError)
	master := fs.String("master", env("SLUICE_MASTER", ""), "the job master's control address (host:port)")
	haDir := fs.String("ha-dir", env("SLUICE_HA_DIR", ""), "find the job master in this HA directory instead (and the next one after a failover)")
	slots := fs.Int("slots", envInt("SLUICE_SLOTS", 1), "slots: how many subtasks of each chain this TaskManager runs")
	data := fs.String("data", env("SLUICE_DATA", "127.0.0.1:0"), "the data server's listen address")
	advertise := fs.String("advertise", env("SLUICE_ADVERTISE", ""), "the data address other TaskManagers dial (default: the listener's)")
	resourceID := fs.String("resource-id", env("SLUICE_RESOURCE_ID", ""), "this TaskManager's name for its resource manager (default pid-<pid>)")
	localDir := fs.String("local-dir", env("SLUICE_LOCAL_DIR", ""), "directory for local state and local recovery copies (default: its own under the system temp directory)")
	connect := fs.Duration("connect-timeout", envDuration("SLUICE_CONNECT_TIMEOUT", 30*time.Second), "exit when no master accepts a registration for this long")
	logLevel := fs.String("log-level", env("SLUICE_LOG_LEVEL", "info"), "debug, info, warn or error")
	metrics := fs.String("metrics", env("SLUICE_METRICS", ""), "serve Prometheus /metrics on this address, e.g. 127.0.0.1:9250 (default: off)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sluice taskmanager: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if (*master == "") == (*haDir == "") {
		fmt.Fprintln(os.Stderr, "sluice taskmanager: give the master with --master ADDR or --ha-dir URI (one of them)")
		return 2
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice taskmanager:", err)
		return 2
	}
	if *resourceID != "" {
		log = log.With("taskmanager", *resourceID)
	}
	cfg := taskmanager.Config{Master: *master, Slots: *slots, Data: *data, Advertise: *advertise,
		ResourceID: *resourceID, LocalDir: *localDir, ConnectTimeout: *connect, Metrics: *metrics, Log: log}
	if *haDir != "" {
		ha, err := framework.OpenHA(*haDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sluice taskmanager:", err)
			return 2
		}
		cfg.MasterAddress = func(ctx context.Context) (string, error) {
			info, err := ha.Leader(ctx)
			return info.Control, err
		}
	}
	tm, err := taskmanager.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice taskmanager:", err)
		return 2
	}
	// Its stdout and stderr are often its master's: a master that dies must
	// not take it down with a broken pipe (it waits for the next master).
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := tm.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "sluice taskmanager:", err)
		return 1
	}
	return 0
}
