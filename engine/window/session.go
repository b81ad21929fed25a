package window

import "github.com/sluice-stream/sluice/engine/row"

// Session record layout: header words, then the accumulator.
const (
	sessStart = iota
	sessEnd
	sessNext  // next session of the key, -1 at the end; next free record when free
	sessTimer // on a key's first session: the time of its pending timer
	sessAcc
)

type sessionCore[K keyT] struct {
	*base
	kx     keyer[K]
	stride int
}

func (c *sessionCore[K]) process(b, late *row.Batch) int { panic("todo") }
func (c *sessionCore[K]) advance(old int64)              {}
func (c *sessionCore[K]) snapshot() snapData {
	return &coreSnap[K]{l: c.l, kx: c.kx, stride: c.stride, session: true}
}
func (c *sessionCore[K]) restore(kg int, data []byte) error                        { return nil }
func (c *sessionCore[K]) size() (int, int64)                                       { return 0, 0 }
func appendSessions[K keyT](dst []byte, s *segment[K], r int32, stride int) []byte { return dst }
