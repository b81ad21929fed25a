package dataplane

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// transports run the tests common to the data plane and its gRPC rival.
var transports = map[string]netFactory{"tcp": tcpFactory}

func forEachTransport(t *testing.T, f func(t *testing.T, newNet netFactory)) {
	for name, nf := range transports {
		t.Run(name, func(t *testing.T) { f(t, nf) })
	}
}

// Two processes send to each other on several channels at once; each
// channel's batches, watermarks, barriers and ends arrive in order.
func TestChannelsInOrderBothWays(t *testing.T) {
	forEachTransport(t, func(t *testing.T, newNet netFactory) {
		ra, rb := newTestReceiver(), newTestReceiver()
		a, b := newNet(t, ra, nil), newNet(t, rb, nil)
		const batches, rows = 60, 100
		type ch struct {
			from, to runtime.Network
			addr     string
			recv     *testReceiver
			key      runtime.ChannelKey
		}
		var chans []ch
		for i := range 5 { // a → b
			chans = append(chans, ch{a, b, b.Addr(), rb, runtime.ChannelKey{Attempt: "job-1/attempt-1", Task: int32(i % 2), Channel: int32(i)}})
		}
		for i := range 3 { // b → a, on the same connection
			chans = append(chans, ch{b, a, a.Addr(), ra, runtime.ChannelKey{Attempt: "job-1/attempt-1", Task: 7, Channel: int32(i)}})
		}
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, 2*len(chans))
		for _, c := range chans {
			inbox := c.recv.add(c.key)
			wg.Add(2)
			go func() {
				defer wg.Done()
				errs <- expect(c.to, c.key, inbox, batches, rows)
			}()
			go func() {
				defer wg.Done()
				errs <- sendAll(ctx, c.from, c.addr, c.key, batches, rows)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		for name, n := range map[string]network{"a": a, "b": b} {
			if tn, ok := n.(*Network); ok {
				tn.mu.Lock()
				k := len(tn.all)
				tn.mu.Unlock()
				if k != 1 {
					t.Errorf("process %s has %d connections, want one", name, k)
				}
			}
		}
	})
}

// A receiving task that gives no credit back stops its own sender after
// ChannelCredits messages; another channel on the same connection goes on.
func TestNoCreditStallsOnlyItsChannel(t *testing.T) {
	forEachTransport(t, func(t *testing.T, newNet netFactory) {
		ra, rb := newTestReceiver(), newTestReceiver()
		a, b := newNet(t, ra, nil), newNet(t, rb, nil)
		slow := runtime.ChannelKey{Attempt: "x", Task: 1, Channel: 0}
		fast := runtime.ChannelKey{Attempt: "x", Task: 2, Channel: 0}
		slowIn := rb.add(slow)
		fastIn := rb.add(fast)
		ctx := context.Background()
		ss, err := a.Sender(ctx, b.Addr(), slow)
		if err != nil {
			t.Fatal(err)
		}
		for i := range runtime.ChannelCredits {
			if err := ss.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(i, 10)}); err != nil {
				t.Fatal(err)
			}
		}
		blocked := make(chan error, 1)
		go func() { blocked <- ss.Send(runtime.Message{Kind: runtime.MsgWatermark, Watermark: 42}) }()

		done := make(chan error, 1)
		go func() { done <- expect(b, fast, fastIn, 50, 10) }()
		if err := sendAll(ctx, a, b.Addr(), fast, 50, 10); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-blocked:
			t.Fatalf("send without credit returned %v", err)
		default:
		}
		// The slow task processes one message: the blocked send goes through.
		m := <-slowIn
		m.Batch.Release()
		b.Grant(slow, 1)
		if err := <-blocked; err != nil {
			t.Fatal(err)
		}
		for i := range runtime.ChannelCredits - 1 {
			m := <-slowIn
			if m.Kind != runtime.MsgData {
				t.Fatalf("message %d: kind %d", i+1, m.Kind)
			}
			m.Batch.Release()
		}
		if m := <-slowIn; m.Kind != runtime.MsgWatermark || m.Watermark != 42 {
			t.Fatalf("last message %+v, want watermark 42", m)
		}
	})
}

