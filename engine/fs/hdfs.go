package fs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/user"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/colinmarc/hdfs/v2"
	"github.com/colinmarc/hdfs/v2/hadoopconf"
	krb "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/credentials"
)

func init() { Register("hdfs", openHDFS) }

// HDFS is the FS of an HDFS cluster (hdfs://namenode:port/path, or
// hdfs://nameservice/path with the nameservice's namenodes taken from
// HADOOP_CONF_DIR), through github.com/colinmarc/hdfs/v2.
//
// The client acts as HADOOP_USER_NAME, or the current user; when
// core-site.xml sets hadoop.security.authentication to kerberos, it
// authenticates with the Kerberos credentials cache (KRB5CCNAME, KRB5_CONFIG).
//
// A client whose connection broke (a namenode restart, a network error) is
// discarded and replaced on the next call; idempotent operations retry once
// on a fresh connection when a reused one turns out to be broken. Cancelling
// the context of a call closes the client's connections.
type HDFS struct {
	authority string
	options   hdfs.ClientOptions
	kerberos  bool

	mu  sync.Mutex
	gen *hdfsClient
}

var _ FS = (*HDFS)(nil)

// hdfsClient is one client and the connections it dialled, so that they
// can be closed from outside when a call is cancelled.
type hdfsClient struct {
	cl *hdfs.Client
	// broken is set when a namenode connection failed: the client is then
	// replaced. Datanode failures do not break it.
	broken    atomic.Bool
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	closed    bool
	closeOnce sync.Once
}

var (
	hdfsMu    sync.Mutex
	hdfsCache = map[string]*HDFS{} // by authority, user and addresses
)

const hdfsDefaultPort = "8020"

func openHDFS(u *url.URL) (FS, string, error) {
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, "", fmt.Errorf("hdfs URI %q: want hdfs://namenode:port/path without user, query or fragment", u.Redacted())
	}
	p := path.Clean("/" + u.Path)
	conf, err := hadoopconf.LoadFromEnvironment()
	if err != nil {
		return nil, "", fmt.Errorf("hdfs: loading the Hadoop configuration: %w", err)
	}
	authority := u.Host
	if authority == "" {
		if d, err := url.Parse(conf["fs.defaultFS"]); err == nil && d.Scheme == "hdfs" {
			authority = d.Host
		}
		if authority == "" {
			return nil, "", fmt.Errorf("hdfs URI %q names no namenode, and no hdfs:// fs.defaultFS is configured (HADOOP_CONF_DIR)", u)
		}
	}
	addrs := namenodeAddresses(conf, authority)
	options := hdfs.ClientOptionsFromConf(conf)
	options.Addresses = addrs
	h := &HDFS{authority: authority, options: options, kerberos: options.KerberosClient != nil}
	if !h.kerberos {
		h.options.User = os.Getenv("HADOOP_USER_NAME")
		if h.options.User == "" {
			cu, err := user.Current()
			if err != nil {
				return nil, "", fmt.Errorf("hdfs: no HADOOP_USER_NAME and no current user: %w", err)
			}
			h.options.User = cu.Username
		}
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	h.options.NamenodeDialFunc = dialer.DialContext
	h.options.DatanodeDialFunc = dialer.DialContext

	key := strings.Join([]string{authority, h.options.User, strings.Join(addrs, ","), fmt.Sprint(h.kerberos)}, "|")
	hdfsMu.Lock()
	defer hdfsMu.Unlock()
	if cached := hdfsCache[key]; cached != nil {
		return cached, p, nil
	}
	hdfsCache[key] = h
	return h, p, nil
}

