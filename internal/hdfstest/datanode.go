package hdfstest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The data transfer protocol, as a DataNode's DataXceiver speaks it:
//
//	request:  uint16 version (28), uint8 op, varint-delimited Op…Proto
//	response: varint-delimited BlockOpResponseProto
//	writeBlock: the client streams packets; each is acknowledged with a
//	  varint-delimited PipelineAckProto once its data is stored
//	readBlock:  the datanode streams packets, the last one empty
//
// A packet is uint32 length (4 + checksums + data), uint16 header length,
// PacketHeaderProto, the CRC32C of each chunk (big-endian), the data.
const (
	dataTransferVersion = 28
	opWriteBlock        = 0x50
	opReadBlock         = 0x51

	dtSuccess       = 0
	dtError         = 1
	dtErrorChecksum = 2
	dtErrorInvalid  = 3
	dtUnsupported   = 7

	checksumNull   = 0
	checksumCRC32  = 1
	checksumCRC32C = 2

	stageAppend = 0
	stageCreate = 6

	bytesPerChecksum = 512
	readPacketSize   = 64 * 1024 // a multiple of bytesPerChecksum
	maxPacketSize    = 16 << 20
	capacity         = 1 << 40
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// datanode stores blocks as files: dir/finalized/blk_<id> once complete,
// dir/rbw/blk_<id> while being written.
type datanode struct {
	c   *Cluster
	dir string
}

func (dn *datanode) finalPath(id uint64) string {
	return filepath.Join(dn.dir, "finalized", "blk_"+strconv.FormatUint(id, 10))
}

func (dn *datanode) rbwPath(id uint64) string {
	return filepath.Join(dn.dir, "rbw", "blk_"+strconv.FormatUint(id, 10))
}

// finalizedLen returns the length of a finalized block.
func (dn *datanode) finalizedLen(id uint64) (int64, bool) {
	st, err := os.Stat(dn.finalPath(id))
	if err != nil {
		return 0, false
	}
	return st.Size(), true
}

// removeBlocks deletes the blocks of deleted files. As in HDFS, where the
// namenode tells datanodes on their next heartbeat, the replicas go a
// moment later: readers that located them just before still read them.
// Blocks being written go at once.
func (dn *datanode) removeBlocks(ids []uint64) {
	if len(ids) == 0 {
		return
	}
	for _, id := range ids {
		os.Remove(dn.rbwPath(id))
	}
	dn.c.deleteLater(func() {
		for _, id := range ids {
			os.Remove(dn.finalPath(id))
		}
	})
}

func (c *Cluster) serveXceiver(conn net.Conn, dn *datanode) {
	if err := dn.serve(conn); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.logf("datanode: connection from %s: %v", conn.RemoteAddr(), err)
	}
}

func (dn *datanode) serve(conn net.Conn) error {
	r := bufio.NewReader(conn)
	var hdr [3]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	if v := binary.BigEndian.Uint16(hdr[:2]); v != dataTransferVersion {
		return fmt.Errorf("Version Mismatch (Expected: %d, Received: %d )", dataTransferVersion, v)
	}
	body, err := readDelimited(r, r, 1<<20)
	if err != nil {
		return err
	}
	op, err := parse(body)
	if err != nil {
		dn.respond(conn, msg(nil).uint(1, dtErrorInvalid).str(5, "malformed op: "+err.Error()))
		return err
	}
	switch hdr[2] {
	case opWriteBlock:
		return dn.writeBlock(conn, r, op)
	case opReadBlock:
		return dn.readBlock(conn, r, op)
	default:
		dn.respond(conn, msg(nil).uint(1, dtUnsupported).str(5, fmt.Sprintf("op %#x is not supported by hdfstest", hdr[2])))
		return fmt.Errorf("unsupported op %#x", hdr[2])
	}
}

func (dn *datanode) respond(w io.Writer, m msg) error {
	_, err := w.Write(delimited(m))
	return err
}

// opBlock extracts the block of an op's ClientOperationHeaderProto.
func (dn *datanode) opBlock(op fields) (blockRef, string, error) {
	h, err := op.msg(1)
	if err == nil && h == nil {
		err = errors.New("no header")
	}
	var base, b fields
	if err == nil {
		base, err = h.msg(1)
	}
	if err == nil {
		b, err = base.msg(1)
	}
	if err == nil {
		err = b.require("ExtendedBlockProto", 1, 2, 3)
	}
	if err != nil {
		return blockRef{}, "", err
	}
	ref, pool := parseBlock(b)
	if pool != dn.c.poolID {
		return ref, "", fmt.Errorf("block pool %s is not served here (%s)", pool, dn.c.poolID)
	}
	return ref, h.str(2), nil
}