// A lost connection fails the senders on it, a blocked one included, and is
// reported on both sides; a new Sender dials again. (TCP only: the gRPC
// rival has no OnPeerLost.)
func TestLostConnectionFailsSend(t *testing.T) {
	func(t *testing.T, newNet netFactory) {
		lostA, lostB := make(lostRecorder, 4), make(lostRecorder, 4)
		ra, rb, rc := newTestReceiver(), newTestReceiver(), newTestReceiver()
		a := newNet(t, ra, lostA.onLost)
		b := newNet(t, rb, lostB.onLost)
		key := runtime.ChannelKey{Attempt: "x", Task: 0, Channel: 0}
		rb.add(key)
		s, err := a.Sender(context.Background(), b.Addr(), key)
		if err != nil {
			t.Fatal(err)
		}
		for i := range runtime.ChannelCredits {
			if err := s.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(i, 1)}); err != nil {
				t.Fatal(err)
			}
		}
		blocked := make(chan error, 1)
		go func() { blocked <- s.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(0, 1)}) }()
		// c talks to a, so a has a connection that does not break.
		c := newNet(t, rc, nil)
		other := runtime.ChannelKey{Attempt: "x", Task: 5, Channel: 0}
		otherIn := ra.add(other)
		go func() { sendAll(context.Background(), c, a.Addr(), other, 3, 10) }()
		if err := expect(a, other, otherIn, 3, 10); err != nil {
			t.Fatal(err)
		}

		b.Close() // b dies: a's connection to it breaks
		if err := <-blocked; err == nil {
			t.Fatal("send on a lost connection succeeded")
		}
		if err := s.Send(runtime.Message{Kind: runtime.MsgIdle}); err == nil {
			t.Fatal("send after the loss succeeded")
		}
		if addr := <-lostA; addr != b.Addr() {
			t.Errorf("a lost %q, want %q", addr, b.Addr())
		}
		select {
		case addr := <-lostB:
			t.Errorf("b reported losing %q, but it closed itself", addr)
		default:
		}

		// a loses c's connection (c dies): a's receiving side learns it.
		c.Close()
		if addr := <-lostA; addr != c.Addr() {
			t.Errorf("a lost %q, want c %q", addr, c.Addr())
		}

		// A new b at another address: a dials it.
		rb2 := newTestReceiver()
		b2 := newNet(t, rb2, nil)
		in := rb2.add(key)
		go func() { sendAll(context.Background(), a, b2.Addr(), key, 2, 5) }()
		if err := expect(b2, key, in, 2, 5); err != nil {
			t.Fatal(err)
		}
	}(t, tcpFactory)
}

// A Sender whose context is done fails Send, waiting for credit or not.
func TestSenderContextDone(t *testing.T) {
	forEachTransport(t, func(t *testing.T, newNet netFactory) {
		ra, rb := newTestReceiver(), newTestReceiver()
		a, b := newNet(t, ra, nil), newNet(t, rb, nil)
		key := runtime.ChannelKey{Attempt: "x", Task: 0, Channel: 0}
		rb.add(key)
		ctx, cancel := context.WithCancel(context.Background())
		s, err := a.Sender(ctx, b.Addr(), key)
		if err != nil {
			t.Fatal(err)
		}
		for range runtime.ChannelCredits {
			if err := s.Send(runtime.Message{Kind: runtime.MsgIdle}); err != nil {
				t.Fatal(err)
			}
		}
		blocked := make(chan error, 1)
		go func() { blocked <- s.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(0, 3)}) }()
		cancel()
		if err := <-blocked; !errors.Is(err, context.Canceled) {
			t.Fatalf("blocked send: %v, want context.Canceled", err)
		}
		b.Grant(key, 1) // a credit now must not revive the channel
		if err := s.Send(runtime.Message{Kind: runtime.MsgIdle}); !errors.Is(err, context.Canceled) {
			t.Fatalf("send after cancel: %v, want context.Canceled", err)
		}
		s.Close()
	})
}

