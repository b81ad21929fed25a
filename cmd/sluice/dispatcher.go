package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
	"github.com/sluice-stream/sluice/framework/mesos"
)

// cmdDispatcher runs `sluice dispatcher`: the REST API that keeps jobs in
// its store and one framework master per job (docs/dispatcher.md).
func cmdDispatcher(args []string) int {
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	listen := fs.String("listen", env("SLUICE_LISTEN", "127.0.0.1:8090"), "the REST API's listen address")
	storeURI := fs.String("store", env("SLUICE_STORE", ""), "the job store (file:// or hdfs://): job specs, states, and each job's HA directory and checkpoints")
	rm := fs.String("resource-manager", env("SLUICE_RESOURCE_MANAGER", "local"), "where framework masters run: local (child processes of the dispatcher) or mesos (Mesos tasks of the dispatcher's own framework)")
	mesosMaster := fs.String("mesos-master", env("SLUICE_MESOS_MASTER", ""), "mesos: the Mesos master(s), http://host:5050 or a comma-separated list")
	role := fs.String("role", env("SLUICE_ROLE", "sluice-dispatcher"), "mesos: the role the masters' tasks take offers under (each job's TaskManagers run under the job's own role)")
	// SLUICE_PRINCIPAL and SLUICE_SECRET_FILE are the names the Marathon
	// app sets; the SLUICE_MESOS_… ones are the framework master's.
	principal := fs.String("principal", env("SLUICE_PRINCIPAL", env("SLUICE_MESOS_PRINCIPAL", "")), "mesos: the principal of the dispatcher's framework and of the masters' (HTTP basic authentication with --secret-file)")
	secretFile := fs.String("secret-file", env("SLUICE_SECRET_FILE", env("SLUICE_MESOS_SECRET_FILE", "")), "mesos: a file holding the principal's secret")
	masterSecretFile := fs.String("master-secret-file", env("SLUICE_MASTER_SECRET_FILE", ""), "mesos: where the masters read the principal's secret on their agents (default: the --secret-file path)")
	binaryURI := fs.String("binary-uri", env("SLUICE_BINARY_URI", ""), "mesos: where agents fetch the sluice binary for the masters and their TaskManagers (default: the dispatcher serves its own binary over HTTP)")
	binaryAddr := fs.String("binary-listen", env("SLUICE_BINARY_LISTEN", ""), "mesos: the address the dispatcher serves its binary on without --binary-uri (default: the --listen host, any port)")
	masterCPUs := fs.Float64("master-cpus", envFloat("SLUICE_MASTER_CPUS", 0.5), "mesos: CPUs of each framework master's task")
	masterMem := fs.Float64("master-mem", envFloat("SLUICE_MASTER_MEM", 512), "mesos: memory (MB) of each framework master's task")
	failover := fs.Duration("failover-timeout", envDuration("SLUICE_MESOS_FAILOVER_TIMEOUT", 7*24*time.Hour), "mesos: how long Mesos keeps the dispatcher's framework and its masters after the dispatcher is gone")
	masterArgs := fs.String("master-args", env("SLUICE_MASTER_ARGS", ""), "extra flags for every framework master, space-separated (e.g. \"--unreachable-timeout 30s\")")
	tokenFile := fs.String("token-file", env("SLUICE_TOKEN_FILE", ""), "a file holding the bearer token every API call but /healthz must carry (default: no authentication)")
	tlsCert := fs.String("tls-cert", env("SLUICE_TLS_CERT", ""), "serve HTTPS with this certificate (PEM; with --tls-key)")
	tlsKey := fs.String("tls-key", env("SLUICE_TLS_KEY", ""), "the certificate's private key (PEM)")
	workDir := fs.String("work-dir", env("SLUICE_WORK_DIR", ""), "local directory for the masters' spec copies, logs and local state (default: <temp>/sluice-dispatcher)")
	maxBody := fs.Int64("max-body", envInt64("SLUICE_MAX_BODY", 1<<20), "the largest request body accepted, in bytes (larger: 413)")
	logLevel := fs.String("log-level", env("SLUICE_LOG_LEVEL", "info"), "debug, info, warn or error (also the masters')")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "sluice dispatcher: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments %q", fs.Args())
	}
	if *storeURI == "" {
		return fail("give the job store with --store URI (file:///… or hdfs://…)")
	}
	if *rm != "local" && *rm != "mesos" {
		return fail("--resource-manager %q: want local or mesos", *rm)
	}
	if *rm == "mesos" && *mesosMaster == "" {
		return fail("--resource-manager mesos: give the Mesos master with --mesos-master URL")
	}
	if *secretFile != "" && *principal == "" {
		return fail("--secret-file needs --principal")
	}
	if *masterCPUs <= 0 || *masterMem <= 0 {
		return fail("--master-cpus and --master-mem must be positive")
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return fail("give --tls-cert and --tls-key together")
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return fail("%v", err)
	}
	var token string
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fail("--token-file: %v", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fail("--token-file %s is empty", *tokenFile)
		}
	}
	store, err := dispatcher.OpenStore(*storeURI)
	if err != nil {
		return fail("%v", err)
	}
	margs := append([]string{"--log-level", *logLevel}, strings.Fields(*masterArgs)...)
	var launcher dispatcher.Launcher = &dispatcher.Local{WorkDir: *workDir, Args: margs, Log: log}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *rm == "mesos" {
		if *masterSecretFile == "" {
			*masterSecretFile = *secretFile
		}
		ml, err := mesosLauncher(ctx, store, *mesosMaster, *role, *principal, *secretFile, *masterSecretFile, *binaryURI, *binaryAddr, *listen, *masterCPUs, *masterMem, *failover, margs, log)
		if err != nil {
			return fail("%v", err)
		}
		defer ml.Close() // no teardown: the masters keep running
		launcher = ml
	}
	d, err := dispatcher.New(dispatcher.Config{Store: store, Launcher: launcher, Token: token, MaxBody: *maxBody, Log: log})
	if err != nil {
		return fail("%v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail("--listen: %v", err)
	}
	if err := d.Start(ctx); err != nil {
		ln.Close()
		fmt.Fprintln(os.Stderr, "sluice dispatcher:", err)
		return 1
	}
	defer d.Close() // the masters keep running: the next dispatcher adopts them
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			ln.Close()
			return fail("TLS: %v", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	log.Info("dispatcher listening", "addr", scheme+"://"+ln.Addr().String(), "store", store.URI(), "auth", token != "")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "sluice dispatcher:", err)
			return 1
		}
	case <-ctx.Done():
		log.Info("dispatcher stopping; the jobs' masters keep running")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return 0
}

