package state

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

type mapModel map[int]map[string]map[string]string

func (m mapModel) put(kg int, k, uk, v string) {
	if m[kg] == nil {
		m[kg] = map[string]map[string]string{}
	}
	if m[kg][k] == nil {
		m[kg][k] = map[string]string{}
	}
	m[kg][k][uk] = v
}

func (m mapModel) del(kg int, k, uk string) {
	delete(m[kg][k], uk)
	if len(m[kg][k]) == 0 {
		delete(m[kg], k)
	}
}

func (m mapModel) clone(kgs KeyGroupRange) mapModel {
	c := mapModel{}
	for kg, t := range m {
		for k, um := range t {
			for uk, v := range um {
				if kgs.Contains(kg) {
					c.put(kg, k, uk, v)
				}
			}
		}
	}
	return c
}

func (m mapModel) len() int {
	n := 0
	for _, t := range m {
		for _, um := range t {
			n += len(um)
		}
	}
	return n
}

var mapBackends = []struct {
	name string
	open func(t *testing.T, kgs KeyGroupRange) MapState
}{
	{"heap", func(t *testing.T, kgs KeyGroupRange) MapState { return NewHeapMap(kgs, "fp") }},
	{"badger", func(t *testing.T, kgs KeyGroupRange) MapState { return NewBadgerMap(openTestStore(t), kgs, "fp") }},
}

func mapFeed(r *rand.Rand, s MapState, m mapModel, kgs KeyGroupRange, n int) {
	for range n {
		kg := kgs.Start + r.IntN(kgs.End-kgs.Start)
		k, uk := fmt.Sprintf("k%d-%d", kg, r.IntN(30)), fmt.Sprintf("u%d", r.IntN(5))
		if r.IntN(8) == 0 {
			uk = "" // value state: one empty user key
		}
		if r.IntN(4) == 0 {
			s.Delete(kg, []byte(k), []byte(uk))
			m.del(kg, k, uk)
			continue
		}
		v := fmt.Sprintf("v%d", r.IntN(1e6))
		s.Put(kg, []byte(k), []byte(uk), []byte(v))
		m.put(kg, k, uk, v)
	}
}

func mapCheck(t *testing.T, what string, s MapState, m mapModel, kgs KeyGroupRange) {
	t.Helper()
	if s.Len() != m.len() {
		t.Fatalf("%s: %d entries, want %d", what, s.Len(), m.len())
	}
	for kg := kgs.Start; kg < kgs.End; kg++ {
		for k, um := range m[kg] {
			for uk, want := range um {
				if v, ok := s.Get(kg, []byte(k), []byte(uk)); !ok || string(v) != want {
					t.Fatalf("%s: %d/%q/%q = %q %v, want %q", what, kg, k, uk, v, ok, want)
				}
			}
			var uks []string
			s.Range(kg, []byte(k), func(uk, v []byte) bool {
				if um[string(uk)] != string(v) {
					t.Fatalf("%s: Range %d/%q/%q = %q, want %q", what, kg, k, uk, v, um[string(uk)])
				}
				uks = append(uks, string(uk))
				return true
			})
			if want := slices.Sorted(maps.Keys(um)); !slices.Equal(uks, want) {
				t.Fatalf("%s: Range %d/%q: user keys %q, want %q", what, kg, k, uks, want)
			}
		}
		if _, ok := s.Get(kg, []byte("absent"), nil); ok {
			t.Fatalf("%s: absent key found", what)
		}
	}
}

// TestMapState: put, get, delete, range; snapshot bytes equal across
// backends; restore at another parallelism; deltas on badger.
func TestMapState(t *testing.T) {
	all := KeyGroupRange{Start: 0, End: testMaxPar}
	for _, be := range mapBackends {
		t.Run(be.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, 8))
			s := be.open(t, all)
			defer s.Close()
			m := mapModel{}
			mapFeed(r, s, m, all, 5000)
			mapCheck(t, "after puts", s, m, all)
			snap := s.Snapshot()
			frozen := m.clone(all)
			mapFeed(r, s, m, all, 1000)
			data := writeAll(snap)
			snap.Release()
			for _, to := range mapBackends {
				for sub := range 3 {
					kgs := RangeForSubtask(sub, testMaxPar, 3)
					s2 := to.open(t, kgs)
					for kg, b := range data {
						if kgs.Contains(kg) {
							if err := s2.Restore(kg, b); err != nil {
								t.Fatal(err)
							}
						}
					}
					mapCheck(t, fmt.Sprintf("restored into %s %d/3", to.name, sub), s2, frozen.clone(kgs), kgs)
					sn := s2.Snapshot()
					for kg, b := range writeAll(sn) {
						if !bytes.Equal(b, data[kg]) {
							t.Fatalf("%s → %s: key group %d rewritten differently", be.name, to.name, kg)
						}
					}
					sn.Release()
					s2.Close()
				}
			}
		})
	}
	t.Run("incremental", func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 10))
		s := NewBadgerMap(openTestStore(t), all, "fp")
		defer s.Close()
		m := mapModel{}
		mapFeed(r, s, m, all, 5000)
		var chain []map[int][]byte
		base := int64(0)
		for id := int64(1); id <= 4; id++ {
			mapFeed(r, s, m, all, 100)
			sn := s.SnapshotIncremental(id, base)
			if sn.Base() == 0 {
				chain = nil
			}
			chain = append(chain, writeAll(sn))
			sn.Release()
			s.Confirm(id)
			base = id
		}
		if len(chain) < 2 {
			t.Fatal("no delta")
		}
		for sub := range 2 {
			kgs := RangeForSubtask(sub, testMaxPar, 2)
			s2 := NewBadgerMap(openTestStore(t), kgs, "fp")
			for i, data := range chain {
				for kg, b := range data {
					if !kgs.Contains(kg) {
						continue
					}
					restore := s2.Restore
					if i > 0 {
						restore = s2.RestoreDelta
					}
					if err := restore(kg, b); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := s2.FinishRestore(); err != nil {
				t.Fatal(err)
			}
			mapCheck(t, fmt.Sprintf("chain restored, subtask %d/2", sub), s2, m.clone(kgs), kgs)
			s2.Close()
		}
	})
}
