package mesos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// BinaryServer serves this executable over HTTP at /sluice, for agents to
// fetch when no --binary-uri is given.
type BinaryServer struct {
	URI string // http://host:port/sluice
	srv *http.Server
}

// ServeBinary listens on addr (host:port; port 0 picks one) and serves the
// running executable. advertise is the host agents reach it at ("": the
// listener's address, or this host's name when it listens on all).
func ServeBinary(addr, advertise string) (*BinaryServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("serving the sluice binary: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serving the sluice binary: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sluice", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeFile(w, r, exe)
	})
	b := &BinaryServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); advertise == "" && ip != nil && ip.IsUnspecified() {
		// Listening on every interface: the agents reach it by name.
		if advertise, err = os.Hostname(); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("serving the sluice binary: %w", err)
		}
	}
	if advertise != "" {
		host = advertise
	}
	b.URI = "http://" + net.JoinHostPort(host, port) + "/sluice"
	go func() {
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = ln.Close()
		}
	}()
	return b, nil
}

// Close stops serving.
func (b *BinaryServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return b.srv.Shutdown(ctx)
}
