package dataplane

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// maxChannelsPerConn bounds the channels a peer may have open on one
// connection, so a peer cannot grow our tables without end.
const maxChannelsPerConn = 1 << 16

// conn is one connection to a peer process, shared by the channels in
// both directions. Three parties use it:
//
//   - senders (task goroutines) encode their frames and queue them; queueing
//     never blocks, the credits bound what is queued;
//   - the writer goroutine drains the queue and writes once it is empty
//     (one writev: batches from their own buffers, short frames copied
//     together), so frames queued together cost one write;
//   - the reader goroutine decodes frames: messages go to the Receiver,
//     credits to the senders.
type conn struct {
	n      *Network
	nc     net.Conn
	peer   string
	dialed bool // by this process

	// Writer side.
	mu       sync.Mutex
	queue    []*[]byte         // encoded frames, in order
	credits  map[uint32]uint32 // credits to send back, summed per channel
	pending  []uint32          // channels of credits, in the order first queued
	wake     chan struct{}     // cap 1: something was queued
	spare    []*[]byte
	outMu    sync.Mutex
	out      map[uint32]*sender // our channels on this connection
	nextID   uint32
	readerIn map[uint32]*inChan // the peer's channels; reader goroutine only
	decoders []chan frameJob    // nil: decode on the reading goroutine (fuzzing)

	done    chan struct{} // closed when the connection failed
	errOnce sync.Once
	err     error
}

// inChan is a channel received on a connection.
type inChan struct {
	key     runtime.ChannelKey
	id      uint32
	schema  *row.Schema
	unknown bool // no such channel here: its messages are dropped (set at open)
	gone    bool // its task went away since (its decoder only)
}

func newConn(n *Network, nc net.Conn, peer string, dialed bool) *conn {
	return &conn{
		n:        n,
		nc:       nc,
		peer:     peer,
		dialed:   dialed,
		credits:  map[uint32]uint32{},
		wake:     make(chan struct{}, 1),
		out:      map[uint32]*sender{},
		readerIn: map[uint32]*inChan{},
		done:     make(chan struct{}),
	}
}

// readBufferSize: a batch frame of 1024 rows is some 30 KB.
const readBufferSize = 256 << 10

func (c *conn) start() {
	c.decoders = make([]chan frameJob, min(goruntime.GOMAXPROCS(0), 4))
	for i := range c.decoders {
		q := make(chan frameJob, 64)
		c.decoders[i] = q
		c.n.wg.Add(1)
		go func() {
			defer c.n.wg.Done()
			c.decode(q)
		}()
	}
	c.n.wg.Add(2)
	go func() {
		defer c.n.wg.Done()
		c.writeLoop()
	}()
	go func() {
		defer c.n.wg.Done()
		c.readLoop()
	}()
}

func (c *conn) dead() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// fail breaks the connection once: every sender on it fails, its received
// channels are forgotten, and unless this process closed it (local) the
// loss is reported.
func (c *conn) fail(err error, local bool) {
	c.errOnce.Do(func() {
		c.err = err
		close(c.done)
		c.nc.Close()
		c.n.dropConn(c)
		c.mu.Lock()
		for _, b := range c.queue {
			putBuf(b)
		}
		c.queue = nil
		c.mu.Unlock()
		if local {
			return
		}
		// Warn: a peer that stops (its job ended, or it was shut down) ends
		// the connection too; OnPeerLost decides what it means.
		c.n.log.Warn("data connection lost", "peer", c.peer, "err", err)
		if f := c.n.cfg.OnPeerLost; f != nil {
			go f(c.peer, err)
		}
	})
}

func (c *conn) brokenErr() error {
	return fmt.Errorf("data connection to %s: %w", c.peer, c.err)
}

// enqueue queues one encoded frame; it fails if the connection did.
func (c *conn) enqueue(b *[]byte) error {
	c.mu.Lock()
	if c.dead() {
		c.mu.Unlock()
		putBuf(b)
		return c.brokenErr()
	}
	c.queue = append(c.queue, b)
	c.mu.Unlock()
	c.signal()
	return nil
}