// namenodeAddresses resolves a URI authority: a nameservice of the Hadoop
// configuration (dfs.ha.namenodes.NS and dfs.namenode.rpc-address.NS.NN, or
// dfs.namenode.rpc-address.NS), else host:port with port 8020 by default.
func namenodeAddresses(conf hadoopconf.HadoopConf, authority string) []string {
	if nns := conf["dfs.ha.namenodes."+authority]; nns != "" {
		var addrs []string
		for _, nn := range strings.Split(nns, ",") {
			if a := conf["dfs.namenode.rpc-address."+authority+"."+strings.TrimSpace(nn)]; a != "" {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) > 0 {
			return addrs
		}
	}
	if a := conf["dfs.namenode.rpc-address."+authority]; a != "" {
		return []string{a}
	}
	if _, _, err := net.SplitHostPort(authority); err != nil {
		authority = net.JoinHostPort(strings.Trim(authority, "[]"), hdfsDefaultPort)
	}
	return []string{authority}
}

// URI returns hdfs://authority/p.
func (h *HDFS) URI(p string) string { return "hdfs://" + h.authority + path.Clean("/"+p) }

// Close closes the current client. The HDFS remains usable: the next call
// connects again.
func (h *HDFS) Close() error {
	h.mu.Lock()
	g := h.gen
	h.gen = nil
	h.mu.Unlock()
	if g != nil {
		g.close()
	}
	return nil
}

func (g *hdfsClient) dial(namenode bool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.closed {
			conn.Close()
			return nil, net.ErrClosed
		}
		g.conns[conn] = struct{}{}
		return &trackedConn{Conn: conn, g: g, namenode: namenode}, nil
	}
}

type trackedConn struct {
	net.Conn
	g        *hdfsClient
	namenode bool
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && c.namenode {
		c.g.broken.Store(true)
	}
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil && c.namenode {
		c.g.broken.Store(true)
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c.Conn)
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// closeConns closes the client's connections, which fails its calls in
// progress, and keeps it from dialling more.
func (g *hdfsClient) closeConns() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for conn := range g.conns {
		conn.Close()
	}
	g.conns = nil
}

// close closes the connections, then the client.
func (g *hdfsClient) close() {
	g.closeConns()
	g.closeOnce.Do(func() {
		if g.cl != nil {
			// Close waits for calls in progress, which fail now.
			go g.cl.Close()
		}
	})
}

// hdfsConnectTimeout bounds connecting a client: dialling, the handshake and
// the first call.
const hdfsConnectTimeout = 20 * time.Second

