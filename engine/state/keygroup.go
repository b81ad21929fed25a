package state

import (
	"math"

	"github.com/cespare/xxhash/v2"
	"github.com/sluice-stream/sluice/engine/row"
)

// DefaultMaxParallelism is the number of key groups when a job names none.
const DefaultMaxParallelism = 128

// HashInt mixes an integer key (splitmix64's finaliser): stable across
// processes and versions, which key-group assignment must be.
func HashInt(v int64) uint64 {
	x := uint64(v)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// HashRow hashes the key columns of row i of b.
func HashRow(b *row.Batch, keyCols []int, i int) uint64 {
	var h uint64
	for n, c := range keyCols {
		col := &b.Cols[c]
		var fh uint64
		switch col.Type {
		case row.Int64, row.Timestamp:
			fh = HashInt(col.Ints[i])
		case row.Float64:
			fh = HashInt(int64(math.Float64bits(col.Floats[i])))
		case row.String:
			fh = xxhash.Sum64String(col.Strs[i])
		case row.Bool:
			if col.Bools[i] {
				fh = HashInt(1)
			} else {
				fh = HashInt(0)
			}
		case row.Bytes:
			fh = xxhash.Sum64(col.Bytes[i])
		}
		if n == 0 {
			h = fh
		} else {
			h = h*0x9e3779b97f4a7c15 ^ fh
		}
	}
	return h
}

// KeyGroup maps a key hash to its key group in [0, maxParallelism).
func KeyGroup(hash uint64, maxParallelism int) int {
	return int(hash % uint64(maxParallelism))
}

// SubtaskForKeyGroup returns the subtask that owns key group kg, as Flink
// does: contiguous ranges so that rescaling moves whole ranges.
func SubtaskForKeyGroup(kg, maxParallelism, parallelism int) int {
	return kg * parallelism / maxParallelism
}

// KeyGroupRange is the half-open range [Start, End) of key groups a subtask owns.
type KeyGroupRange struct{ Start, End int }

// Contains reports whether kg is in the range.
func (r KeyGroupRange) Contains(kg int) bool { return kg >= r.Start && kg < r.End }

// RangeForSubtask is the inverse of SubtaskForKeyGroup.
func RangeForSubtask(subtask, maxParallelism, parallelism int) KeyGroupRange {
	start := (subtask*maxParallelism + parallelism - 1) / parallelism
	end := ((subtask+1)*maxParallelism + parallelism - 1) / parallelism
	return KeyGroupRange{Start: start, End: end}
}
