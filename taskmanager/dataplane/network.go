package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// Config configures a Network.
type Config struct {
	// Listen is the address of the data server (host:port; port 0 picks a
	// free one).
	Listen string
	// Advertise is this process's data address as the other processes dial
	// it (what the TaskManager registers with its master). The handshake
	// sends it, so that a peer we dialled reuses our connection to send to
	// us. Default: the listener's address.
	Advertise string
	// Receiver gets the messages of the channels whose consumer runs here.
	Receiver runtime.Receiver
	// OnPeerLost, if set, is called (in its own goroutine) when a connection
	// to addr — the peer's advertised data address — fails or the peer
	// closes it. Channels on it are broken both ways: their senders fail,
	// and the tasks fed by it will get nothing more, so the TaskManager
	// fails those. Not called for connections this Network closes itself.
	OnPeerLost func(addr string, err error)
	// Logger, default slog.Default().
	Logger *slog.Logger
	// MaxFrame bounds a frame's payload (DefaultMaxFrame when 0).
	MaxFrame int
	// HandshakeTimeout bounds the handshake of a new connection (10 s when 0).
	HandshakeTimeout time.Duration
	// WriteTimeout fails a connection whose peer takes no bytes for that long
	// (30 s when 0). Credits bound what is in flight, so a healthy receiver
	// always reads: a stalled write means a hung or unreachable peer.
	WriteTimeout time.Duration

	// rawData (benchmarks): data frames are delivered without a batch, not
	// decoded, to measure the transport without the row codec.
	rawData bool
}

// Network is the data plane of one process: its data server and its
// connections to the other processes. It implements runtime.Network.
type Network struct {
	cfg Config
	log *slog.Logger
	lis net.Listener

	mu      sync.Mutex
	closed  bool
	conns   map[string]*conn     // by peer address: dialled, or announced in the peer's handshake
	dialing map[string]*dialCall // dials in progress, shared by concurrent Senders
	all     map[*conn]struct{}
	routes  map[runtime.ChannelKey]route // where each channel received here came from, for Grant
	changed chan struct{}                // closed and replaced when conns gets a connection

	wg sync.WaitGroup
}

// route is the connection and sender's channel id a received channel's
// messages come from: Grant sends its credits back there.
type route struct {
	c  *conn
	id uint32
}

type dialCall struct {
	done    chan struct{}
	c       *conn
	err     error
	waiters int // Senders waiting for it (tests)
}

var _ runtime.Network = (*Network)(nil)

// Listen starts the data server of a process.
func Listen(cfg Config) (*Network, error) {
	if cfg.Receiver == nil {
		return nil, errors.New("dataplane: Config.Receiver is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("data server: %w", err)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = lis.Addr().String()
	}
	if len(cfg.Advertise) > maxIdentity {
		lis.Close()
		return nil, fmt.Errorf("data server: advertised address %q longer than %d bytes", cfg.Advertise, maxIdentity)
	}
	n := &Network{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "dataplane", "addr", cfg.Advertise),
		lis:     lis,
		conns:   map[string]*conn{},
		dialing: map[string]*dialCall{},
		all:     map[*conn]struct{}{},
		routes:  map[runtime.ChannelKey]route{},
		changed: make(chan struct{}),
	}
	n.wg.Add(1)
	go n.accept()
	return n, nil
}

// Addr is the address this process advertises to the others.
func (n *Network) Addr() string { return n.cfg.Advertise }

// Close stops the data server and closes every connection: the senders on
// them fail. OnPeerLost is not called for them.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	conns := make([]*conn, 0, len(n.all))
	for c := range n.all {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	err := n.lis.Close()
	for _, c := range conns {
		c.fail(errNetworkClosed, true)
	}
	n.wg.Wait()
	return err
}

var errNetworkClosed = errors.New("data plane closed")

func (n *Network) accept() {
	defer n.wg.Done()
	for {
		nc, err := n.lis.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			n.mu.Lock()
			closed := n.closed
			n.mu.Unlock()
			if !closed {
				n.log.Error("data server stopped accepting", "err", err)
			}
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.serve(nc)
		}()
	}
}