// client returns the current client, connecting a new one if needed;
// fresh reports a new one.
func (h *HDFS) client(ctx context.Context) (g *hdfsClient, fresh bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen != nil {
		return h.gen, false, nil
	}
	g = &hdfsClient{conns: map[net.Conn]struct{}{}}
	options := h.options
	options.NamenodeDialFunc = g.dial(true, h.options.NamenodeDialFunc)
	options.DatanodeDialFunc = g.dial(false, h.options.DatanodeDialFunc)
	if h.kerberos {
		if options.KerberosClient, err = kerberosClient(); err != nil {
			return nil, false, fmt.Errorf("hdfs: kerberos: %w", err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, hdfsConnectTimeout)
	defer cancel()
	stop := context.AfterFunc(cctx, g.closeConns)
	g.cl, err = hdfs.NewClient(options)
	if err == nil {
		// Fetch the server defaults now: the client caches them on first
		// use without a lock, so concurrent calls must not fetch them.
		_, err = g.cl.ServerDefaults()
	}
	if !stop() && err != nil {
		err = fmt.Errorf("%w (%v)", cctx.Err(), err)
	}
	if err != nil {
		g.close()
		return nil, false, fmt.Errorf("hdfs: connecting to %s: %w", strings.Join(options.Addresses, ","), err)
	}
	h.gen = g
	return g, true, nil
}

func (h *HDFS) discard(g *hdfsClient) {
	h.mu.Lock()
	if h.gen == g {
		h.gen = nil
	}
	h.mu.Unlock()
	g.close()
}

// kerberosClient logs in from the credentials cache, as the hdfs command
// line does.
func kerberosClient() (*krb.Client, error) {
	cfgPath := os.Getenv("KRB5_CONFIG")
	if cfgPath == "" {
		cfgPath = "/etc/krb5.conf"
	}
	cfg, err := krbconfig.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	ccache := os.Getenv("KRB5CCNAME")
	switch {
	case strings.HasPrefix(ccache, "FILE:"):
		ccache = strings.TrimPrefix(ccache, "FILE:")
	case strings.Contains(ccache, ":"):
		return nil, fmt.Errorf("unsupported credentials cache %s (want a FILE: cache)", ccache)
	case ccache == "":
		cu, err := user.Current()
		if err != nil {
			return nil, err
		}
		ccache = "/tmp/krb5cc_" + cu.Uid
	}
	cc, err := credentials.LoadCCache(ccache)
	if err != nil {
		return nil, err
	}
	return krb.NewFromCCache(cc, cfg)
}

// remote reports whether err is an answer of the cluster (not found, a Java
// exception, …) rather than a failure of the connection.
func remote(err error) bool {
	var herr hdfs.Error
	for _, sentinel := range []error{os.ErrNotExist, os.ErrExist, os.ErrPermission, os.ErrInvalid, syscall.ENOTEMPTY, hdfs.ErrReplicating, errIsDir} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return errors.As(err, &herr)
}

var errIsDir = errors.New("is a directory")

// do runs fn with a client. A failure of the namenode connection discards
// the client; an idempotent fn is then retried once if the failed client
// was not new (its connection may have died between calls). Cancelling ctx
// discards the client too, failing the calls that share it (idempotent ones
// retry).
func (h *HDFS) do(ctx context.Context, idempotent bool, fn func(cl *hdfs.Client) error) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		g, fresh, err := h.client(ctx)
		if err != nil {
			return err
		}
		stop := context.AfterFunc(ctx, func() { h.discard(g) })
		err = fn(g.cl)
		if !stop() && err != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		if err == nil || ctx.Err() != nil || !g.broken.Load() {
			return err
		}
		h.discard(g)
		if !idempotent || fresh || attempt > 0 {
			return err
		}
	}
}

func (h *HDFS) wrap(op, p string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("hdfs: %s %s: %w", op, h.URI(p), err)
}

// WriteFile implements FS: it writes a temporary file next to p, then
// renames it over p (rename2 with overwrite).
func (h *HDFS) WriteFile(ctx context.Context, p string, data []byte) error {
	p = path.Clean(p)
	dir, base := path.Split(p)
	var tmp string
	err := h.do(ctx, true, func(cl *hdfs.Client) (err error) {
		if tmp != "" {
			cl.Remove(tmp) // from a failed attempt
		}
		var r [8]byte
		rand.Read(r[:])
		tmp = path.Join(dir, "."+base+".tmp-"+hex.EncodeToString(r[:]))
		defer func() {
			if err != nil && remote(err) {
				cl.Remove(tmp)
			}
		}()
		w, err := cl.Create(tmp)
		if errors.Is(err, os.ErrNotExist) {
			if err = cl.MkdirAll(dir, 0o755); err == nil {
				w, err = cl.Create(tmp)
			}
		}
		if err != nil {
			return err
		}
		if d, ok := ctx.Deadline(); ok {
			w.SetDeadline(d)
		}
		if _, err = w.Write(data); err != nil {
			w.Close()
			return err
		}
		if err = w.Close(); err != nil {
			return err
		}
		return cl.Rename(tmp, p)
	})
	return h.wrap("writing", p, err)
}

