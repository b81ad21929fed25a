package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// The rival transport of the comparison issue #9 asks for: the same
// channels over gRPC bidirectional streams, one HTTP/2 stream per channel on
// one client connection per peer. A stream carries the channel's frames one
// way (same encoding as the TCP transport, channel id unused) and its
// credits the other way: HTTP/2 flow control is per byte and released when
// the receiver reads, while the runtime's rule is one credit per message
// given back when the task processed it, so the credits stay.
//
// Messages are raw bytes with a codec of our own (no protobuf): frames go
// out from pooled buffers that gRPC returns when written.
//
// BenchmarkGRPC measures it; TestChannelsInOrderBothWays and the other
// tests that range over transports check it behaves like the TCP one.

func init() { transports["grpc"] = grpcFactory }

func BenchmarkGRPC(b *testing.B) {
	benchTransport(b, func(b *testing.B, recv runtime.Receiver, raw bool) network {
		n, err := newGRPCNetwork(recv, raw)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { n.Close() })
		return n
	})
}

const grpcMethod = "/sluice.dataplane.v1.DataPlane/Channel"

var grpcStreamDesc = grpc.StreamDesc{StreamName: "Channel", ServerStreams: true, ClientStreams: true}

// rawCodec passes *[]byte messages through.
type rawCodec struct{}

func (rawCodec) Name() string { return "sluice-frame" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: %T is not *[]byte", v)
	}
	return mem.BufferSlice{mem.NewBuffer(b, framePool{})}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: %T is not *[]byte", v)
	}
	n := data.Len()
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	*b = (*b)[:n]
	data.CopyTo(*b)
	return nil
}

// framePool gives gRPC's written frames back to the TCP transport's pool.
type framePool struct{}

func (framePool) Get(n int) *[]byte {
	b := getBuf()
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	*b = (*b)[:n]
	return b
}
func (framePool) Put(b *[]byte) { putBuf(b) }

// grpcTuned sets larger HTTP/2 windows and buffers than gRPC's defaults.
var grpcTuned = true

type grpcNetwork struct {
	recv    runtime.Receiver
	rawData bool
	lis     net.Listener
	srv     *grpc.Server

	mu      sync.Mutex
	clients map[string]*grpc.ClientConn
	routes  map[runtime.ChannelKey]*grpcIn
}

func grpcFactory(t testing.TB, recv runtime.Receiver, _ func(string, error)) network {
	n, err := newGRPCNetwork(recv, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func newGRPCNetwork(recv runtime.Receiver, rawData bool) (*grpcNetwork, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n := &grpcNetwork{recv: recv, rawData: rawData, lis: lis, clients: map[string]*grpc.ClientConn{}, routes: map[runtime.ChannelKey]*grpcIn{}}
	opts := []grpc.ServerOption{grpc.ForceServerCodecV2(rawCodec{})}
	if grpcTuned {
		opts = append(opts, grpc.InitialWindowSize(1<<20), grpc.InitialConnWindowSize(8<<20),
			grpc.ReadBufferSize(256<<10), grpc.WriteBufferSize(256<<10))
	}
	n.srv = grpc.NewServer(opts...)
	n.srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "sluice.dataplane.v1.DataPlane",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName: "Channel", ServerStreams: true, ClientStreams: true,
			Handler: func(_ any, s grpc.ServerStream) error { return n.serve(s) },
		}},
	}, nil)
	go n.srv.Serve(lis)
	return n, nil
}

func (n *grpcNetwork) Addr() string { return n.lis.Addr().String() }

func (n *grpcNetwork) Close() error {
	n.srv.Stop()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.clients {
		c.Close()
	}
	return nil
}

