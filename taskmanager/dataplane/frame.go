package dataplane

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// The wire format. Integers are big endian unless said otherwise.
//
//	hello   "SLDP" version(1) flags(1) len(1) identity(len)   each side, once
//	frame   type(1) channel(4) length(4) payload(length)
//
// Payloads by frame type:
//
//	open       uvarint attempt length, attempt, varint task, varint channel
//	data       a batch in the row codec, integers packed (row.AppendBatchPacked)
//	watermark  int64
//	barrier    checkpoint id int64, flags(1): 1 savepoint, 2 final, 4 stop
//	credit     uint32 credits given back
//	idle, end-data, end, close: empty
const (
	magic = "SLDP"
	// 2: batches with packed integer columns.
	wireVersion  = 2
	headerLen    = 9
	maxIdentity  = 255
	maxAttempt   = 1024
	maxOpenFrame = binary.MaxVarintLen64 + maxAttempt + 2*binary.MaxVarintLen32

	// DefaultMaxFrame bounds a frame's payload: a longer one is a protocol
	// error, so garbage on the port cannot make the reader allocate much.
	DefaultMaxFrame = 64 << 20
)

type frameType uint8

const (
	frameOpen frameType = iota + 1
	frameData
	frameWatermark
	frameIdle
	frameBarrier
	frameEndData
	frameEnd
	// frameClose: the sender abandoned the channel without an end frame (its
	// task failed); the receiver forgets the channel.
	frameClose
	frameCredit
)

func (t frameType) String() string {
	switch t {
	case frameOpen:
		return "open"
	case frameData:
		return "data"
	case frameWatermark:
		return "watermark"
	case frameIdle:
		return "idle"
	case frameBarrier:
		return "barrier"
	case frameEndData:
		return "end-data"
	case frameEnd:
		return "end"
	case frameClose:
		return "close"
	case frameCredit:
		return "credit"
	}
	return fmt.Sprintf("frame type %d", uint8(t))
}

const (
	flagSavepoint = 1 << iota
	flagFinal
	flagStop
)

// errProtocol is wrapped by every error caused by what the peer sent.
var errProtocol = errors.New("data plane protocol error")

func protocolErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errProtocol, fmt.Sprintf(format, args...))
}

type header struct {
	typ frameType
	id  uint32 // the sender's channel id
	n   uint32 // payload length
}

func appendHeader(dst []byte, t frameType, id uint32, n int) []byte {
	dst = append(dst, byte(t))
	dst = binary.BigEndian.AppendUint32(dst, id)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// parseHeader checks a header: a known type, and a payload length that is
// exact for fixed-size frames and at most maxFrame for the others.
func parseHeader(b []byte, maxFrame int) (header, error) {
	h := header{typ: frameType(b[0]), id: binary.BigEndian.Uint32(b[1:]), n: binary.BigEndian.Uint32(b[5:])}
	want := -1
	switch h.typ {
	case frameOpen:
		if h.n > maxOpenFrame {
			return h, protocolErr("open frame of %d bytes", h.n)
		}
	case frameData:
		if uint64(h.n) > uint64(maxFrame) {
			return h, protocolErr("data frame of %d bytes exceeds the limit of %d", h.n, maxFrame)
		}
	case frameWatermark:
		want = 8
	case frameBarrier:
		want = 9
	case frameCredit:
		want = 4
	case frameIdle, frameEndData, frameEnd, frameClose:
		want = 0
	default:
		return h, protocolErr("unknown %s", h.typ)
	}
	if want >= 0 && int(h.n) != want {
		return h, protocolErr("%s frame of %d bytes, want %d", h.typ, h.n, want)
	}
	return h, nil
}

// readFrame reads one frame, reusing buf for its payload. The buffer grows
// with the bytes actually received, never by the announced length at once,
// so a header that lies costs at most what the peer really sent.
func readFrame(r *bufio.Reader, buf []byte, maxFrame int) (header, []byte, error) {
	hb, err := r.Peek(headerLen)
	if err != nil {
		if err == io.EOF && len(hb) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return header{}, buf, err
	}
	h, err := parseHeader(hb, maxFrame)
	if err != nil {
		return h, buf, err
	}
	r.Discard(headerLen)
	buf = buf[:0]
	n := int(h.n)
	for len(buf) < n {
		chunk := min(n-len(buf), max(len(buf), 64<<10))
		if cap(buf)-len(buf) < chunk {
			nb := make([]byte, len(buf), len(buf)+chunk)
			copy(nb, buf)
			buf = nb
		}
		k, err := io.ReadFull(r, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+k]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return h, buf, fmt.Errorf("reading %s frame: %w", h.typ, err)
		}
	}
	return h, buf, nil
}

// Hello flags.
const (
	// helloForce (dialer): accept even if you are dialling me; I waited for
	// your connection in vain.
	helloForce = 1
	// helloDuplicate (server): refused, I am dialling you: use my
	// connection. Two processes that dial each other at once keep the one
	// dialled by the smaller address.
	helloDuplicate = 1
)

func appendHello(dst []byte, identity string, flags byte) []byte {
	dst = append(dst, magic...)
	dst = append(dst, wireVersion, flags, byte(len(identity)))
	return append(dst, identity...)
}

