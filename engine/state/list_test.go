package state

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

// model is what a list state should hold: per key group and key, the
// entries in append order.
type model map[int]map[string][]mentry

type mentry struct {
	ts  int64
	row string
}

func (m model) append(kg int, key string, ts int64, row string) {
	if m[kg] == nil {
		m[kg] = map[string][]mentry{}
	}
	m[kg][key] = append(m[kg][key], mentry{ts, row})
}

func (m model) expire(before int64) int {
	n := 0
	for _, t := range m {
		for k, es := range t {
			keep := slices.DeleteFunc(slices.Clone(es), func(e mentry) bool { return e.ts < before })
			n += len(es) - len(keep)
			if len(keep) == 0 {
				delete(t, k)
			} else {
				t[k] = keep
			}
		}
	}
	return n
}

func (m model) len() int {
	n := 0
	for _, t := range m {
		for _, es := range t {
			n += len(es)
		}
	}
	return n
}

func (m model) clone() model {
	c := model{}
	for kg, t := range m {
		for k, es := range t {
			for _, e := range es {
				c.append(kg, k, e.ts, e.row)
			}
		}
	}
	return c
}

const testMaxPar = 16

// check compares every key of m (and a few absent ones) with l's lists.
func check(t *testing.T, what string, l ListState, m model, kgs KeyGroupRange) {
	t.Helper()
	if l.Len() != m.len() {
		t.Fatalf("%s: %d entries, want %d", what, l.Len(), m.len())
	}
	for kg := kgs.Start; kg < kgs.End; kg++ {
		for k, want := range m[kg] {
			var got []mentry
			l.Get(kg, []byte(k), func(ts int64, row []byte) bool {
				got = append(got, mentry{ts, string(row)})
				return true
			})
			if !slices.Equal(got, want) {
				t.Fatalf("%s: key group %d key %q: %v, want %v", what, kg, k, got, want)
			}
		}
		l.Get(kg, []byte("absent"), func(int64, []byte) bool {
			t.Fatalf("%s: absent key has entries", what)
			return false
		})
	}
}

type listBackend struct {
	name string
	open func(t *testing.T, kgs KeyGroupRange) ListState
}

var listBackends = []listBackend{
	{"heap", func(t *testing.T, kgs KeyGroupRange) ListState { return NewHeapList(kgs, "fp") }},
	{"badger", func(t *testing.T, kgs KeyGroupRange) ListState {
		st := openTestStore(t)
		return NewBadgerList(st, kgs, "fp")
	}},
}