// Messages of a channel the receiving process does not know (an old
// attempt's zombie) are dropped and earn no credit, so the zombie stops;
// the process's own channels are not disturbed.
func TestUnknownAttemptDropped(t *testing.T) {
	forEachTransport(t, func(t *testing.T, newNet netFactory) {
		ra, rb := newTestReceiver(), newTestReceiver()
		a, b := newNet(t, ra, nil), newNet(t, rb, nil)
		zombie := runtime.ChannelKey{Attempt: "attempt-1", Task: 0, Channel: 0}
		live := runtime.ChannelKey{Attempt: "attempt-2", Task: 0, Channel: 0}
		liveIn := rb.add(live)
		ctx, cancel := context.WithCancel(context.Background())
		zs, err := a.Sender(ctx, b.Addr(), zombie)
		if err != nil {
			t.Fatal(err)
		}
		for i := range runtime.ChannelCredits {
			if err := zs.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(i, 10)}); err != nil {
				t.Fatal(err)
			}
		}
		blocked := make(chan error, 1)
		go func() { blocked <- zs.Send(runtime.Message{Kind: runtime.MsgIdle}) }()
		go func() { sendAll(context.Background(), a, b.Addr(), live, 20, 10) }()
		if err := expect(b, live, liveIn, 20, 10); err != nil {
			t.Fatal(err)
		}
		b.Grant(zombie, 3) // a stray grant for the unknown channel goes nowhere
		select {
		case err := <-blocked:
			t.Fatalf("zombie send returned %v without credit", err)
		default:
		}
		cancel()
		if err := <-blocked; err == nil {
			t.Fatal("zombie send succeeded")
		}
	})
}

// A receiving task that goes away while its channel is open: later messages
// are dropped like a zombie's; the connection stays up.
func TestReceiverGoneMidChannel(t *testing.T) {
	forEachTransport(t, func(t *testing.T, newNet netFactory) {
		lost := make(lostRecorder, 4)
		ra, rb := newTestReceiver(), newTestReceiver()
		a, b := newNet(t, ra, lost.onLost), newNet(t, rb, nil)
		gone := runtime.ChannelKey{Attempt: "x", Task: 0, Channel: 0}
		live := runtime.ChannelKey{Attempt: "x", Task: 1, Channel: 0}
		goneIn := rb.add(gone)
		liveIn := rb.add(live)
		gs, err := a.Sender(context.Background(), b.Addr(), gone)
		if err != nil {
			t.Fatal(err)
		}
		if err := gs.Send(runtime.Message{Kind: runtime.MsgIdle}); err != nil {
			t.Fatal(err)
		}
		<-goneIn
		rb.remove(gone)
		for range runtime.ChannelCredits - 1 {
			if err := gs.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(0, 5)}); err != nil {
				t.Fatal(err)
			}
		}
		go func() { sendAll(context.Background(), a, b.Addr(), live, 10, 10) }()
		if err := expect(b, live, liveIn, 10, 10); err != nil {
			t.Fatal(err)
		}
		gs.Close()
		select {
		case addr := <-lost:
			t.Fatalf("connection to %s lost", addr)
		default:
		}
	})
}

