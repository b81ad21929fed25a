// Package dataplane is the TaskManagers' data plane: a runtime.Network that
// carries the channels whose consumer runs in another process.
//
// Each process runs one data server. Between two processes there is one TCP
// connection, dialled by the first Sender to the peer's address and shared by
// every channel between them in both directions (a peer that dialled us
// announced its data address in the handshake, so our Senders to it reuse
// that connection). Flow control is per channel, by credits as in-process: a
// sender holds one credit per message in flight, starting with
// runtime.ChannelCredits, and the receiving process sends them back in credit
// frames as its tasks call Grant, so a channel without credit stalls only its
// own sender.
//
// The wire: after a handshake (magic, version, the process's data address)
// each side writes frames of a 9-byte header — type, channel id, payload
// length — and a payload. A channel id is the sender's connection-local name
// of a channel: an open frame binds it to the ChannelKey once, so the attempt
// string is not repeated in every frame. Data frames carry a batch in the
// engine's row codec, integer columns packed (row.AppendBatchPacked: they
// decode several times faster than varints); watermarks, idleness, barriers
// and end of stream are frames of the same channel, so they stay in order
// with the data.
//
// Per connection a writer goroutine drains the frames the senders queued
// (encoded on the senders' goroutines) into one writev: batches from the
// buffers they were encoded in, short frames and credits copied together;
// a reader
// goroutine hands message frames to a few decoders, a channel always to the
// same one, which decode and call Receiver.Deliver. The receiving process
// must know a channel (Receiver.Schema) before its first message arrives:
// a channel unknown at its first message is dropped for good, as a zombie's.
//
// What it is not: the control plane (deployment, heartbeats, checkpoints go
// through the master's gRPC service), nor a retrying transport. A broken
// connection breaks its channels (Send fails) and is reported through
// Config.OnPeerLost; the job's failover restarts the tasks, which open new
// channels on a new connection.
//
// The transport was chosen by measurement against gRPC bidirectional streams
// (grpc_test.go, docs/benchmarks.md "Data plane (issue #9)").
package dataplane