func openTestStore(t *testing.T) *Store {
	t.Helper()
	saved := BadgerMem
	BadgerMem.MemTable, BadgerMem.BaseTable, BadgerMem.BlockCache, BadgerMem.IndexCache = 1<<20, 256<<10, 1<<20, 1<<20
	defer func() { BadgerMem = saved }()
	st, err := OpenStore(filepath.Join(t.TempDir(), "db"), BadgerMemory{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// feed appends n random entries of keys in all key groups to l and m.
func feed(r *rand.Rand, l ListState, m model, kgs KeyGroupRange, n int, tsBase int64) {
	for range n {
		kg := kgs.Start + r.IntN(kgs.End-kgs.Start)
		key := fmt.Sprintf("k%d-%d", kg, r.IntN(20))
		if r.IntN(10) == 0 {
			key += "\x00long"
		}
		ts := tsBase + r.Int64N(1000) // out of order
		row := fmt.Sprintf("row-%d-%d", ts, r.IntN(1e6))
		if r.IntN(20) == 0 {
			row = ""
		}
		l.Append(kg, []byte(key), ts, []byte(row))
		m.append(kg, key, ts, row)
	}
}

// noSeqs re-encodes list state bytes with positions for seqs.
func noSeqs(t *testing.T, b []byte) []byte {
	t.Helper()
	var out []byte
	var last string
	var pos uint64
	if err := decodeList(b, "fp", func(key []byte, ts int64, _ uint64, row []byte) {
		if string(key) != last {
			last, pos = string(key), 0
		}
		out = append(out, key...)
		out = appendListEntry(out, ts, pos, row)
		pos++
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeAll(s StateSnapshot) map[int][]byte {
	out := map[int][]byte{}
	for _, kg := range s.KeyGroups() {
		out[kg] = s.WriteKeyGroup(kg, nil)
	}
	return out
}

// TestListState: append, read back, expire, snapshot and restore at
// another parallelism and into the other backend, on both backends.
func TestListState(t *testing.T) {
	all := KeyGroupRange{Start: 0, End: testMaxPar}
	for _, be := range listBackends {
		t.Run(be.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			l := be.open(t, all)
			defer l.Close()
			m := model{}
			feed(r, l, m, all, 3000, 0)
			check(t, "after appends", l, m, all)

			// Early exit of Get.
			for k := range m[3] {
				n := 0
				l.Get(3, []byte(k), func(int64, []byte) bool { n++; return false })
				if n != 1 {
					t.Fatalf("Get went on after f returned false: %d calls", n)
				}
				break
			}

			if got, want := l.Expire(300), m.expire(300); got != want {
				t.Fatalf("Expire(300) dropped %d, want %d", got, want)
			}
			check(t, "after expiry", l, m, all)
			// Late entries below an earlier bound are still expired.
			feed(r, l, m, all, 500, -500)
			if got, want := l.Expire(400), m.expire(400); got != want {
				t.Fatalf("Expire(400) dropped %d, want %d", got, want)
			}
			check(t, "after late entries and expiry", l, m, all)

			snap := l.Snapshot()
			frozen := m.clone()
			// Writes after the snapshot are not in it.
			feed(r, l, m, all, 500, 1000)
			l.Expire(700)
			m.expire(700)
			data := writeAll(snap)
			if err := snap.Err(); err != nil {
				t.Fatal(err)
			}
			snap.Release()

			// Restore into both backends, at parallelism 3 (rescale).
			for _, to := range listBackends {
				for sub := range 3 {
					kgs := RangeForSubtask(sub, testMaxPar, 3)
					l2 := to.open(t, kgs)
					for kg, b := range data {
						if kgs.Contains(kg) {
							if err := l2.Restore(kg, b); err != nil {
								t.Fatal(err)
							}
						}
					}
					part := model{}
					for kg := kgs.Start; kg < kgs.End; kg++ {
						if frozen[kg] != nil {
							part[kg] = frozen[kg]
						}
					}
					check(t, fmt.Sprintf("restored into %s subtask %d/3", to.name, sub), l2, part, kgs)
					// Equal state writes equal bytes on one backend (and
					// equal entries across backends: only seqs differ).
					s2 := l2.Snapshot()
					for kg, b := range writeAll(s2) {
						if to.name == be.name && !bytes.Equal(b, data[kg]) || !bytes.Equal(noSeqs(t, b), noSeqs(t, data[kg])) {
							t.Fatalf("%s → %s: key group %d rewritten differently", be.name, to.name, kg)
						}
					}
					s2.Release()
					l2.Close()
				}
			}
			// A key group outside the range is refused, as are other bytes.
			l3 := be.open(t, KeyGroupRange{Start: 0, End: 1})
			if err := l3.Restore(5, data[5]); err == nil {
				t.Fatal("restored a key group outside the range")
			}
			for kg, b := range data {
				if kg == 0 {
					if err := l3.Restore(0, b[:len(b)-1]); err == nil {
						t.Fatal("restored truncated state")
					}
				}
			}
			l4 := NewHeapList(all, "other")
			if err := l4.Restore(5, data[5]); err == nil {
				t.Fatal("restored state of another fingerprint")
			}
		})
	}
}

// TestListStateConcurrentSnapshot: a heap snapshot is written on another
// goroutine while the lists change (run with -race).
func TestListStateConcurrentSnapshot(t *testing.T) {
	all := KeyGroupRange{Start: 0, End: testMaxPar}
	for _, be := range listBackends {
		t.Run(be.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 4))
			l := be.open(t, all)
			defer l.Close()
			m := model{}
			feed(r, l, m, all, 2000, 0)
			snap := l.Snapshot()
			want := writeAll(snap)
			snap2 := l.Snapshot()
			done := make(chan map[int][]byte)
			go func() {
				got := writeAll(snap2)
				snap2.Release()
				done <- got
			}()
			feed(r, l, m, all, 2000, 500)
			l.Expire(600)
			got := <-done
			snap.Release()
			for kg, b := range want {
				if !bytes.Equal(got[kg], b) {
					t.Fatalf("key group %d: the snapshot saw later writes", kg)
				}
			}
		})
	}
}

// TestListStateIncremental: on badger, a chain of deltas restored on its
// full snapshot gives the state of the last snapshot, also at another
// parallelism; the chain restarts with a full snapshot when a checkpoint
// is not confirmed.
func TestListStateIncremental(t *testing.T) {
	all := KeyGroupRange{Start: 0, End: testMaxPar}
	r := rand.New(rand.NewPCG(5, 6))
	l := NewBadgerList(openTestStore(t), all, "fp")
	defer l.Close()
	m := model{}
	var chain []map[int][]byte // full, then deltas
	var last model
	base := int64(0)
	feed(r, l, m, all, 6000, 0)
	for id := int64(1); id <= 5; id++ {
		feed(r, l, m, all, 100, id*300)
		l.Expire(id * 20)
		m.expire(id * 20)
		s := l.SnapshotIncremental(id, base)
		if id == 1 && s.Base() != 0 || id > 1 && s.Base() != base && s.Base() != 0 {
			t.Fatalf("checkpoint %d: base %d, want %d (or a full snapshot)", id, s.Base(), base)
		}
		data := writeAll(s)
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		s.Release()
		if s.Base() == 0 {
			chain = nil
		}
		chain = append(chain, data)
		l.Confirm(id)
		base = id
		last = m.clone()
	}
	if len(chain) < 3 {
		t.Fatalf("chain of %d snapshots, want a full one and deltas", len(chain))
	}
	for _, par := range []int{1, 2} {
		for sub := range par {
			kgs := RangeForSubtask(sub, testMaxPar, par)
			l2 := NewBadgerList(openTestStore(t), kgs, "fp")
			for i, data := range chain {
				for kg, b := range data {
					if !kgs.Contains(kg) {
						continue
					}
					var err error
					if i == 0 {
						err = l2.Restore(kg, b)
					} else {
						err = l2.RestoreDelta(kg, b)
					}
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := l2.FinishRestore(); err != nil {
				t.Fatal(err)
			}
			part := model{}
			for kg, t := range last.clone() {
				if kgs.Contains(kg) {
					part[kg] = t
				}
			}
			check(t, fmt.Sprintf("chain restored at parallelism %d subtask %d", par, sub), l2, part, kgs)
			// The restored state goes on: appends after restored seqs, expiry.
			feed(r, l2, part, kgs, 300, 3000)
			l2.Expire(1500)
			part.expire(1500)
			check(t, "restored state after more work", l2, part, kgs)
			l2.Close()
		}
	}
	// An unconfirmed checkpoint is no base: the next snapshot is full.
	s := l.SnapshotIncremental(6, base)
	s.Release()
	s = l.SnapshotIncremental(7, 6)
	if s.Base() != 0 {
		t.Fatalf("delta on an unconfirmed checkpoint (base %d)", s.Base())
	}
	s.Release()
	// The heap backend refuses deltas.
	if err := NewHeapList(all, "fp").RestoreDelta(0, chain[1][0]); err == nil {
		t.Fatal("heap list state restored a delta")
	}
}