func (c *conn) queueCredit(id uint32, k int) {
	c.mu.Lock()
	if c.dead() {
		c.mu.Unlock()
		return
	}
	old, ok := c.credits[id]
	if !ok {
		c.pending = append(c.pending, id)
	}
	c.credits[id] = uint32(min(uint64(old)+uint64(k), 1<<31))
	c.mu.Unlock()
	c.signal()
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// inlineFrame: frames shorter than this are copied together into one
// buffer before they are written; longer ones (batches) are written from
// their own buffers, in the same writev, without a copy.
const inlineFrame = 4 << 10

// writeChunk: the writer stops draining the queue to write once it holds
// this much, as a full bufio.Writer did.
const writeChunk = 256 << 10

func (c *conn) writeLoop() {
	var (
		small []byte      // credits and short frames, copied together
		mark  int         // small[mark:] is not in iov yet
		iov   net.Buffers // what one writev sends, in order
		held  []*[]byte   // frame buffers in iov, given back once written
		size  int         // bytes in iov and small[mark:]
	)
	write := func() error {
		if len(small) > mark {
			iov = append(iov, small[mark:])
		}
		w := iov // WriteTo consumes its receiver; iov keeps the array
		_, err := w.WriteTo(c.nc)
		for i, b := range held {
			putBuf(b)
			held[i] = nil
		}
		clear(iov) // no frame buffer stays referenced from here
		small, mark, iov, held, size = small[:0], 0, iov[:0], held[:0], 0
		return err
	}
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		// Drain until nothing is queued, then write: frames queued while we
		// drained go in the same writev instead of costing one each.
		for {
			c.nc.SetWriteDeadline(time.Now().Add(c.n.cfg.WriteTimeout))
			c.mu.Lock()
			q := c.queue
			c.queue = c.spare[:0]
			before := len(small)
			for _, id := range c.pending {
				small = appendCredit(small, id, c.credits[id])
				delete(c.credits, id)
			}
			c.pending = c.pending[:0]
			c.mu.Unlock()
			if len(q) == 0 && len(small) == before {
				c.spare = q
				break
			}
			size += len(small) - before
			for _, b := range q {
				size += len(*b)
				if len(*b) < inlineFrame {
					small = append(small, *b...)
					putBuf(b)
				} else {
					// The slices of small already in iov stay valid if
					// small grows: appends never write over them.
					if len(small) > mark {
						iov = append(iov, small[mark:])
						mark = len(small)
					}
					iov = append(iov, *b)
					held = append(held, b)
				}
				if size >= writeChunk {
					if err := write(); err != nil {
						c.fail(fmt.Errorf("writing: %w", err), false)
						return
					}
				}
			}
			clear(q)
			c.spare = q[:0]
		}
		if size > 0 {
			if err := write(); err != nil {
				c.fail(fmt.Errorf("writing: %w", err), false)
				return
			}
		}
	}
}

func (c *conn) readLoop() {
	br := bufio.NewReaderSize(c.nc, readBufferSize)
	for {
		p := getBuf()
		h, b, err := readFrame(br, *p, c.n.cfg.MaxFrame)
		*p = b
		if err == nil {
			err = c.handle(h, p)
		} else {
			putBuf(p)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("peer closed the connection")
			} else if errors.Is(err, errProtocol) {
				err = fmt.Errorf("%w (frame %s of channel %d)", err, h.typ, h.id)
			}
			c.fail(fmt.Errorf("reading: %w", err), c.dead())
			return
		}
	}
}

// frameJob is a message frame on its way to a decoder.
type frameJob struct {
	ic *inChan
	h  header
	p  *[]byte
}