func envInt64(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil {
		return v
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil {
		return v
	}
	return def
}

// mesosLauncher builds and starts the Mesos launcher: the dispatcher's
// own framework, subscribed with the framework ID kept in the store.
func mesosLauncher(ctx context.Context, store *dispatcher.Store, master, role, principal, secretFile, masterSecretFile, binaryURI, binaryAddr, listen string,
	cpus, mem float64, failover time.Duration, args []string, log *slog.Logger) (*dispatcher.Mesos, error) {
	client, err := mesos.NewClient(master)
	if err != nil {
		return nil, fmt.Errorf("--mesos-master: %w", err)
	}
	if principal != "" && secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return nil, fmt.Errorf("--secret-file: %w", err)
		}
		client.Principal, client.Secret = principal, strings.TrimSpace(string(b))
	}
	var served *mesos.BinaryServer
	if binaryURI == "" {
		if binaryAddr == "" {
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return nil, fmt.Errorf("--listen: %w", err)
			}
			binaryAddr = net.JoinHostPort(host, "0")
		}
		if served, err = mesos.ServeBinary(binaryAddr, ""); err != nil {
			return nil, err
		}
		binaryURI = served.URI
		log.Info("serving the sluice binary to the Mesos agents", "uri", binaryURI)
	}
	l := &dispatcher.Mesos{Client: client, Store: store, Role: role, Principal: principal, SecretFile: masterSecretFile,
		FailoverTimeout: failover, BinaryURI: binaryURI, MasterCPUs: cpus, MasterMemMB: mem, Args: args, Log: log}
	if err := l.Start(ctx); err != nil {
		if served != nil {
			_ = served.Close()
		}
		return nil, err
	}
	return l, nil
}