// readHello reads the peer's handshake: its identity and flags.
func readHello(r io.Reader) (string, byte, error) {
	var b [len(magic) + 3]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", 0, fmt.Errorf("reading handshake: %w", err)
	}
	if string(b[:len(magic)]) != magic {
		return "", 0, protocolErr("bad magic %q", b[:len(magic)])
	}
	if v := b[len(magic)]; v != wireVersion {
		return "", 0, protocolErr("wire version %d, this process speaks %d", v, wireVersion)
	}
	flags := b[len(magic)+1]
	if flags&^helloForce != 0 {
		return "", 0, protocolErr("unknown handshake flags %#x", flags)
	}
	id := make([]byte, b[len(magic)+2])
	if _, err := io.ReadFull(r, id); err != nil {
		return "", 0, fmt.Errorf("reading handshake identity: %w", err)
	}
	return string(id), flags, nil
}

func appendOpen(dst []byte, id uint32, key runtime.ChannelKey) []byte {
	start := len(dst)
	dst = appendHeader(dst, frameOpen, id, 0)
	dst = binary.AppendUvarint(dst, uint64(len(key.Attempt)))
	dst = append(dst, key.Attempt...)
	dst = binary.AppendVarint(dst, int64(key.Task))
	dst = binary.AppendVarint(dst, int64(key.Channel))
	binary.BigEndian.PutUint32(dst[start+5:], uint32(len(dst)-start-headerLen))
	return dst
}

func parseOpen(p []byte) (runtime.ChannelKey, error) {
	var key runtime.ChannelKey
	l, k := binary.Uvarint(p)
	if k <= 0 || l > maxAttempt || l > uint64(len(p)-k) {
		return key, protocolErr("bad attempt in open frame")
	}
	key.Attempt = string(p[k : k+int(l)])
	p = p[k+int(l):]
	task, k := binary.Varint(p)
	if k <= 0 || task < 0 || task > math.MaxInt32 {
		return key, protocolErr("bad task in open frame")
	}
	p = p[k:]
	ch, k := binary.Varint(p)
	if k <= 0 || ch < 0 || ch > math.MaxInt32 {
		return key, protocolErr("bad channel in open frame")
	}
	if k != len(p) {
		return key, protocolErr("trailing bytes in open frame")
	}
	key.Task, key.Channel = int32(task), int32(ch)
	return key, nil
}

// appendMessage appends m as one frame of channel id.
func appendMessage(dst []byte, id uint32, m *runtime.Message) ([]byte, error) {
	start := len(dst)
	switch m.Kind {
	case runtime.MsgData:
		dst = appendHeader(dst, frameData, id, 0)
		dst = row.AppendBatchPacked(dst, m.Batch)
		n := len(dst) - start - headerLen
		if n > math.MaxUint32 {
			return dst[:start], fmt.Errorf("batch of %d bytes is too large for a frame", n)
		}
		binary.BigEndian.PutUint32(dst[start+5:], uint32(n))
	case runtime.MsgWatermark:
		dst = appendHeader(dst, frameWatermark, id, 8)
		dst = binary.BigEndian.AppendUint64(dst, uint64(m.Watermark))
	case runtime.MsgBarrier:
		dst = appendHeader(dst, frameBarrier, id, 9)
		dst = binary.BigEndian.AppendUint64(dst, uint64(m.Barrier.ID))
		var f byte
		if m.Barrier.Savepoint {
			f |= flagSavepoint
		}
		if m.Barrier.Final {
			f |= flagFinal
		}
		if m.Barrier.Stop {
			f |= flagStop
		}
		dst = append(dst, f)
	case runtime.MsgIdle:
		dst = appendHeader(dst, frameIdle, id, 0)
	case runtime.MsgEndData:
		dst = appendHeader(dst, frameEndData, id, 0)
	case runtime.MsgEnd:
		dst = appendHeader(dst, frameEnd, id, 0)
	default:
		return dst, fmt.Errorf("unknown message kind %d", m.Kind)
	}
	return dst, nil
}

// decodeMessage decodes the payload of a message frame (any type but open,
// close and credit). A data frame's batch is decoded with schema.
func decodeMessage(h header, p []byte, schema *row.Schema) (runtime.Message, error) {
	switch h.typ {
	case frameData:
		b := row.NewBatch(schema)
		rest, err := row.DecodeBatch(p, b)
		if err != nil {
			b.Release()
			return runtime.Message{}, fmt.Errorf("%w: %w", errProtocol, err)
		}
		if len(rest) != 0 {
			b.Release()
			return runtime.Message{}, protocolErr("%d bytes after the batch", len(rest))
		}
		return runtime.Message{Kind: runtime.MsgData, Batch: b}, nil
	case frameWatermark:
		return runtime.Message{Kind: runtime.MsgWatermark, Watermark: int64(binary.BigEndian.Uint64(p))}, nil
	case frameBarrier:
		f := p[8]
		if f&^(flagSavepoint|flagFinal|flagStop) != 0 {
			return runtime.Message{}, protocolErr("unknown barrier flags %#x", f)
		}
		return runtime.Message{Kind: runtime.MsgBarrier, Barrier: runtime.Trigger{
			ID:        int64(binary.BigEndian.Uint64(p)),
			Savepoint: f&flagSavepoint != 0,
			Final:     f&flagFinal != 0,
			Stop:      f&flagStop != 0,
		}}, nil
	case frameIdle:
		return runtime.Message{Kind: runtime.MsgIdle}, nil
	case frameEndData:
		return runtime.Message{Kind: runtime.MsgEndData}, nil
	case frameEnd:
		return runtime.Message{Kind: runtime.MsgEnd}, nil
	}
	return runtime.Message{}, protocolErr("%s frame is not a message", h.typ)
}

func appendCredit(dst []byte, id uint32, n uint32) []byte {
	dst = appendHeader(dst, frameCredit, id, 4)
	return binary.BigEndian.AppendUint32(dst, n)
}