// Garbage, a wrong magic, a wrong version, frames that break the protocol
// after a good handshake: each connection is closed, and the server goes on
// serving the others.
func TestGarbageRefused(t *testing.T) {
	lost := make(lostRecorder, 16)
	ra, rb := newTestReceiver(), newTestReceiver()
	a := tcpFactory(t, ra, nil).(*Network)
	bn, err := Listen(Config{Listen: "127.0.0.1:0", Receiver: rb, OnPeerLost: lost.onLost, Logger: quiet, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bn.Close()
	key := runtime.ChannelKey{Attempt: "x", Task: 0, Channel: 0}
	rb.add(key)

	hello := appendHello(nil, "127.0.0.1:1", 0)
	open := appendOpen(nil, 1, key)
	var dataHuge []byte
	dataHuge = appendHeader(dataHuge, frameData, 1, DefaultMaxFrame+1)
	var dataLies []byte // announces 60 MB, sends 10 bytes and hangs up
	dataLies = appendHeader(dataLies, frameData, 1, 60<<20)
	dataLies = append(dataLies, "0123456789"...)
	var corrupt []byte // a data frame whose batch does not decode
	corrupt = appendHeader(corrupt, frameData, 1, 4)
	corrupt = append(corrupt, 1, 200, 3, 9)
	var beyond []byte // more messages than the channel's credits
	for range runtime.ChannelCredits + 1 {
		beyond = appendHeader(beyond, frameIdle, 1, 0)
	}
	cases := map[string][]byte{
		"http":              []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"zeros":             make([]byte, 64),
		"bad version":       append([]byte(magic), 99, 0, 0),
		"bad flags":         append([]byte(magic), wireVersion, 0x40, 0),
		"short hello":       []byte("SLD"),
		"unknown frame":     append(append([]byte{}, hello...), 0xee, 0, 0, 0, 1, 0, 0, 0, 0),
		"frame too long":    cat(hello, open, dataHuge),
		"length lies":       cat(hello, open, dataLies),
		"not opened":        cat(hello, appendHeader(nil, frameEnd, 9, 0)),
		"opened twice":      cat(hello, open, open),
		"corrupt batch":     cat(hello, open, corrupt),
		"beyond credits":    cat(hello, open, beyond),
		"wrong fixed size":  cat(hello, open, appendHeader(nil, frameWatermark, 1, 3), []byte{1, 2, 3}),
		"bad barrier flags": cat(hello, open, appendHeader(nil, frameBarrier, 1, 9), make([]byte, 8), []byte{0x80}),
	}
	for name, garbage := range cases {
		t.Run(name, func(t *testing.T) {
			nc, err := net.Dial("tcp", bn.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(garbage); err != nil {
				t.Fatal(err)
			}
			if name == "length lies" || name == "short hello" {
				nc.(*net.TCPConn).CloseWrite() // the peer hangs up mid-frame
			}
			nc.SetReadDeadline(time.Now().Add(time.Minute))
			// The server closes: whatever it answered, reading ends with EOF
			// (or a reset), not with our deadline.
			_, err = io.Copy(io.Discard, nc)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("server kept the connection open")
			}
		})
	}
	// b still serves a real peer.
	in := rb.add(key)
	go func() { sendAll(context.Background(), a, bn.Addr(), key, 5, 10) }()
	if err := expect(bn, key, in, 5, 10); err != nil {
		t.Fatal(err)
	}
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// A header announcing a large frame costs the reader only what arrives.
func TestReadFrameGrowsWithData(t *testing.T) {
	src := appendHeader(nil, frameData, 1, 50<<20)
	src = append(src, make([]byte, 100<<10)...)
	br := bufio.NewReader(strings.NewReader(string(src)))
	_, buf, err := readFrame(br, nil, DefaultMaxFrame)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err %v, want unexpected EOF", err)
	}
	if cap(buf) > 1<<20 {
		t.Fatalf("reader allocated %d bytes for 100 KiB received", cap(buf))
	}
}

// The dialer refuses a server that does not speak the protocol.
func TestDialWrongServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			var b [8]byte
			io.ReadFull(nc, b[:6])
			nc.Write([]byte("SSH-2.0-OpenSSH\r\n"))
			nc.Close()
		}
	}()
	a := tcpFactory(t, newTestReceiver(), nil)
	_, err = a.Sender(context.Background(), lis.Addr().String(), runtime.ChannelKey{Attempt: "x"})
	if !errors.Is(err, errProtocol) {
		t.Fatalf("Sender to a wrong server: %v, want a protocol error", err)
	}
}