// ReadFile implements FS. colinmarc/hdfs stats the file and locates its
// blocks in two calls; a WriteFile renaming a new file over p in between
// would mix two versions, so ReadFile checks that p still names the inode
// it opened, and reads again if not.
func (h *HDFS) ReadFile(ctx context.Context, p string) ([]byte, error) {
	var data []byte
	err := h.do(ctx, true, func(cl *hdfs.Client) error {
		for attempt := 0; ; attempt++ {
			var id uint64
			var err error
			data, id, err = readOnce(ctx, cl, p)
			if remote(err) {
				return err
			}
			fi, serr := cl.Stat(p)
			if serr != nil {
				if err != nil {
					return err
				}
				return serr
			}
			if fileID(fi) == id || attempt >= 5 {
				return err
			}
			// Replaced while being read: read the new file.
		}
	})
	return data, h.wrap("reading", p, err)
}

func fileID(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*hdfs.FileStatus); ok {
		return st.GetFileId()
	}
	return 0
}

func readOnce(ctx context.Context, cl *hdfs.Client, p string) ([]byte, uint64, error) {
	f, err := cl.Open(p)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	id := fileID(f.Stat())
	if f.Stat().IsDir() {
		return nil, id, &os.PathError{Op: "read", Path: p, Err: errIsDir}
	}
	if d, ok := ctx.Deadline(); ok {
		f.SetDeadline(d)
	}
	data, err := readAll(f, make([]byte, 0, f.Stat().Size()))
	return data, id, err
}