func (dn *datanode) writeBlock(conn net.Conn, r *bufio.Reader, op fields) error {
	fail := func(status uint64, format string, args ...any) error {
		err := fmt.Errorf(format, args...)
		dn.respond(conn, msg(nil).uint(1, status).str(2, "").str(5, err.Error()))
		return err
	}
	b, _, err := dn.opBlock(op)
	if err != nil {
		return fail(dtErrorInvalid, "writeBlock: %v", err)
	}
	if err := op.require("OpWriteBlockProto", 4, 5, 6, 7, 8, 9); err != nil {
		return fail(dtErrorInvalid, "%v", err)
	}
	if op.has(2) {
		return fail(dtError, "writeBlock: hdfstest has a single datanode; pipelines of several are not supported")
	}
	cs, err := op.msg(9)
	if err != nil {
		return fail(dtErrorInvalid, "writeBlock: bad checksum: %v", err)
	}
	csType, bpc := cs.uint(1), int(cs.uint(2))
	if csType > checksumCRC32C || bpc <= 0 || bpc > 1<<20 {
		return fail(dtErrorInvalid, "writeBlock: unsupported checksum type %d with %d bytes per checksum", csType, bpc)
	}

	var f *os.File
	var offset int64
	switch stage := op.uint(4); stage {
	case stageCreate:
		if !dn.c.blockUnderConstruction(b.ID) {
			return fail(dtErrorInvalid, "writeBlock: blk_%d_%d is not allocated to a file under construction", b.ID, b.GenStamp)
		}
		f, err = os.Create(dn.rbwPath(b.ID))
	case stageAppend:
		if !dn.c.blockUnderConstruction(b.ID) {
			return fail(dtErrorInvalid, "writeBlock: blk_%d_%d is not open for append", b.ID, b.GenStamp)
		}
		l, ok := dn.finalizedLen(b.ID)
		if !ok || uint64(l) != op.uint(6) {
			return fail(dtErrorInvalid, "writeBlock: append to blk_%d: replica has %d bytes, client expects %d", b.ID, l, op.uint(6))
		}
		if err = os.Rename(dn.finalPath(b.ID), dn.rbwPath(b.ID)); err == nil {
			f, err = os.OpenFile(dn.rbwPath(b.ID), os.O_WRONLY|os.O_APPEND, 0)
		}
		offset = l
	default:
		return fail(dtUnsupported, "writeBlock: block construction stage %d is not supported by hdfstest", stage)
	}
	if err != nil {
		return fail(dtError, "writeBlock: %v", err)
	}
	finalized := false
	defer func() {
		f.Close()
		if !finalized {
			os.Remove(dn.rbwPath(b.ID))
		}
	}()
	if err := dn.respond(conn, msg(nil).uint(1, dtSuccess).str(2, "")); err != nil {
		return err
	}

	w := bufio.NewWriter(conn)
	ack := func(seqno int64, status uint64) error {
		m := msg(nil).sint(1, seqno).uint(2, status).uint(3, 0).bytes(4, []byte{byte(status)})
		if err := dn.respond(w, m); err != nil {
			return err
		}
		return w.Flush()
	}
	for {
		h, sums, data, err := readPacket(r)
		if err != nil {
			return fmt.Errorf("writeBlock blk_%d: %w", b.ID, noEOF(err))
		}
		seqno, off, last := int64(h.uint(2)), int64(h.uint(1)), h.bool(3)
		if seqno == -1 { // heartbeat
			if err := ack(seqno, dtSuccess); err != nil {
				return err
			}
			continue
		}
		if off != offset {
			ack(seqno, dtErrorInvalid)
			return fmt.Errorf("writeBlock blk_%d: packet at offset %d, expected %d", b.ID, off, offset)
		}
		if err := verifyChunks(csType, bpc, sums, data); err != nil {
			ack(seqno, dtErrorChecksum)
			return fmt.Errorf("writeBlock blk_%d at %d: %w", b.ID, off, err)
		}
		if _, err := f.Write(data); err != nil {
			ack(seqno, dtError)
			return err
		}
		offset += int64(len(data))
		if h.bool(5) { // syncBlock
			if err := f.Sync(); err != nil {
				ack(seqno, dtError)
				return err
			}
		}
		if last {
			err := f.Close()
			if err == nil {
				err = os.Rename(dn.rbwPath(b.ID), dn.finalPath(b.ID))
			}
			if err != nil {
				ack(seqno, dtError)
				return err
			}
			finalized = true
			if err := ack(seqno, dtSuccess); err != nil {
				return err
			}
			drain(conn, r)
			return nil
		}
		if err := ack(seqno, dtSuccess); err != nil {
			return err
		}
	}
}

