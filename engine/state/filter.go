package state

import (
	"github.com/cespare/xxhash/v2"
)

// KeyFilter is a scalable Bloom filter of the keys a badger table (a
// window's pane, say) has in the database. A key it does not contain is
// certainly new to the table, so its first write skips the database read
// (a miss, which costs the most: both memtables and every level are
// searched). It only grows: it suits tables whose keys are not deleted one
// by one (panes are purged whole). About 10 bits per key, 1 % false
// positives (which just read).
type KeyFilter struct {
	blooms []bloom
}

type bloom struct {
	bits     []uint64
	n, limit int
}

const bloomProbes = 7

func newBloom(limit int) bloom {
	words := (limit*10 + 63) / 64
	return bloom{bits: make([]uint64, words), limit: limit}
}

func (b *bloom) probes(h uint64, f func(bit uint64) bool) bool {
	m := uint64(len(b.bits)) * 64
	h1, h2 := h, h>>33|1
	for i := uint64(0); i < bloomProbes; i++ {
		if !f((h1 + i*h2) % m) {
			return false
		}
	}
	return true
}

func (f *KeyFilter) Add(h uint64) {
	if len(f.blooms) == 0 || f.blooms[len(f.blooms)-1].n >= f.blooms[len(f.blooms)-1].limit {
		limit := 4096
		if len(f.blooms) > 0 {
			limit = f.blooms[len(f.blooms)-1].limit * 2
		}
		f.blooms = append(f.blooms, newBloom(limit))
	}
	b := &f.blooms[len(f.blooms)-1]
	b.probes(h, func(bit uint64) bool { b.bits[bit/64] |= 1 << (bit % 64); return true })
	b.n++
}

func (f *KeyFilter) MayContain(h uint64) bool {
	for i := range f.blooms {
		b := &f.blooms[i]
		if b.probes(h, func(bit uint64) bool { return b.bits[bit/64]&(1<<(bit%64)) != 0 }) {
			return true
		}
	}
	return false
}

// FilterHash hashes a key for KeyFilter.
func FilterHash[K Key](k K) uint64 {
	switch v := any(k).(type) {
	case int64:
		// splitmix64's finaliser: int keys are often dense.
		x := uint64(v) + 0x9e3779b97f4a7c15
		x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
		x = (x ^ x>>27) * 0x94d049bb133111eb
		return x ^ x>>31
	case string:
		return xxhash.Sum64String(v)
	}
	panic("state: unexpected key type")
}