// serve handshakes an accepted connection and runs it.
func (n *Network) serve(nc net.Conn) {
	nc.SetDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	peer, flags, err := readHello(nc)
	if err != nil {
		n.log.Error("refused a data connection", "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	// Decide and register under one lock, so that a Sender to this peer
	// either finds this connection or is seen dialling by the decision.
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		nc.Close()
		return
	}
	if flags&helloForce == 0 && n.cfg.Advertise < peer && n.dialsLocked(peer) {
		n.mu.Unlock()
		nc.Write(appendHello(nil, n.cfg.Advertise, helloDuplicate))
		nc.Close()
		return
	}
	c := newConn(n, nc, peer, false)
	n.all[c] = struct{}{}
	// Our Senders to this peer use its connection, unless one is up already.
	if old := n.conns[peer]; old == nil || old.dead() {
		n.registerLocked(peer, c)
	}
	n.mu.Unlock()
	if _, err := nc.Write(appendHello(nil, n.cfg.Advertise, 0)); err != nil {
		c.fail(fmt.Errorf("handshake: %w", err), false)
		return
	}
	nc.SetDeadline(time.Time{})
	c.start()
}

// dialsLocked says whether this process is dialling peer or holds a
// connection it dialled to it.
func (n *Network) dialsLocked(peer string) bool {
	if n.dialing[peer] != nil {
		return true
	}
	c := n.conns[peer]
	return c != nil && c.dialed && !c.dead()
}

func (n *Network) registerLocked(addr string, c *conn) {
	n.conns[addr] = c
	close(n.changed)
	n.changed = make(chan struct{})
}

// Sender opens the sending end of channel key to the process at addr,
// dialling it if this process has no connection to it yet.
func (n *Network) Sender(ctx context.Context, addr string, key runtime.ChannelKey) (runtime.ChannelSender, error) {
	if len(key.Attempt) > maxAttempt {
		return nil, fmt.Errorf("channel %v: attempt longer than %d bytes", key, maxAttempt)
	}
	if key.Task < 0 || key.Channel < 0 {
		return nil, fmt.Errorf("channel %v: negative task or channel", key)
	}
	for {
		c, err := n.connTo(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("channel %v to %s: %w", key, addr, err)
		}
		if s := c.newSender(ctx, key); s != nil {
			return s, nil
		}
		// The connection failed since connTo found it: dial again.
	}
}

func (n *Network) connTo(ctx context.Context, addr string) (*conn, error) {
	n.mu.Lock()
	for {
		if n.closed {
			n.mu.Unlock()
			return nil, errNetworkClosed
		}
		if c := n.conns[addr]; c != nil && !c.dead() {
			n.mu.Unlock()
			return c, nil
		}
		d := n.dialing[addr]
		if d == nil {
			break
		}
		d.waiters++
		n.mu.Unlock()
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if d.err != nil && !(errors.Is(d.err, context.Canceled) && ctx.Err() == nil) {
			return nil, d.err
		}
		// Connected, or the Sender that dialled gave up: look again.
		n.mu.Lock()
	}
	d := &dialCall{done: make(chan struct{})}
	n.dialing[addr] = d
	n.mu.Unlock()

	c, err := n.dial(ctx, addr, 0)
	if errors.Is(err, errDuplicate) {
		// The peer is dialling us: its connection will do.
		if c, err = n.awaitInbound(ctx, addr), nil; c == nil {
			// None came (its advertised address is not the one we dial?):
			// insist.
			c, err = n.dial(ctx, addr, helloForce)
		}
	}
	n.mu.Lock()
	delete(n.dialing, addr)
	fresh := err == nil && c.dialed
	if fresh && n.closed {
		c.nc.Close()
		c, err = nil, errNetworkClosed
		fresh = false
	}
	if fresh {
		n.all[c] = struct{}{}
		n.registerLocked(addr, c)
	}
	n.mu.Unlock()
	d.c, d.err = c, err
	close(d.done)
	if err != nil {
		return nil, err
	}
	if fresh {
		c.start()
	}
	return c, nil
}

var errDuplicate = errors.New("peer is dialling this process")

// awaitInbound waits a while for the connection a peer is dialling to us.
func (n *Network) awaitInbound(ctx context.Context, addr string) *conn {
	timeout := time.NewTimer(n.cfg.HandshakeTimeout)
	defer timeout.Stop()
	for {
		n.mu.Lock()
		c, changed := n.conns[addr], n.changed
		n.mu.Unlock()
		if c != nil && !c.dead() {
			return c
		}
		select {
		case <-changed:
		case <-timeout.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (n *Network) dial(ctx context.Context, addr string, flags byte) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialling data server: %w", err)
	}
	deadline, _ := dctx.Deadline()
	nc.SetDeadline(deadline)
	_, err = nc.Write(appendHello(nil, n.cfg.Advertise, flags))
	var peer string
	var reply byte
	if err == nil {
		peer, reply, err = readHello(nc)
	}
	if err == nil && reply&helloDuplicate != 0 {
		err = errDuplicate
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake with data server %s: %w", addr, err)
	}
	nc.SetDeadline(time.Time{})
	// Named by the address we dialled, which is how this process's tasks
	// know the peer; the peer's own identity may spell it differently.
	if peer != addr {
		n.log.Debug("data server announces another address", "dialled", addr, "announced", peer)
	}
	return newConn(n, nc, addr, true), nil
}

// Grant gives n credits of channel key back to its sender, over the
// connection the channel's messages came from. Credits of a channel that
// ended or whose connection failed are dropped: nothing more comes from it.
func (n *Network) Grant(key runtime.ChannelKey, k int) {
	if k <= 0 {
		return
	}
	n.mu.Lock()
	r, ok := n.routes[key]
	n.mu.Unlock()
	if ok {
		r.c.queueCredit(r.id, k)
	}
}

func (n *Network) addRoute(key runtime.ChannelKey, r route) {
	n.mu.Lock()
	n.routes[key] = r
	n.mu.Unlock()
}

// removeRoute forgets key's route if it is still r (a newer sender of the
// same key may have replaced it).
func (n *Network) removeRoute(key runtime.ChannelKey, r route) {
	n.mu.Lock()
	if n.routes[key] == r {
		delete(n.routes, key)
	}
	n.mu.Unlock()
}

// dropConn forgets a failed connection and the routes through it.
func (n *Network) dropConn(c *conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.all, c)
	if n.conns[c.peer] == c {
		delete(n.conns, c.peer)
	}
	for k, r := range n.routes {
		if r.c == c {
			delete(n.routes, k)
		}
	}
}