// handle dispatches one frame from the peer, taking p.
func (c *conn) handle(h header, p *[]byte) error {
	switch h.typ {
	case frameCredit, frameOpen, frameClose:
		defer putBuf(p)
	}
	switch h.typ {
	case frameCredit:
		k := binary.BigEndian.Uint32(*p)
		c.outMu.Lock()
		s := c.out[h.id]
		c.outMu.Unlock()
		if s != nil { // else a channel we closed since
			s.grant(int64(k))
		}
		return nil
	case frameOpen:
		if c.readerIn[h.id] != nil {
			return protocolErr("channel %d opened twice", h.id)
		}
		if len(c.readerIn) >= maxChannelsPerConn {
			return protocolErr("more than %d channels open", maxChannelsPerConn)
		}
		key, err := parseOpen(*p)
		if err != nil {
			return err
		}
		ic := &inChan{key: key, id: h.id, schema: c.n.cfg.Receiver.Schema(key)}
		ic.unknown = ic.schema == nil
		c.readerIn[h.id] = ic
		if ic.unknown {
			// A zombie of an old attempt, or a task not here: its messages
			// are dropped, and without credits its sender soon stops.
			c.n.log.Warn("dropping a channel unknown here", "peer", c.peer, "channel", key)
			return nil
		}
		c.n.addRoute(key, route{c, h.id})
		return nil
	case frameClose:
		if ic := c.readerIn[h.id]; ic != nil {
			delete(c.readerIn, h.id)
			c.n.removeRoute(ic.key, route{c, h.id})
		}
		return nil
	}
	ic := c.readerIn[h.id]
	if ic == nil {
		putBuf(p)
		return protocolErr("channel %d not opened", h.id)
	}
	if h.typ == frameEnd {
		// Nothing follows on this channel. Credits given back after this
		// are not needed by its sender.
		delete(c.readerIn, h.id)
		c.n.removeRoute(ic.key, route{c, h.id})
	}
	if ic.unknown {
		putBuf(p)
		return nil
	}
	j := frameJob{ic, h, p}
	if c.decoders == nil {
		return c.deliver(j)
	}
	// A channel always goes to the same decoder: its messages stay in order.
	select {
	case c.decoders[ic.id%uint32(len(c.decoders))] <- j:
	case <-c.done:
		putBuf(p)
	}
	return nil
}

// decode runs one decoder: batches are decoded off the reading goroutine,
// so reading the socket and decoding overlap, and the channels of one
// connection decode in parallel.
func (c *conn) decode(q chan frameJob) {
	for {
		select {
		case j := <-q:
			if err := c.deliver(j); err != nil {
				c.fail(fmt.Errorf("reading: %w (frame %s of channel %d)", err, j.h.typ, j.h.id), c.dead())
				return
			}
		case <-c.done:
			return
		}
	}
}

// deliver decodes a message frame and hands it to the Receiver.
func (c *conn) deliver(j frameJob) error {
	defer putBuf(j.p)
	ic := j.ic
	if ic.gone {
		return nil
	}
	var m runtime.Message
	if j.h.typ == frameData && c.n.cfg.rawData {
		m = runtime.Message{Kind: runtime.MsgData}
	} else {
		var err error
		if m, err = decodeMessage(j.h, *j.p, ic.schema); err != nil {
			return err
		}
	}
	m.Bytes = len(*j.p) + headerLen
	if err := c.n.cfg.Receiver.Deliver(ic.key, m); err != nil {
		// The task may have gone since the channel opened: then this is a
		// zombie's message like any other. Otherwise the sender broke the
		// credit rule. The batch is left to the collector: whether Deliver
		// took it is unknown.
		if c.n.cfg.Receiver.Schema(ic.key) == nil {
			ic.gone = true
			c.n.removeRoute(ic.key, route{c, ic.id})
			return nil
		}
		return fmt.Errorf("%w: delivering to %v: %w", errProtocol, ic.key, err)
	}
	return nil
}

// newSender registers a new channel of ours on c; nil if c failed.
func (c *conn) newSender(ctx context.Context, key runtime.ChannelKey) *sender {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead() {
		return nil
	}
	c.nextID++ // ids are never reused, so a late credit cannot reach a newer channel
	s := &sender{c: c, id: c.nextID, key: key, ctx: ctx, wake: make(chan struct{}, 1), closed: make(chan struct{})}
	s.credits.Store(runtime.ChannelCredits)
	c.out[s.id] = s
	return s
}

