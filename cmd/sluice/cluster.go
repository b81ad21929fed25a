package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/framework"
	"github.com/sluice-stream/sluice/framework/mesos"
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
	standby      *bool // framework --standby
	standbyTO    *time.Duration
	mesos        mesosOpts // framework --resource-manager mesos
}

// mesosOpts are the flags of `sluice framework --resource-manager mesos`.
type mesosOpts struct {
	master, role, principal, secretFile, binaryURI, user *string
	failover, unreachable, refuse                        *time.Duration
	constraints                                          listFlag
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ";") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
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
		c.job = fs.String("job", env("SLUICE_JOB", ""), "the job spec: a file, or a file:// or hdfs:// URI")
		c.rm = fs.String("resource-manager", env("SLUICE_RESOURCE_MANAGER", "local"), "where TaskManagers come from: local (child processes) or mesos (Mesos tasks from resource offers)")
		c.taskManagers = fs.Int("taskmanagers", envInt("SLUICE_TASKMANAGERS", 0), "TaskManagers to keep (default: enough slots for the job's highest parallelism)")
		c.standbyTO = fs.Duration("standby-timeout", envDuration("SLUICE_STANDBY_TIMEOUT", 10*time.Minute), "with --standby: give up (exit 1) when not started this long after every TaskManager registered (its upgrade was abandoned); 0: wait for ever")
		c.standby = fs.Bool("standby", false, "get and register the TaskManagers, serve the REST API, but deploy the job only on POST /v1/start {\"restore\": PATH} (the new version of an asynchronous upgrade); needs --http")
		m := &c.mesos
		m.master = fs.String("mesos-master", env("SLUICE_MESOS_MASTER", ""), "Mesos: the master(s), http://host:5050 or a comma-separated list (calls follow the leader's redirects)")
		m.role = fs.String("role", env("SLUICE_ROLE", ""), "Mesos: the role offers are taken with (default: the spec's role)")
		m.principal = fs.String("principal", env("SLUICE_MESOS_PRINCIPAL", ""), "Mesos: the framework's principal (HTTP basic authentication with --secret-file)")
		m.secretFile = fs.String("secret-file", env("SLUICE_MESOS_SECRET_FILE", ""), "Mesos: a file holding the principal's secret")
		m.binaryURI = fs.String("binary-uri", env("SLUICE_BINARY_URI", ""), "Mesos: where agents fetch the sluice binary (http://, https://, file://, hdfs://; default: this master serves its own binary over HTTP on the --control host)")
		m.user = fs.String("mesos-user", env("SLUICE_MESOS_USER", ""), "Mesos: the user TaskManager tasks run as (default: the current user)")
		m.failover = fs.Duration("failover-timeout", envDuration("SLUICE_MESOS_FAILOVER_TIMEOUT", 7*24*time.Hour), "Mesos: how long Mesos keeps the framework and its tasks after this master is gone")
		m.unreachable = fs.Duration("unreachable-timeout", envDuration("SLUICE_MESOS_UNREACHABLE_TIMEOUT", 2*time.Minute), "Mesos: how long a TaskManager on an unreachable agent is waited for before it is replaced")
		m.refuse = fs.Duration("refuse-seconds", envDuration("SLUICE_MESOS_REFUSE_SECONDS", 30*time.Second), "Mesos: the decline filter: an agent whose offer was declined is not offered again for this long (a REVIVE clears it)")
		if v := os.Getenv("SLUICE_MESOS_CONSTRAINTS"); v != "" {
			for _, c := range strings.Split(v, ";") {
				if c = strings.TrimSpace(c); c != "" {
					m.constraints = append(m.constraints, c)
				}
			}
		}
		fs.Var(&m.constraints, "constraint", "Mesos: a placement constraint FIELD:OPERATOR[:VALUE] (repeatable; with the spec's): hostname:UNIQUE, rack:LIKE:r[12], rack:UNLIKE:r3, hostname:MAX_PER:2, rack:IS:r1, rack:CLUSTER[:r1], rack:GROUP_BY[:N] (env: ';'-separated)")
	} else {
		local := "local"
		no, never := false, time.Duration(0)
		c.rm, c.standby, c.standbyTO = &local, &no, &never
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
	if *c.rm != "local" && *c.rm != "mesos" {
		return nil, fmt.Errorf("--resource-manager %q: want local or mesos", *c.rm)
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
	var ha *framework.HA
	if *c.haDir != "" {
		var err error
		if ha, err = framework.OpenHA(*c.haDir); err != nil {
			return nil, err
		}
	}
	var rm framework.ResourceManager
	var mrm *mesos.ResourceManager
	if *c.rm == "mesos" {
		var err error
		if mrm, err = c.mesosRM(j, res, slots, logLevel, log); err != nil {
			return nil, err
		}
		rm = mrm
	} else {
		rm = &framework.Local{Slots: slots, LocalDir: localDir, HADir: *c.haDir, Args: []string{"--log-level", logLevel}, Log: log}
	}
	m, err := framework.New(framework.Config{Job: j, Graph: g, Listen: *c.listen, TaskManagers: n, Slots: slots, Spares: spares,
		HeartbeatInterval: hbi, HeartbeatTimeout: hbt, RM: rm, HA: ha, HTTP: httpAddr, Standby: *c.standby, StandbyTimeout: *c.standbyTO, Log: log})
	if err == nil && mrm != nil {
		mrm.SetSuperseded(m.Superseded)
	}
	return m, err
}

// mesosRM builds the Mesos resource manager from the flags and the spec
// (role, constraints, resources per TaskManager).
func (c *clusterOpts) mesosRM(j *spec.Job, res spec.Resources, slots int, logLevel string, log *slog.Logger) (*mesos.ResourceManager, error) {
	m := &c.mesos
	if *m.master == "" {
		return nil, fmt.Errorf("--resource-manager mesos: give the Mesos master with --mesos-master URL")
	}
	client, err := mesos.NewClient(*m.master)
	if err != nil {
		return nil, fmt.Errorf("--mesos-master: %w", err)
	}
	if *m.principal != "" && *m.secretFile != "" {
		b, err := os.ReadFile(*m.secretFile)
		if err != nil {
			return nil, fmt.Errorf("--secret-file: %w", err)
		}
		client.Principal, client.Secret = *m.principal, strings.TrimSpace(string(b))
	} else if *m.secretFile != "" {
		return nil, fmt.Errorf("--secret-file needs --principal")
	}
	role := *m.role
	if role == "" {
		role = j.Role
	}
	if role == "" {
		return nil, fmt.Errorf("--resource-manager mesos: give the role with --role (or the spec's role)")
	}
	var cons []mesos.Constraint
	for _, sc := range j.Constraints {
		con, err := mesos.ParseConstraint(strings.Join(sc, ":"))
		if err != nil {
			return nil, fmt.Errorf("the spec's constraints: %w", err)
		}
		cons = append(cons, con)
	}
	for _, s := range m.constraints {
		con, err := mesos.ParseConstraint(s)
		if err != nil {
			return nil, fmt.Errorf("--constraint: %w", err)
		}
		cons = append(cons, con)
	}
	prof := mesos.Profile{CPUs: res.CPUs, MemMB: res.MemMB, DiskMB: res.DiskMB, Ports: 1}
	if prof.CPUs <= 0 {
		prof.CPUs = 1
	}
	if prof.MemMB <= 0 {
		prof.MemMB = 1024
	}
	uri := *m.binaryURI
	if uri == "" {
		// Served on the control address's host: the agents reach the
		// master's control port there too.
		host, _, err := net.SplitHostPort(*c.listen)
		if err != nil {
			return nil, fmt.Errorf("--control: %w", err)
		}
		b, err := mesos.ServeBinary(net.JoinHostPort(host, "0"), "")
		if err != nil {
			return nil, err
		}
		uri = b.URI
		log.Info("serving the sluice binary to the Mesos agents", "uri", uri)
	}
	cfg := mesos.Config{Client: client, Role: role, Name: "sluice " + j.Name, User: *m.user, Principal: *m.principal,
		FailoverTimeout: *m.failover, UnreachableTimeout: *m.unreachable, RefuseSeconds: *m.refuse,
		Profile: prof, Constraints: cons, Slots: slots, BinaryURI: uri, HADir: *c.haDir,
		Args: []string{"--log-level", logLevel}, Log: log,
		OnStatus: func(s string) { log.Info("Mesos: " + s) }}
	if *c.haDir != "" {
		if cfg.IDs, err = mesos.OpenHAStore(*c.haDir); err != nil {
			return nil, err
		}
	}
	return mesos.New(cfg)
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
