package hdfstest

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Option configures a Cluster.
type Option func(*config)

type config struct {
	blockSize int64
	listLimit int
	logf      func(format string, args ...any)
}

// BlockSize sets the block size the namenode announces in its server
// defaults (dfs.blocksize), which colinmarc/hdfs uses for new files; it must
// be a positive multiple of 512. The default is 1 MiB so that tests write
// multi-block files cheaply.
func BlockSize(n int64) Option { return func(c *config) { c.blockSize = n } }

// ListLimit sets how many entries one getListing call returns
// (dfs.ls.limit, 1000 by default); a small limit exercises paging.
func ListLimit(n int) Option { return func(c *config) { c.listLimit = n } }

// Logf sets where the cluster logs protocol errors of its connections
// (for example t.Logf); by default they are dropped.
func Logf(f func(format string, args ...any)) Option { return func(c *config) { c.logf = f } }

// Cluster is a namenode and one datanode on loopback ports, with their
// state under a directory.
type Cluster struct {
	dir       string
	cfg       config
	poolID    string
	storageID string
	dnUUID    string

	mu      sync.Mutex
	running bool
	nnAddr  string
	dnAddr  string
	lns     []net.Listener
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	nn      *namenode
	dn      *datanode
	pending map[*time.Timer]func() // block deletions to come
}

// blockDeleteDelay is how long the replicas of deleted blocks remain.
const blockDeleteDelay = time.Second

func (c *Cluster) deleteLater(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		c.pending = map[*time.Timer]func(){}
	}
	var t *time.Timer
	t = time.AfterFunc(blockDeleteDelay, func() {
		c.mu.Lock()
		_, ok := c.pending[t]
		delete(c.pending, t)
		c.mu.Unlock()
		if ok {
			f()
		}
	})
	c.pending[t] = f
}

// flushDeletes runs the pending block deletions now.
func (c *Cluster) flushDeletes() {
	c.mu.Lock()
	var fs []func()
	for t, f := range c.pending {
		if t.Stop() {
			fs = append(fs, f)
		}
		delete(c.pending, t)
	}
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// Start starts a namenode and a datanode whose namespace and blocks persist
// under dir (created if missing; an existing state there is loaded).
func Start(dir string, opts ...Option) (*Cluster, error) {
	c := &Cluster{
		dir:       dir,
		cfg:       config{blockSize: 1 << 20, listLimit: 1000},
		poolID:    "BP-1-127.0.0.1-hdfstest",
		storageID: "DS-hdfstest-1",
		dnUUID:    "hdfstest-datanode-1",
		nnAddr:    "127.0.0.1:0",
		dnAddr:    "127.0.0.1:0",
	}
	for _, o := range opts {
		o(&c.cfg)
	}
	if c.cfg.blockSize <= 0 || c.cfg.blockSize%bytesPerChecksum != 0 {
		return nil, fmt.Errorf("hdfstest: block size %d is not a positive multiple of %d", c.cfg.blockSize, bytesPerChecksum)
	}
	if c.cfg.listLimit <= 0 {
		return nil, fmt.Errorf("hdfstest: list limit %d", c.cfg.listLimit)
	}
	for _, d := range []string{"finalized", "rbw"} {
		if err := os.MkdirAll(filepath.Join(dir, "data", d), 0o755); err != nil {
			return nil, fmt.Errorf("hdfstest: %w", err)
		}
	}
	if err := c.start(); err != nil {
		return nil, err
	}
	return c, nil
}

// Addr returns the namenode's address, host:port on loopback. It does not
// change across Restart.
func (c *Cluster) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nnAddr
}

// Stop stops the namenode and the datanode and closes their connections:
// clients then get connection errors. The state stays under the directory.
// Stop is idempotent.
func (c *Cluster) Stop() {
	c.mu.Lock()
	if !c.running {
		c.mu.Unlock()
		return
	}
	c.running = false
	for _, ln := range c.lns {
		ln.Close()
	}
	for conn := range c.conns {
		conn.Close()
	}
	c.lns = nil
	c.mu.Unlock()
	c.wg.Wait()
	c.flushDeletes()
}

