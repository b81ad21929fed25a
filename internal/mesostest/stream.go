package mesostest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

// stream is one SUBSCRIBE response: a RecordIO event stream, each record in
// its own HTTP chunk, with HEARTBEATs in between. The handler hijacks the
// connection so that the header order is the master's (Date,
// Transfer-Encoding, Mesos-Stream-Id, Content-Type), which net/http would not
// keep.
type stream struct {
	id       string
	fwID     string
	protobuf bool

	mu     sync.Mutex
	queue  []*scheduler.Event
	ending bool
	notify chan struct{}
	gone   chan struct{} // closed when the client went away or the writer stopped
	goneMu sync.Once
}

func newStream(fwID string, protobuf bool) *stream {
	return &stream{id: newUUID(), fwID: fwID, protobuf: protobuf, notify: make(chan struct{}, 1), gone: make(chan struct{})}
}

func (s *stream) send(ev *scheduler.Event) {
	s.mu.Lock()
	if !s.ending {
		s.queue = append(s.queue, ev)
	}
	s.mu.Unlock()
	s.poke()
}

// end sends ev (if any) and then ends the response.
func (s *stream) end(ev *scheduler.Event) {
	s.mu.Lock()
	if !s.ending {
		if ev != nil {
			s.queue = append(s.queue, ev)
		}
		s.ending = true
	}
	s.mu.Unlock()
	s.poke()
}

func (s *stream) poke() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *stream) markGone() { s.goneMu.Do(func() { close(s.gone) }) }

func (s *stream) encode(ev *scheduler.Event) []byte {
	if s.protobuf {
		b, err := proto.Marshal(ev)
		if err != nil {
			panic(fmt.Sprintf("mesostest: marshal event: %v", err))
		}
		return b
	}
	return marshalJSON(ev)
}

var heartbeat = &scheduler.Event{Type: scheduler.Event_HEARTBEAT}

// serve writes the stream on the hijacked connection until it ends or the
// client goes away. It returns true when the stream ended normally (the
// connection can be reused).
func (m *Master) serveStream(w http.ResponseWriter, s *stream) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		textError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		m.log.Error("hijack", "err", err)
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		conn.Close()
		return
	}
	m.hijacked[conn] = struct{}{}
	m.mu.Unlock()

	ct := "application/json"
	if s.protobuf {
		ct = "application/x-protobuf"
	}
	var hdr bytes.Buffer
	fmt.Fprintf(&hdr, "HTTP/1.1 200 OK\r\nDate: %s\r\nTransfer-Encoding: chunked\r\nMesos-Stream-Id: %s\r\nContent-Type: %s\r\n\r\n",
		time.Now().UTC().Format(http.TimeFormat), s.id, ct)

	// Watch the client side: EOF means the scheduler dropped the connection.
	// Bytes it sends meanwhile (a pipelined request) are kept for the server.
	var pending bytes.Buffer
	readerDone := make(chan struct{})
	stopReading := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 4096)
		for {
			n, err := brw.Reader.Read(buf)
			pending.Write(buf[:n])
			if err != nil {
				select {
				case <-stopReading:
				default:
					s.markGone()
				}
				return
			}
		}
	}()

	ok = m.writeStream(conn, hdr.Bytes(), s)
	s.markGone()
	if !ok {
		conn.Close()
		<-readerDone
		m.forgetConn(conn)
		m.streamClosed(s)
		return
	}
	// The stream ended: give the connection back to the server (keep-alive).
	close(stopReading)
	conn.SetReadDeadline(time.Now())
	<-readerDone
	conn.SetReadDeadline(time.Time{})
	m.forgetConn(conn)
	m.streamClosed(s)
	rest := io.MultiReader(bytes.NewReader(pending.Bytes()), conn)
	if !m.ln.give(&prefixConn{Conn: conn, r: bufio.NewReader(rest)}) {
		conn.Close()
	}
}

func (m *Master) forgetConn(c net.Conn) {
	m.mu.Lock()
	delete(m.hijacked, c)
	m.mu.Unlock()
}

// writeStream writes records until the stream ends (true) or fails (false).
func (m *Master) writeStream(conn net.Conn, header []byte, s *stream) bool {
	write := func(b []byte) bool {
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := conn.Write(b)
		return err == nil
	}
	if !write(header) {
		return false
	}
	chunk := func(ev *scheduler.Event) bool {
		rec := recordIO(s.encode(ev))
		var b bytes.Buffer
		fmt.Fprintf(&b, "%x\r\n", len(rec))
		b.Write(rec)
		b.WriteString("\r\n")
		return write(b.Bytes())
	}
	tick := time.NewTicker(m.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		ending := s.ending
		s.mu.Unlock()
		for _, ev := range q {
			if !chunk(ev) {
				return false
			}
		}
		if ending {
			s.mu.Lock()
			more := len(s.queue) > 0
			s.mu.Unlock()
			if more {
				continue
			}
			return write([]byte("0\r\n\r\n"))
		}
		select {
		case <-s.notify:
		case <-tick.C:
			s.send(heartbeat)
		case <-s.gone:
			return false
		case <-m.stop:
			return false
		}
	}
}

type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }
