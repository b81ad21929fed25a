package state

// Timers is a min-heap of event-time timers of the heap backend: each
// names a key of a key group and a time. It does not dedupe: a user keeps
// one valid time per key in its own state and skips popped timers whose
// time is not that one (stale), which is cheaper than deleting from the
// heap when a key's time moves. It is rebuilt on restore, not snapshotted:
// the times are in the state it guards. (The badger backend keeps timers
// in the database under TagTimer: TimerKey.)
type Timers[K Key] []Timer[K]

// Timer is one entry of Timers.
type Timer[K Key] struct {
	T   int64
	Key K
	KG  int32 // the user's table index of the key group
}

// Push adds a timer (container/heap would box it).
func (h *Timers[K]) Push(x Timer[K]) {
	*h = append(*h, x)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if s[p].T <= s[i].T {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

// Due reports whether the earliest timer is at or before t.
func (h Timers[K]) Due(t int64) bool { return len(h) > 0 && h[0].T <= t }

// Pop removes and returns the earliest timer; the heap must not be empty.
func (h *Timers[K]) Pop() Timer[K] {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = Timer[K]{}
	s = s[:n]
	i := 0
	for {
		l, m := 2*i+1, i
		if l < n && s[l].T < s[m].T {
			m = l
		}
		if r := l + 1; r < n && s[r].T < s[m].T {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