// sender is the sending end of one channel on a connection.
type sender struct {
	c      *conn
	id     uint32
	key    runtime.ChannelKey
	ctx    context.Context
	opened atomic.Bool // the open frame went out

	credits   atomic.Int64
	wake      chan struct{} // cap 1: credits arrived
	closed    chan struct{}
	closeOnce sync.Once
	waited    *atomic.Int64 // set before the first Send: ns spent waiting for credits
	bytes     *atomic.Int64 // set before the first Send: bytes of messages sent
}

// CountBytes implements runtime.ByteCounter.
func (s *sender) CountBytes(n *atomic.Int64) { s.bytes = n }

// CountCreditWait implements runtime.CreditWaitCounter.
func (s *sender) CountCreditWait(ns *atomic.Int64) { s.waited = ns }

func (s *sender) grant(k int64) {
	s.credits.Add(k)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Send sends m once the channel has a credit. It takes m.Batch, released
// here whether or not it was sent.
func (s *sender) Send(m runtime.Message) error {
	if err := s.acquire(); err != nil {
		if m.Batch != nil {
			m.Batch.Release()
		}
		return err
	}
	b := getBuf()
	if !s.opened.Load() {
		// The open frame goes with the first message, so the receiver
		// looks the channel up as late as possible.
		*b = appendOpen(*b, s.id, s.key)
		s.opened.Store(true)
	}
	var err error
	before := len(*b)
	*b, err = appendMessage(*b, s.id, &m)
	if s.bytes != nil && err == nil {
		s.bytes.Add(int64(len(*b) - before))
	}
	if m.Batch != nil {
		m.Batch.Release()
	}
	if err != nil {
		putBuf(b)
		return fmt.Errorf("channel %v: %w", s.key, err)
	}
	if err := s.c.enqueue(b); err != nil {
		return fmt.Errorf("channel %v: %w", s.key, err)
	}
	return nil
}

// sendRaw sends p, an encoded batch, as a data frame (benchmarks: the
// transport without the row codec).
func (s *sender) sendRaw(p []byte) error {
	if err := s.acquire(); err != nil {
		return err
	}
	b := getBuf()
	if !s.opened.Load() {
		*b = appendOpen(*b, s.id, s.key)
		s.opened.Store(true)
	}
	*b = appendHeader(*b, frameData, s.id, len(p))
	*b = append(*b, p...)
	return s.c.enqueue(b)
}

// acquire takes one credit, waiting for the receiver to give one back.
func (s *sender) acquire() error {
	var began time.Time // of a wait (back-pressure), timed only when there is one
	for {
		if c := s.credits.Load(); c > 0 {
			if s.credits.CompareAndSwap(c, c-1) {
				break
			}
			continue
		}
		if began.IsZero() && s.waited != nil {
			began = time.Now()
		}
		select {
		case <-s.wake:
		case <-s.c.done:
		case <-s.closed:
		case <-s.ctx.Done():
		}
		if err := s.broken(); err != nil {
			return err
		}
	}
	if !began.IsZero() {
		s.waited.Add(int64(time.Since(began)))
	}
	// A credit does not outlive the connection or the context.
	return s.broken()
}

func (s *sender) broken() error {
	select {
	case <-s.closed:
		return fmt.Errorf("channel %v: sender closed", s.key)
	default:
	}
	if s.c.dead() {
		return fmt.Errorf("channel %v: %w", s.key, s.c.brokenErr())
	}
	if err := s.ctx.Err(); err != nil {
		return fmt.Errorf("channel %v: %w", s.key, err)
	}
	return nil
}

// Close ends the channel. If it was opened and not ended, the receiver is
// told to forget it.
func (s *sender) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.c.outMu.Lock()
		delete(s.c.out, s.id)
		s.c.outMu.Unlock()
		if s.opened.Load() {
			b := getBuf()
			*b = appendHeader(*b, frameClose, s.id, 0)
			s.c.enqueue(b) // a failed connection forgot the channel anyway
		}
	})
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getBuf() *[]byte { b := bufPool.Get().(*[]byte); *b = (*b)[:0]; return b }

func putBuf(b *[]byte) {
	if cap(*b) > 4<<20 {
		return // let outsized batches' buffers go
	}
	bufPool.Put(b)
}
