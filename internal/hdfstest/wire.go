package hdfstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// The protobuf messages of Hadoop RPC and of the data transfer protocol are
// built and parsed here field by field with protowire; the field numbers are
// those of Hadoop's wire protocol (RpcHeader, ProtobufRpcEngine,
// IpcConnectionContext, ClientNamenodeProtocol, hdfs and datatransfer).

// msg builds a protobuf message.
type msg []byte

func (m msg) uint(n protowire.Number, v uint64) msg {
	m = protowire.AppendTag(m, n, protowire.VarintType)
	return protowire.AppendVarint(m, v)
}

func (m msg) sint(n protowire.Number, v int64) msg {
	m = protowire.AppendTag(m, n, protowire.VarintType)
	return protowire.AppendVarint(m, protowire.EncodeZigZag(v))
}

// int encodes a (non-zigzag) int32 or int64 field.
func (m msg) int(n protowire.Number, v int64) msg { return m.uint(n, uint64(v)) }

func (m msg) bool(n protowire.Number, v bool) msg {
	return m.uint(n, protowire.EncodeBool(v))
}

func (m msg) str(n protowire.Number, s string) msg {
	m = protowire.AppendTag(m, n, protowire.BytesType)
	return protowire.AppendString(m, s)
}

func (m msg) bytes(n protowire.Number, b []byte) msg {
	m = protowire.AppendTag(m, n, protowire.BytesType)
	return protowire.AppendBytes(m, b)
}

func (m msg) msg(n protowire.Number, sub msg) msg {
	m = protowire.AppendTag(m, n, protowire.BytesType)
	return protowire.AppendBytes(m, sub)
}

func (m msg) sfixed64(n protowire.Number, v int64) msg {
	m = protowire.AppendTag(m, n, protowire.Fixed64Type)
	return protowire.AppendFixed64(m, uint64(v))
}

func (m msg) sfixed32(n protowire.Number, v int32) msg {
	m = protowire.AppendTag(m, n, protowire.Fixed32Type)
	return protowire.AppendFixed32(m, uint32(v))
}

// field is one parsed field; repeated fields appear once per value.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64 // varint, fixed32 and fixed64 values
	b   []byte // bytes values
}

// fields is a parsed message.
type fields []field

func parse(b []byte) (fields, error) {
	var fs fields
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.v = uint64(v)
		case protowire.Fixed64Type:
			f.v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		fs = append(fs, f)
	}
	return fs, nil
}

// get returns the last occurrence of field n (protobuf's rule for
// non-repeated fields).
func (fs fields) get(n protowire.Number) (field, bool) {
	for i := len(fs) - 1; i >= 0; i-- {
		if fs[i].num == n {
			return fs[i], true
		}
	}
	return field{}, false
}

func (fs fields) has(n protowire.Number) bool { _, ok := fs.get(n); return ok }

func (fs fields) uint(n protowire.Number) uint64 { f, _ := fs.get(n); return f.v }

func (fs fields) sint(n protowire.Number) int64 {
	f, _ := fs.get(n)
	return protowire.DecodeZigZag(f.v)
}

func (fs fields) bool(n protowire.Number) bool { f, _ := fs.get(n); return f.v != 0 }

func (fs fields) str(n protowire.Number) string { f, _ := fs.get(n); return string(f.b) }

func (fs fields) bytes(n protowire.Number) []byte { f, _ := fs.get(n); return f.b }

func (fs fields) msg(n protowire.Number) (fields, error) {
	f, ok := fs.get(n)
	if !ok {
		return nil, nil
	}
	return parse(f.b)
}

// require reports a missing required field as the Java server would.
func (fs fields) require(what string, ns ...protowire.Number) error {
	for _, n := range ns {
		if !fs.has(n) {
			return fmt.Errorf("%s: missing required field %d", what, n)
		}
	}
	return nil
}

// delimited returns m prefixed by its varint length, as Hadoop's
// writeDelimitedTo does.
func delimited(m msg) []byte {
	b := protowire.AppendVarint(make([]byte, 0, len(m)+5), uint64(len(m)))
	return append(b, m...)
}

// readDelimited reads a varint length and that many bytes.
func readDelimited(r io.ByteReader, rd io.Reader, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("message of %d bytes exceeds limit %d", n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rd, b); err != nil {
		return nil, noEOF(err)
	}
	return b, nil
}

// splitDelimited splits a buffer of varint-delimited messages (the body of
// an RPC packet).
func splitDelimited(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		n, k := protowire.ConsumeVarint(b)
		if k < 0 || n > uint64(len(b)-k) || n > math.MaxInt32 {
			return nil, errors.New("malformed delimited message")
		}
		out = append(out, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return out, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