// Restart stops the cluster if it runs, then starts it again on the same
// ports, reloading its state from the directory.
func (c *Cluster) Restart() error {
	c.Stop()
	return c.start()
}

func (c *Cluster) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return errors.New("hdfstest: cluster is running")
	}
	ns, err := loadNamespace(filepath.Join(c.dir, "namespace.json"))
	if err != nil {
		return err
	}
	// Drop replicas left half-written by a stop in mid-write, as a
	// datanode restart would not finalize them either.
	rbw, _ := filepath.Glob(filepath.Join(c.dir, "data", "rbw", "blk_*"))
	for _, f := range rbw {
		os.Remove(f)
	}
	c.nn = &namenode{c: c, file: filepath.Join(c.dir, "namespace.json"), ns: ns}
	c.dn = &datanode{c: c, dir: filepath.Join(c.dir, "data")}

	nnLn, err := listen(c.nnAddr)
	if err != nil {
		return fmt.Errorf("hdfstest: namenode: %w", err)
	}
	dnLn, err := listen(c.dnAddr)
	if err != nil {
		nnLn.Close()
		return fmt.Errorf("hdfstest: datanode: %w", err)
	}
	c.nnAddr, c.dnAddr = nnLn.Addr().String(), dnLn.Addr().String()
	c.lns = []net.Listener{nnLn, dnLn}
	c.conns = map[net.Conn]struct{}{}
	c.running = true
	nn, dn := c.nn, c.dn
	c.wg.Add(2)
	go c.accept(nnLn, func(conn net.Conn) { c.serveRPC(conn, nn) })
	go c.accept(dnLn, func(conn net.Conn) { c.serveXceiver(conn, dn) })
	return nil
}

// listen listens on addr, retrying briefly while a just-closed listener
// still holds the port.
func listen(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) accept(ln net.Listener, serve func(net.Conn)) {
	defer c.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if !c.running {
			c.mu.Unlock()
			conn.Close()
			return
		}
		c.conns[conn] = struct{}{}
		c.wg.Add(1)
		c.mu.Unlock()
		go func() {
			defer c.wg.Done()
			defer func() {
				conn.Close()
				c.mu.Lock()
				delete(c.conns, conn)
				c.mu.Unlock()
			}()
			serve(conn)
		}()
	}
}

func (c *Cluster) logf(format string, args ...any) {
	for _, a := range args {
		// A reader that stops early resets the connection: not an error.
		if err, ok := a.(error); ok && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
			return
		}
	}
	if c.cfg.logf != nil {
		c.cfg.logf(format, args...)
	} else if os.Getenv("HDFSTEST_DEBUG") != "" {
		log.Printf("hdfstest: "+format, args...)
	}
}

// datanodeInfo is the DatanodeInfoProto of the one datanode.
func (c *Cluster) datanodeInfo(used uint64) msg {
	c.mu.Lock()
	addr := c.dnAddr
	c.mu.Unlock()
	host, port, _ := net.SplitHostPort(addr)
	var p uint64
	fmt.Sscan(port, &p)
	id := msg(nil).str(1, host).str(2, "localhost").str(3, c.dnUUID).uint(4, p).uint(5, 0).uint(6, 0)
	return msg(nil).msg(1, id).uint(2, capacity).uint(3, used).uint(4, capacity-used).uint(5, used).
		uint(6, uint64(time.Now().UnixMilli())).uint(7, 1).str(8, "/default-rack").uint(10, 0)
}

// blockUnderConstruction reports whether the namenode allocated block id to
// a file being written.
func (c *Cluster) blockUnderConstruction(id uint64) bool {
	c.mu.Lock()
	nn := c.nn
	c.mu.Unlock()
	nn.mu.Lock()
	defer nn.mu.Unlock()
	f := nn.ns.fileOfBlock(id)
	return f != nil && f.Holder != ""
}