// readPacket reads one packet: its header fields, checksums and data.
func readPacket(r *bufio.Reader) (fields, []byte, []byte, error) {
	var lens [6]byte
	if _, err := io.ReadFull(r, lens[:]); err != nil {
		return nil, nil, nil, err
	}
	plen := int(binary.BigEndian.Uint32(lens[:4]))
	hlen := int(binary.BigEndian.Uint16(lens[4:]))
	if plen < 4 || plen > maxPacketSize {
		return nil, nil, nil, fmt.Errorf("bad packet length %d", plen)
	}
	buf := make([]byte, hlen+plen-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, nil, nil, noEOF(err)
	}
	h, err := parse(buf[:hlen])
	if err == nil {
		err = h.require("PacketHeaderProto", 1, 2, 3, 4)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	dataLen := int(int32(uint32(h.uint(4))))
	rest := buf[hlen:]
	if dataLen < 0 || dataLen > len(rest) {
		return nil, nil, nil, fmt.Errorf("packet data length %d exceeds packet length %d", dataLen, plen)
	}
	return h, rest[:len(rest)-dataLen], rest[len(rest)-dataLen:], nil
}

func verifyChunks(csType uint64, bpc int, sums, data []byte) error {
	if csType == checksumNull {
		return nil
	}
	chunks := (len(data) + bpc - 1) / bpc
	if len(sums) != 4*chunks {
		return fmt.Errorf("%d bytes of checksums for %d chunks", len(sums), chunks)
	}
	tab := castagnoli
	if csType == checksumCRC32 {
		tab = crc32.IEEETable
	}
	for i := 0; i < chunks; i++ {
		chunk := data[i*bpc : min((i+1)*bpc, len(data))]
		if crc32.Checksum(chunk, tab) != binary.BigEndian.Uint32(sums[4*i:]) {
			return fmt.Errorf("checksum error in chunk %d", i)
		}
	}
	return nil
}

func (dn *datanode) readBlock(conn net.Conn, r *bufio.Reader, op fields) error {
	fail := func(status uint64, format string, args ...any) error {
		err := fmt.Errorf(format, args...)
		dn.respond(conn, msg(nil).uint(1, status).str(5, err.Error()))
		return err
	}
	b, _, err := dn.opBlock(op)
	if err != nil {
		return fail(dtErrorInvalid, "readBlock: %v", err)
	}
	if err := op.require("OpReadBlockProto", 2, 3); err != nil {
		return fail(dtErrorInvalid, "%v", err)
	}
	data, err := os.ReadFile(dn.finalPath(b.ID))
	if err != nil {
		return fail(dtError, "Replica not found for BP %s blk_%d_%d", dn.c.poolID, b.ID, b.GenStamp)
	}
	off, n := op.uint(2), op.uint(3)
	if off > uint64(len(data)) || n > uint64(len(data))-off {
		return fail(dtError, "Offset %d and length %d don't match block blk_%d ( blockLen %d )", off, n, b.ID, len(data))
	}
	start := off - off%bytesPerChecksum
	end := off + n
	sendSums := !op.has(4) || op.bool(4)
	csType := uint64(checksumCRC32C)
	if !sendSums {
		csType = checksumNull
	}
	info := msg(nil).msg(1, msg(nil).uint(1, csType).uint(2, bytesPerChecksum)).uint(2, start)
	w := bufio.NewWriterSize(conn, readPacketSize+4096)
	if err := dn.respond(w, msg(nil).uint(1, dtSuccess).msg(4, info)); err != nil {
		return err
	}
	seqno := int64(0)
	for pos := start; ; {
		chunk := data[pos:min(pos+readPacketSize, end)]
		last := len(chunk) == 0
		if err := writePacket(w, int64(pos), seqno, last, sendSums, chunk); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if last {
			break
		}
		pos += uint64(len(chunk))
		seqno++
	}
	// The client may send a ClientReadStatusProto; wait for it or for the
	// client to close, so that closing does not reset unread data.
	drain(conn, r)
	return nil
}

func writePacket(w io.Writer, off, seqno int64, last, sums bool, data []byte) error {
	h := msg(nil).sfixed64(1, off).sfixed64(2, seqno).bool(3, last).sfixed32(4, int32(len(data)))
	var cs []byte
	if sums {
		for i := 0; i < len(data); i += bytesPerChecksum {
			cs = binary.BigEndian.AppendUint32(cs, crc32.Checksum(data[i:min(i+bytesPerChecksum, len(data))], castagnoli))
		}
	}
	out := binary.BigEndian.AppendUint32(nil, uint32(4+len(cs)+len(data)))
	out = binary.BigEndian.AppendUint16(out, uint16(len(h)))
	out = append(append(out, h...), cs...)
	if _, err := w.Write(out); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// drain reads until the client closes the connection (or a minute passes).
func drain(conn net.Conn, r io.Reader) {
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	io.Copy(io.Discard, r)
}