func (n *grpcNetwork) client(addr string) (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.clients[addr]; c != nil {
		return c, nil
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
	}
	if grpcTuned {
		opts = append(opts, grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(8<<20),
			grpc.WithReadBufferSize(256<<10), grpc.WithWriteBufferSize(256<<10))
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	n.clients[addr] = c
	return c, nil
}

// grpcIn is a channel received on a stream; Grant feeds its credit writer.
type grpcIn struct {
	credits atomic.Int64
	wake    chan struct{}
}

func (n *grpcNetwork) Grant(key runtime.ChannelKey, k int) {
	n.mu.Lock()
	in := n.routes[key]
	n.mu.Unlock()
	if in != nil && k > 0 {
		in.credits.Add(int64(k))
		select {
		case in.wake <- struct{}{}:
		default:
		}
	}
}

// serve receives one channel's stream.
func (n *grpcNetwork) serve(s grpc.ServerStream) error {
	var buf []byte
	if err := s.RecvMsg(&buf); err != nil {
		return err
	}
	h, err := parseHeader(buf, DefaultMaxFrame)
	if err != nil || h.typ != frameOpen || int(h.n) != len(buf)-headerLen {
		return errors.New("stream does not start with an open frame")
	}
	key, err := parseOpen(buf[headerLen:])
	if err != nil {
		return err
	}
	schema := n.recv.Schema(key)
	in := &grpcIn{wake: make(chan struct{}, 1)}
	if schema != nil {
		n.mu.Lock()
		n.routes[key] = in
		n.mu.Unlock()
		defer func() {
			n.mu.Lock()
			if n.routes[key] == in {
				delete(n.routes, key)
			}
			n.mu.Unlock()
		}()
	}
	ctx, cancel := context.WithCancel(s.Context())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // credits back, off the receiving goroutine
		defer wg.Done()
		for {
			select {
			case <-in.wake:
			case <-ctx.Done():
				return
			}
			if k := in.credits.Swap(0); k > 0 {
				b := getBuf()
				*b = appendCredit(*b, 0, uint32(k))
				if s.SendMsg(b) != nil {
					return
				}
			}
		}
	}()
	defer wg.Wait()
	for {
		if err := s.RecvMsg(&buf); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		h, err := parseHeader(buf, DefaultMaxFrame)
		if err != nil {
			return err
		}
		if int(h.n) != len(buf)-headerLen {
			return protocolErr("frame length %d in a message of %d bytes", h.n, len(buf))
		}
		if schema == nil {
			continue // a zombie's channel: dropped, no credit
		}
		var m runtime.Message
		if h.typ == frameData && n.rawData {
			m = runtime.Message{Kind: runtime.MsgData}
		} else if m, err = decodeMessage(h, buf[headerLen:], schema); err != nil {
			return err
		}
		if err := n.recv.Deliver(key, m); err != nil {
			if n.recv.Schema(key) == nil {
				schema = nil
				continue
			}
			return err
		}
	}
}

func (n *grpcNetwork) Sender(ctx context.Context, addr string, key runtime.ChannelKey) (runtime.ChannelSender, error) {
	c, err := n.client(addr)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	st, err := c.NewStream(sctx, &grpcStreamDesc, grpcMethod)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &grpcSender{st: st, key: key, ctx: sctx, cancel: cancel, wake: make(chan struct{}, 1), broken: make(chan struct{})}
	s.credits.Store(runtime.ChannelCredits)
	b := getBuf()
	*b = appendOpen(*b, 0, key)
	if err := st.SendMsg(b); err != nil {
		cancel()
		return nil, err
	}
	go s.readCredits()
	return s, nil
}

type grpcSender struct {
	st      grpc.ClientStream
	key     runtime.ChannelKey
	ctx     context.Context
	cancel  context.CancelFunc
	credits atomic.Int64
	wake    chan struct{}
	broken  chan struct{}
	err     error
}

func (s *grpcSender) readCredits() {
	var buf []byte
	for {
		err := s.st.RecvMsg(&buf)
		if err == nil {
			var h header
			if h, err = parseHeader(buf, DefaultMaxFrame); err == nil && (h.typ != frameCredit || len(buf) != headerLen+4) {
				err = protocolErr("expected a credit frame")
			}
		}
		if err != nil {
			if err == io.EOF {
				err = errors.New("stream ended")
			}
			s.err = err
			close(s.broken)
			return
		}
		s.credits.Add(int64(uint32(buf[9])<<24 | uint32(buf[10])<<16 | uint32(buf[11])<<8 | uint32(buf[12])))
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *grpcSender) acquire() error {
	for {
		if err := s.ctx.Err(); err != nil {
			return fmt.Errorf("channel %v: %w", s.key, err)
		}
		select {
		case <-s.broken:
			return fmt.Errorf("channel %v: %w", s.key, s.err)
		default:
		}
		if c := s.credits.Load(); c > 0 {
			if s.credits.CompareAndSwap(c, c-1) {
				return nil
			}
			continue
		}
		select {
		case <-s.wake:
		case <-s.broken:
		case <-s.ctx.Done():
		}
	}
}

func (s *grpcSender) Send(m runtime.Message) error {
	if err := s.acquire(); err != nil {
		if m.Batch != nil {
			m.Batch.Release()
		}
		return err
	}
	b := getBuf()
	var err error
	*b, err = appendMessage(*b, 0, &m)
	if m.Batch != nil {
		m.Batch.Release()
	}
	if err == nil {
		err = s.st.SendMsg(b)
	}
	if err != nil {
		if cerr := s.ctx.Err(); cerr != nil {
			err = cerr
		}
		return fmt.Errorf("channel %v: %w", s.key, err)
	}
	return nil
}

func (s *grpcSender) sendRaw(p []byte) error {
	if err := s.acquire(); err != nil {
		return err
	}
	b := getBuf()
	*b = appendHeader(*b, frameData, 0, len(p))
	*b = append(*b, p...)
	return s.st.SendMsg(b)
}

func (s *grpcSender) Close() error {
	err := s.st.CloseSend()
	go func() { // let the stream drain, then free it
		<-s.broken
		s.cancel()
	}()
	return err
}
