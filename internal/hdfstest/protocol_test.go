package hdfstest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Raw protocol tests: framing errors and error responses, as seen on the
// wire by a client that does not go through colinmarc/hdfs.

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// expectClosed reads until EOF, failing on a timeout; it returns what was
// read.
func expectClosed(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	b, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("connection not closed: %v", err)
	}
	return b
}

// readResponse reads one RPC response frame and returns its header and body.
func readResponse(t *testing.T, r io.Reader) (fields, []byte) {
	t.Helper()
	var lb [4]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	frame := make([]byte, binary.BigEndian.Uint32(lb[:]))
	if _, err := io.ReadFull(r, frame); err != nil {
		t.Fatal(err)
	}
	parts, err := splitDelimited(frame)
	if err != nil || len(parts) == 0 {
		t.Fatalf("response frame: %v", err)
	}
	h, err := parse(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	if len(parts) > 1 {
		body = parts[1]
	}
	return h, body
}

func requestHeader(callID int32) msg {
	return msg(nil).uint(1, rpcKindProtobuf).uint(2, 0).sint(3, int64(callID)).bytes(4, []byte("0123456789abcdef"))
}

func handshake(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.Write([]byte{'h', 'r', 'p', 'c', 9, 0, 0})
	cc := msg(nil).msg(2, msg(nil).str(1, "raw")).str(3, protocolClass)
	conn.Write(frameOf(requestHeader(connectionContextID), cc))
}

func rawCall(t *testing.T, conn net.Conn, r io.Reader, id int32, method, protocol string, req msg) (fields, []byte) {
	t.Helper()
	rh := msg(nil).str(1, method).str(2, protocol).uint(3, 1)
	if _, err := conn.Write(frameOf(requestHeader(id), rh, req)); err != nil {
		t.Fatal(err)
	}
	h, body := readResponse(t, r)
	if got := int32(h.uint(1)); got != id {
		t.Fatalf("response call ID %d, want %d", got, id)
	}
	return h, body
}

func TestRPCFramingErrors(t *testing.T) {
	c := start(t)

	t.Run("bad magic", func(t *testing.T) {
		conn := dial(t, c.Addr())
		conn.Write([]byte("xrpc\x09\x00\x00"))
		if b := expectClosed(t, conn); len(b) != 0 {
			t.Fatalf("answered %q", b)
		}
	})
	t.Run("http", func(t *testing.T) {
		conn := dial(t, c.Addr())
		conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		if b := expectClosed(t, conn); !strings.Contains(string(b), "Hadoop IPC port") {
			t.Fatalf("answered %q", b)
		}
	})
	t.Run("version mismatch", func(t *testing.T) {
		conn := dial(t, c.Addr())
		conn.Write([]byte{'h', 'r', 'p', 'c', 7, 0, 0})
		h, _ := readResponse(t, conn)
		if h.uint(2) != statusFatal || h.uint(6) != fatalVersionMismatch || h.str(4) != excVersionMismatch {
			t.Fatalf("response header %+v", h)
		}
		expectClosed(t, conn)
	})
	t.Run("sasl", func(t *testing.T) {
		conn := dial(t, c.Addr())
		conn.Write([]byte{'h', 'r', 'p', 'c', 9, 0, authSASL})
		h, _ := readResponse(t, conn)
		if h.uint(2) != statusFatal || h.uint(6) != fatalUnauthorized {
			t.Fatalf("response header %+v", h)
		}
		expectClosed(t, conn)
	})
	t.Run("call before connection context", func(t *testing.T) {
		conn := dial(t, c.Addr())
		conn.Write([]byte{'h', 'r', 'p', 'c', 9, 0, 0})
		conn.Write(frameOf(requestHeader(1), msg(nil).str(1, "getFileInfo").str(2, protocolClass).uint(3, 1), msg(nil).str(1, "/")))
		h, _ := readResponse(t, conn)
		if h.uint(2) != statusFatal || h.uint(6) != fatalInvalidRPCHeader {
			t.Fatalf("response header %+v", h)
		}
		expectClosed(t, conn)
	})
	t.Run("oversized frame", func(t *testing.T) {
		conn := dial(t, c.Addr())
		handshake(t, conn)
		conn.Write([]byte{0x7f, 0xff, 0xff, 0xff})
		h, _ := readResponse(t, conn)
		if h.uint(2) != statusFatal {
			t.Fatalf("response header %+v", h)
		}
		expectClosed(t, conn)
	})
	t.Run("garbage request header", func(t *testing.T) {
		conn := dial(t, c.Addr())
		handshake(t, conn)
		conn.Write([]byte{0, 0, 0, 3, 2, 0xff, 0xff})
		h, _ := readResponse(t, conn)
		if h.uint(2) != statusFatal || h.uint(6) != fatalInvalidRPCHeader {
			t.Fatalf("response header %+v", h)
		}
		expectClosed(t, conn)
	})
	t.Run("truncated frame", func(t *testing.T) {
		conn := dial(t, c.Addr())
		handshake(t, conn)
		conn.Write([]byte{0, 0, 0, 100, 1, 2, 3})
		conn.(*net.TCPConn).CloseWrite()
		if b := expectClosed(t, conn); len(b) != 0 {
			t.Fatalf("answered %q", b)
		}
	})

	t.Run("errors keep the connection", func(t *testing.T) {
		conn := dial(t, c.Addr())
		r := bufio.NewReader(conn)
		handshake(t, conn)

		h, _ := rawCall(t, conn, r, 1, "noSuchMethod", protocolClass, nil)
		if h.uint(2) != statusError || h.uint(6) != errNoSuchMethod || h.str(4) != excNoSuchMethod {
			t.Fatalf("unknown method: %+v", h)
		}
		h, _ = rawCall(t, conn, r, 2, "getFileInfo", "org.example.Nope", msg(nil).str(1, "/"))
		if h.uint(2) != statusError || h.uint(6) != errNoSuchProtocol {
			t.Fatalf("unknown protocol: %+v", h)
		}
		h, _ = rawCall(t, conn, r, 3, "getBlockLocations", protocolClass, msg(nil).str(1, "/missing").uint(2, 0).uint(3, 1))
		if h.uint(2) != statusError || h.str(4) != excFileNotFound || h.uint(6) != errApplication {
			t.Fatalf("missing file: %+v", h)
		}
		h, body := rawCall(t, conn, r, 4, "getFileInfo", protocolClass, msg(nil).str(1, "/"))
		if h.uint(2) != statusSuccess || h.uint(3) != rpcVersion {
			t.Fatalf("getFileInfo: %+v", h)
		}
		resp, _ := parse(body)
		st, _ := resp.msg(1)
		if st.uint(1) != 1 { // IS_DIR
			t.Fatalf("getFileInfo(/) = %+v", st)
		}
		// The close operation ends the connection.
		conn.Write(frameOf(msg(nil).uint(1, rpcKindProtobuf).uint(2, rpcOpClose).sint(3, 5).bytes(4, []byte("x"))))
		expectClosed(t, conn)
	})
}

func TestDataTransferErrors(t *testing.T) {
	c := start(t)
	c.mu.Lock()
	dnAddr := c.dnAddr
	c.mu.Unlock()

	t.Run("version mismatch", func(t *testing.T) {
		conn := dial(t, dnAddr)
		conn.Write([]byte{0, 27, opReadBlock, 0})
		expectClosed(t, conn)
	})
	t.Run("unknown op", func(t *testing.T) {
		conn := dial(t, dnAddr)
		conn.Write(append([]byte{0, dataTransferVersion, 0x59}, delimited(msg(nil).uint(1, 1))...))
		b := expectClosed(t, conn)
		resp, err := splitDelimited(b)
		if err != nil || len(resp) != 1 {
			t.Fatalf("response %q", b)
		}
		f, _ := parse(resp[0])
		if f.uint(1) != dtUnsupported {
			t.Fatalf("status %d", f.uint(1))
		}
	})
	t.Run("read of a missing block", func(t *testing.T) {
		conn := dial(t, dnAddr)
		blk := msg(nil).str(1, c.poolID).uint(2, 42).uint(3, 1).uint(4, 10)
		op := msg(nil).msg(1, msg(nil).msg(1, msg(nil).msg(1, blk)).str(2, "raw")).uint(2, 0).uint(3, 10)
		conn.Write(append([]byte{0, dataTransferVersion, opReadBlock}, delimited(op)...))
		r := bufio.NewReader(conn)
		b, err := readDelimited(r, r, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		f, _ := parse(b)
		if f.uint(1) != dtError || !strings.Contains(f.str(5), "Replica not found") {
			t.Fatalf("response %+v", f)
		}
	})
	t.Run("write with a bad checksum", func(t *testing.T) {
		// Allocate a block through the namenode, then send a packet whose
		// checksum is wrong: the ack reports ERROR_CHECKSUM.
		nc := dial(t, c.Addr())
		r := bufio.NewReader(nc)
		handshake(t, nc)
		create := msg(nil).str(1, "/f").msg(2, msg(nil).uint(1, 0o644)).str(3, "raw").uint(4, flagCreate).
			bool(5, false).uint(6, 1).uint(7, 1<<20)
		if h, _ := rawCall(t, nc, r, 1, "create", protocolClass, create); h.uint(2) != statusSuccess {
			t.Fatalf("create: %+v", h)
		}
		h, body := rawCall(t, nc, r, 2, "addBlock", protocolClass, msg(nil).str(1, "/f").str(2, "raw"))
		if h.uint(2) != statusSuccess {
			t.Fatalf("addBlock: %+v", h)
		}
		resp, _ := parse(body)
		lb, _ := resp.msg(1)
		blk := lb.bytes(1)

		conn := dial(t, dnAddr)
		op := msg(nil).msg(1, msg(nil).msg(1, msg(nil).bytes(1, blk)).str(2, "raw")).
			uint(4, stageCreate).uint(5, 0).uint(6, 0).uint(7, 0).uint(8, 0).
			msg(9, msg(nil).uint(1, checksumCRC32C).uint(2, 512))
		conn.Write(append([]byte{0, dataTransferVersion, opWriteBlock}, delimited(op)...))
		dr := bufio.NewReader(conn)
		b, err := readDelimited(dr, dr, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if f, _ := parse(b); f.uint(1) != dtSuccess {
			t.Fatalf("writeBlock response %+v", f)
		}
		data := []byte("some data")
		h2 := msg(nil).sfixed64(1, 0).sfixed64(2, 1).bool(3, false).sfixed32(4, int32(len(data)))
		sum := crc32.Checksum(data, castagnoli) ^ 1
		pkt := binary.BigEndian.AppendUint32(nil, uint32(4+4+len(data)))
		pkt = binary.BigEndian.AppendUint16(pkt, uint16(len(h2)))
		pkt = append(append(pkt, h2...), binary.BigEndian.AppendUint32(nil, sum)...)
		conn.Write(append(pkt, data...))
		b, err = readDelimited(dr, dr, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		ack, _ := parse(b)
		if ack.sint(1) != 1 || ack.uint(2) != dtErrorChecksum {
			t.Fatalf("ack %+v", ack)
		}
		expectClosed(t, conn)
	})
}
