package hdfstest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// Hadoop RPC, version 9, as org.apache.hadoop.ipc.Server speaks it:
//
//	connection header: "hrpc", version (9), service class, auth protocol (0 = none)
//	then frames:       uint32 length, varint-delimited messages
//	  connection context: RpcRequestHeaderProto (callId -3), IpcConnectionContextProto
//	  request:            RpcRequestHeaderProto, RequestHeaderProto, the method's request
//	  response:           RpcResponseHeaderProto[, the method's response when SUCCESS]
const (
	rpcVersion          = 9
	authNone            = 0
	authSASL            = 0xdf
	connectionContextID = -3
	pingCallID          = -4
	saslCallID          = -33
	protocolClass       = "org.apache.hadoop.hdfs.protocol.ClientProtocol"
	maxDataLength       = 64 << 20 // ipc.maximum.data.length

	rpcKindProtobuf = 2
	rpcOpClose      = 2

	statusSuccess = 0
	statusError   = 1
	statusFatal   = 2

	errApplication               = 1
	errNoSuchMethod              = 2
	errNoSuchProtocol            = 3
	fatalUnknown                 = 10
	fatalInvalidRPCHeader        = 12
	fatalDeserializing           = 13
	fatalVersionMismatch         = 14
	fatalUnauthorized            = 15
	invalidCallID         uint32 = 0xffffffff // -1
)

// rpcConn is one client connection to the namenode.
type rpcConn struct {
	nn   *namenode
	conn net.Conn
	r    *bufio.Reader
	call call
}

func (c *Cluster) serveRPC(conn net.Conn, nn *namenode) {
	rc := &rpcConn{nn: nn, conn: conn, r: bufio.NewReader(conn)}
	rc.call.host = conn.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(rc.call.host); err == nil {
		rc.call.host = h
	}
	if err := rc.serve(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.logf("namenode: connection from %s: %v", conn.RemoteAddr(), err)
	}
}