func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, 4096)
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// List implements FS.
func (h *HDFS) List(ctx context.Context, dir string) ([]Entry, error) {
	var out []Entry
	err := h.do(ctx, true, func(cl *hdfs.Client) error {
		fis, err := cl.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			out = nil
			return nil
		}
		if err != nil {
			return err
		}
		out = make([]Entry, 0, len(fis))
		for _, fi := range fis {
			e := Entry{Name: fi.Name(), IsDir: fi.IsDir()}
			if !e.IsDir {
				e.Size = fi.Size()
			}
			out = append(out, e)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, h.wrap("listing", dir, err)
}

// MkdirAll implements FS.
func (h *HDFS) MkdirAll(ctx context.Context, dir string) error {
	return h.wrap("creating directory", dir, h.do(ctx, true, func(cl *hdfs.Client) error {
		return cl.MkdirAll(dir, 0o755)
	}))
}

// RemoveAll implements FS.
func (h *HDFS) RemoveAll(ctx context.Context, p string) error {
	return h.wrap("removing", p, h.do(ctx, true, func(cl *hdfs.Client) error {
		return cl.RemoveAll(p)
	}))
}

// Rename implements FS; an existing file at to is replaced. A rename is not
// retried: whether a failed one took effect is unknown.
func (h *HDFS) Rename(ctx context.Context, from, to string) error {
	err := h.do(ctx, false, func(cl *hdfs.Client) error { return cl.Rename(from, to) })
	if err != nil {
		return fmt.Errorf("hdfs: renaming %s to %s: %w", h.URI(from), h.URI(to), err)
	}
	return nil
}

// Stat implements FS.
func (h *HDFS) Stat(ctx context.Context, p string) (Entry, error) {
	var e Entry
	err := h.do(ctx, true, func(cl *hdfs.Client) error {
		fi, err := cl.Stat(p)
		if err != nil {
			return err
		}
		e = Entry{Name: path.Base(p), IsDir: fi.IsDir()}
		if !e.IsDir {
			e.Size = fi.Size()
		}
		return nil
	})
	return e, h.wrap("stat", p, err)
}

// Create implements Creator: the file is written under a temporary name
// next to p and renamed over p by Commit. Cancelling ctx before Commit
// closes the client's connections, as for the other calls.
func (h *HDFS) Create(ctx context.Context, p string) (FileWriter, error) {
	p = path.Clean(p)
	dir, base := path.Split(p)
	var r [8]byte
	rand.Read(r[:])
	tmp := path.Join(dir, "."+base+".tmp-"+hex.EncodeToString(r[:]))
	var w *hdfs.FileWriter
	err := h.do(ctx, true, func(cl *hdfs.Client) (err error) {
		w, err = cl.Create(tmp)
		if errors.Is(err, os.ErrNotExist) {
			if err = cl.MkdirAll(dir, 0o755); err == nil {
				w, err = cl.Create(tmp)
			}
		}
		return err
	})
	if err != nil {
		return nil, h.wrap("writing", p, err)
	}
	if d, ok := ctx.Deadline(); ok {
		w.SetDeadline(d)
	}
	g, _, err := h.client(ctx)
	if err != nil {
		w.Close()
		return nil, h.wrap("writing", p, err)
	}
	hw := &hdfsWriter{h: h, ctx: ctx, w: w, tmp: tmp, path: p}
	hw.stop = context.AfterFunc(ctx, func() { h.discard(g) })
	return hw, nil
}

type hdfsWriter struct {
	h         *HDFS
	ctx       context.Context
	w         *hdfs.FileWriter
	tmp, path string
	stop      func() bool
	done      bool
}

func (w *hdfsWriter) Write(b []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := w.w.Write(b)
	return n, w.h.wrap("writing", w.path, err)
}

func (w *hdfsWriter) Commit() error {
	if w.done {
		return fmt.Errorf("hdfs: writing %s: committed or aborted already", w.h.URI(w.path))
	}
	err := w.w.Close()
	w.stop()
	if err == nil {
		err = w.ctx.Err()
	}
	if err == nil {
		err = w.h.do(w.ctx, false, func(cl *hdfs.Client) error { return cl.Rename(w.tmp, w.path) })
	}
	if err != nil {
		w.Abort()
		return w.h.wrap("writing", w.path, err)
	}
	w.done = true
	return nil
}

func (w *hdfsWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.w.Close()
	w.stop()
	// Best effort, not bound to a cancelled ctx: a leftover temporary file
	// is only garbage.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 10*time.Second)
	defer cancel()
	w.h.do(ctx, true, func(cl *hdfs.Client) error { return cl.Remove(w.tmp) })
}

// OpenFile implements RangeReader. Reads are serialised (the client's file
// reader seeks), which suits a restore reading its sections in order.
func (h *HDFS) OpenFile(ctx context.Context, p string) (File, error) {
	var f *hdfs.FileReader
	err := h.do(ctx, true, func(cl *hdfs.Client) (err error) {
		f, err = cl.Open(p)
		return err
	})
	if err != nil {
		return nil, h.wrap("reading", p, err)
	}
	if f.Stat().IsDir() {
		f.Close()
		return nil, h.wrap("reading", p, errIsDir)
	}
	if d, ok := ctx.Deadline(); ok {
		f.SetDeadline(d)
	}
	g, _, err := h.client(ctx)
	if err != nil {
		f.Close()
		return nil, h.wrap("reading", p, err)
	}
	hf := &hdfsFile{h: h, ctx: ctx, f: f, path: p}
	hf.stop = context.AfterFunc(ctx, func() { h.discard(g) })
	return hf, nil
}

type hdfsFile struct {
	h    *HDFS
	ctx  context.Context
	mu   sync.Mutex
	f    *hdfs.FileReader
	pos  int64 // f's offset, -1 when unknown
	path string
	stop func() bool
}

func (f *hdfsFile) Size() int64 { return f.f.Stat().Size() }

func (f *hdfsFile) ReadAt(b []byte, off int64) (int, error) {
	if err := f.ctx.Err(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Sequential reads go on with the current block reader: the client's
	// ReadAt seeks every time, which can start a new block read (a new
	// datanode request) per call.
	if off != f.pos {
		if _, err := f.f.Seek(off, io.SeekStart); err != nil {
			f.pos = -1
			return 0, f.h.wrap("reading", f.path, err)
		}
		f.pos = off
	}
	n, err := io.ReadFull(f.f, b)
	f.pos += int64(n)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		f.pos = -1 // seek again next time
		err = f.h.wrap("reading", f.path, err)
	}
	return n, err
}

func (f *hdfsFile) Close() error {
	f.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Close()
}
