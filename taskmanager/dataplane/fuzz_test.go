package dataplane

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// FuzzFrames feeds arbitrary bytes to a connection's reading side: the
// handshake, the frame reader and the dispatch to the Receiver. Whatever
// comes, it returns an error or delivers well-formed messages, without a
// panic and without allocating beyond what arrived.
func FuzzFrames(f *testing.F) {
	key := runtime.ChannelKey{Attempt: "a", Task: 0, Channel: 0}
	hello := appendHello(nil, "peer:1", 0)
	stream := cat(hello, appendOpen(nil, 1, key))
	for _, m := range script(3, 4) {
		stream, _ = appendMessage(stream, 1, &m)
	}
	f.Add(stream)
	f.Add(cat(hello, appendOpen(nil, 2, runtime.ChannelKey{Attempt: "zombie"}), appendHeader(nil, frameIdle, 2, 0), appendHeader(nil, frameClose, 2, 0)))
	f.Add(cat(hello, appendCredit(nil, 1, 5), appendHeader(nil, frameEnd, 1, 0)))
	f.Add(cat(hello, appendHeader(nil, frameData, 1, 1<<30)))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		recv := newTestReceiver()
		inbox := recv.add(key)
		n := &Network{cfg: Config{Receiver: recv, Logger: quiet, MaxFrame: 1 << 20}, log: quiet, routes: map[runtime.ChannelKey]route{}}
		c := newConn(n, nil, "fuzz", false)
		br := bufio.NewReader(bytes.NewReader(data))
		if _, _, err := readHello(br); err != nil {
			return
		}
		for {
			h, p, err := readFrame(br, nil, n.cfg.MaxFrame)
			if err != nil {
				break
			}
			if cap(p) > 2*len(data)+64<<10 {
				t.Fatalf("frame buffer of %d bytes for %d bytes of input", cap(p), len(data))
			}
			if err := c.handle(h, &p); err != nil {
				break
			}
			for len(inbox) > 0 { // the task processes what arrived
				if m := <-inbox; m.Batch != nil {
					if m.Batch.Schema != testSchema || m.Batch.Len != m.Batch.Cols[0].Len() {
						t.Fatalf("malformed batch delivered")
					}
					m.Batch.Release()
				}
			}
		}
	})
}
