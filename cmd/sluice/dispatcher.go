package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
)

// cmdDispatcher runs `sluice dispatcher`: the REST API that keeps jobs in
// its store and one framework master per job (docs/dispatcher.md).
func cmdDispatcher(args []string) int {
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	listen := fs.String("listen", env("SLUICE_LISTEN", "127.0.0.1:8090"), "the REST API's listen address")
	storeURI := fs.String("store", env("SLUICE_STORE", ""), "the job store (file:// or hdfs://): job specs, states, and each job's HA directory and checkpoints")
	rm := fs.String("resource-manager", env("SLUICE_RESOURCE_MANAGER", "local"), "where framework masters run: local (child processes of the dispatcher)")
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
	if *rm != "local" {
		return fail("--resource-manager %q: only local is built so far (mesos comes with the Mesos framework)", *rm)
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
	launcher := &dispatcher.Local{WorkDir: *workDir, Args: []string{"--log-level", *logLevel}, Log: log}
	d, err := dispatcher.New(dispatcher.Config{Store: store, Launcher: launcher, Token: token, MaxBody: *maxBody, Log: log})
	if err != nil {
		return fail("%v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail("--listen: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
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