func (rc *rpcConn) serve() error {
	var hdr [7]byte
	if _, err := io.ReadFull(rc.r, hdr[:]); err != nil {
		return err
	}
	switch {
	case string(hdr[:4]) == "GET ":
		// What Hadoop answers to a browser pointed at the RPC port.
		fmt.Fprint(rc.conn, "HTTP/1.1 404 Not Found\r\nContent-type: text/plain\r\n\r\n"+
			"It looks like you are making an HTTP request to a Hadoop IPC port. "+
			"This is not the correct port for the web interface on this daemon.\r\n")
		return errors.New("HTTP request on the RPC port")
	case string(hdr[:4]) != "hrpc":
		return fmt.Errorf("bad connection header %q", hdr[:4])
	case hdr[4] != rpcVersion:
		rc.fatal(invalidCallID, nil, fatalVersionMismatch, excVersionMismatch,
			fmt.Sprintf("Server IPC version %d cannot communicate with client version %d", rpcVersion, hdr[4]))
		return fmt.Errorf("client RPC version %d", hdr[4])
	case hdr[6] == authSASL:
		rc.fatal(invalidCallID, nil, fatalUnauthorized, excAccessControl,
			"SASL authentication is not supported by hdfstest (simple authentication only)")
		return errors.New("SASL requested")
	case hdr[6] != authNone:
		rc.fatal(invalidCallID, nil, fatalUnknown, excIO, fmt.Sprintf("Unknown auth protocol:%d", hdr[6]))
		return fmt.Errorf("auth protocol %#x", hdr[6])
	}

	contextDone := false
	for {
		var lenBuf [4]byte
		if _, err := io.ReadFull(rc.r, lenBuf[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(lenBuf[:])
		if n > maxDataLength {
			rc.fatal(invalidCallID, nil, fatalUnknown, excIO,
				fmt.Sprintf("Requested data length %d is longer than maximum configured RPC length %d.", n, maxDataLength))
			return fmt.Errorf("frame of %d bytes", n)
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(rc.r, frame); err != nil {
			return noEOF(err)
		}
		parts, err := splitDelimited(frame)
		var hdr fields
		if err == nil && len(parts) > 0 {
			hdr, err = parse(parts[0])
		}
		if err == nil && len(parts) > 0 {
			err = hdr.require("RpcRequestHeaderProto", 3, 4)
		}
		if err != nil || len(parts) == 0 {
			rc.fatal(invalidCallID, nil, fatalInvalidRPCHeader, excServer, fmt.Sprintf("Invalid RPC request header: %v", err))
			return fmt.Errorf("bad request header: %v", err)
		}
		callID := int32(hdr.sint(3))
		clientID := hdr.bytes(4)
		if kind := hdr.uint(1); hdr.has(1) && kind != rpcKindProtobuf {
			rc.fatal(uint32(callID), clientID, fatalInvalidRPCHeader, excServer, fmt.Sprintf("Unknown rpc kind %d", kind))
			return fmt.Errorf("rpc kind %d", kind)
		}
		if hdr.uint(2) == rpcOpClose {
			return nil
		}

		switch {
		case callID == connectionContextID:
			if contextDone || len(parts) != 2 {
				rc.fatal(uint32(callID), clientID, fatalInvalidRPCHeader, excServer, "Connection context already processed or malformed")
				return errors.New("bad connection context")
			}
			if err := rc.connectionContext(parts[1]); err != nil {
				rc.fatal(uint32(callID), clientID, fatalUnauthorized, excAccessControl, err.Error())
				return err
			}
			contextDone = true
			continue
		case !contextDone:
			rc.fatal(uint32(callID), clientID, fatalInvalidRPCHeader, excServer, "Connection context not established")
			return errors.New("call before the connection context")
		case callID == pingCallID:
			continue
		case callID == saslCallID:
			rc.fatal(uint32(callID), clientID, fatalUnauthorized, excAccessControl, "SASL is not supported by hdfstest")
			return errors.New("SASL call")
		case callID < 0:
			rc.fatal(uint32(callID), clientID, fatalInvalidRPCHeader, excServer, fmt.Sprintf("Unknown special call ID %d", callID))
			return fmt.Errorf("call ID %d", callID)
		}
		if len(parts) != 3 {
			rc.fatal(uint32(callID), clientID, fatalDeserializing, excServer, fmt.Sprintf("want 3 messages in a request, got %d", len(parts)))
			return errors.New("malformed request")
		}
		rh, err := parse(parts[1])
		if err == nil {
			err = rh.require("RequestHeaderProto", 1, 2, 3)
		}
		if err != nil {
			rc.fatal(uint32(callID), clientID, fatalDeserializing, excServer, err.Error())
			return err
		}
		method, protocol := rh.str(1), rh.str(2)

		rsp := msg(nil).uint(1, uint64(uint32(callID))).uint(2, statusSuccess).uint(3, rpcVersion).bytes(7, clientID)
		if hdr.has(5) {
			rsp = rsp.sint(8, hdr.sint(5))
		}
		var body msg
		if protocol != protocolClass {
			err = &remoteError{class: excNoSuchProtocol, msg: "Unknown protocol: " + protocol}
		} else {
			body, err = rc.nn.serve(&rc.call, method, parts[2])
		}
		var out []byte
		if err != nil {
			re, ok := err.(*remoteError)
			if !ok {
				re = &remoteError{class: excIO, msg: err.Error()}
			}
			detail := uint64(errApplication)
			switch re.class {
			case excNoSuchMethod:
				detail = errNoSuchMethod
			case excNoSuchProtocol:
				detail = errNoSuchProtocol
			}
			rsp = msg(nil).uint(1, uint64(uint32(callID))).uint(2, statusError).uint(3, rpcVersion).
				str(4, re.class).str(5, re.msg).uint(6, detail).bytes(7, clientID)
			out = frameOf(rsp)
		} else {
			out = frameOf(rsp, body)
		}
		if _, err := rc.conn.Write(out); err != nil {
			return err
		}
	}
}

func (rc *rpcConn) connectionContext(b []byte) error {
	cc, err := parse(b)
	if err != nil {
		return fmt.Errorf("malformed IpcConnectionContextProto: %v", err)
	}
	ui, err := cc.msg(2)
	if err != nil {
		return fmt.Errorf("malformed UserInformationProto: %v", err)
	}
	rc.call.user = ui.str(1)
	if rc.call.user == "" {
		return errors.New("no effective user in the connection context")
	}
	if p := cc.str(3); cc.has(3) && p != protocolClass {
		return fmt.Errorf("Unknown protocol: %s", p)
	}
	return nil
}

// fatal sends a FATAL response; the caller then closes the connection.
func (rc *rpcConn) fatal(callID uint32, clientID []byte, detail uint64, class, message string) {
	h := msg(nil).uint(1, uint64(callID)).uint(2, statusFatal).uint(3, rpcVersion).
		str(4, class).str(5, message).uint(6, detail)
	if clientID != nil {
		h = h.bytes(7, clientID)
	}
	rc.conn.Write(frameOf(h))
}

// frameOf returns an RPC frame: a uint32 length and the messages, each
// varint-delimited.
func frameOf(msgs ...msg) []byte {
	var body bytes.Buffer
	for _, m := range msgs {
		body.Write(delimited(m))
	}
	out := binary.BigEndian.AppendUint32(nil, uint32(body.Len()))
	return append(out, body.Bytes()...)
}