// Frames of every kind survive encoding and decoding.
func TestFrameRoundTrip(t *testing.T) {
	key := runtime.ChannelKey{Attempt: strings.Repeat("a", maxAttempt), Task: 1 << 30, Channel: 3}
	b := appendOpen(nil, 7, key)
	h, err := parseHeader(b, DefaultMaxFrame)
	if err != nil || h.typ != frameOpen || h.id != 7 || int(h.n) != len(b)-headerLen {
		t.Fatalf("open header %+v, %v", h, err)
	}
	if got, err := parseOpen(b[headerLen:]); err != nil || got != key {
		t.Fatalf("open: %+v, %v", got, err)
	}
	for _, m := range script(2, 3) {
		enc, err := appendMessage(nil, 9, &m)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseHeader(enc, DefaultMaxFrame)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMessage(h, enc[headerLen:], testSchema)
		if err != nil {
			t.Fatal(err)
		}
		if got.Kind != m.Kind || got.Watermark != m.Watermark || got.Barrier != m.Barrier {
			t.Fatalf("%+v decoded as %+v", m, got)
		}
		if m.Kind == runtime.MsgData {
			if err := checkBatch(got.Batch, int(m.Batch.Cols[0].Ints[0]), m.Batch.Len); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := appendCredit(nil, 5, 1<<31)
	if h, err := parseHeader(c, DefaultMaxFrame); err != nil || h.typ != frameCredit || binary.BigEndian.Uint32(c[headerLen:]) != 1<<31 {
		t.Fatalf("credit %+v, %v", h, err)
	}
}

// A connection cut in the middle (a proxy between the processes drops it):
// the sender's Send fails and the receiving process is told which peer it
// lost, though neither process closed anything.
func TestCutConnection(t *testing.T) {
	lostA, lostB := make(lostRecorder, 4), make(lostRecorder, 4)
	ra, rb := newTestReceiver(), newTestReceiver()
	a := tcpFactory(t, ra, lostA.onLost)
	b := tcpFactory(t, rb, lostB.onLost)
	proxy, cut := startProxy(t, b.Addr())
	key := runtime.ChannelKey{Attempt: "x", Task: 0, Channel: 0}
	in := rb.add(key)
	s, err := a.Sender(context.Background(), proxy, key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(i, 4)}); err != nil {
			t.Fatal(err)
		}
		m := <-in
		m.Batch.Release()
		b.Grant(key, 1)
	}
	cut()
	if addr := <-lostB; addr != a.Addr() {
		t.Errorf("b lost %q, want a %q", addr, a.Addr())
	}
	if addr := <-lostA; addr != proxy {
		t.Errorf("a lost %q, want %q", addr, proxy)
	}
	for range runtime.ChannelCredits + 1 {
		if err = s.Send(runtime.Message{Kind: runtime.MsgIdle}); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("sends over a cut connection kept succeeding")
	}
}

// startProxy forwards connections to addr until cut closes them all.
func startProxy(t *testing.T, addr string) (string, func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go io.Copy(up, c)
			go io.Copy(c, up)
		}
	}()
	cut := func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(cut)
	return lis.Addr().String(), cut
}

// Senders waiting on another Sender's dial are not failed by that
// Sender's context.
func TestDialSharedDespiteCancel(t *testing.T) {
	ra, rb := newTestReceiver(), newTestReceiver()
	a := tcpFactory(t, ra, nil).(*Network)
	b := tcpFactory(t, rb, nil)
	// Hold a's dial to b open: a dial in progress is what others wait on.
	d := &dialCall{done: make(chan struct{})}
	a.mu.Lock()
	a.dialing[b.Addr()] = d
	a.mu.Unlock()
	key := runtime.ChannelKey{Attempt: "x"}
	in := rb.add(key)
	errc := make(chan error, 1)
	go func() { errc <- sendAll(context.Background(), a, b.Addr(), key, 1, 1) }()
	for { // until the Sender waits for the dial
		a.mu.Lock()
		w := d.waiters
		a.mu.Unlock()
		if w > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// The dialling Sender's context is cancelled.
	a.mu.Lock()
	delete(a.dialing, b.Addr())
	a.mu.Unlock()
	d.err = context.Canceled
	close(d.done)
	if err := expect(b, key, in, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
