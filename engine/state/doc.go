// Package state is Sluice's keyed state, for any operator: key groups (the
// unit by which state moves between subtasks when parallelism changes),
// keys, and the two backends — the heap and a badger database — with their
// snapshots, full and incremental, restore and rescale.
//
// Like the operators that use it, it is pure and single-goroutine in the
// style of etcd's raft: no goroutines, channels, clocks or files beyond the
// badger database; time is event time the caller passes in. The one thing
// another goroutine may touch is a snapshot, which is written by key group
// while the operator goes on.
//
// What is here, by concept:
//
//   - Key groups (keygroup.go): hashing, key group of a hash, the range a
//     subtask owns. State is snapshotted per key group and restored into
//     whichever subtask owns it at the new parallelism: that is rescaling.
//   - Keys (keys.go): a Keyer turns a batch's key columns into keys — int64
//     for a single int64/timestamp field (the fast path), else an
//     order-preserving byte encoding as a string — with their key groups
//     and segment hashes, computed column by column.
//   - Value state on the heap (table.go): per key group a Table, a
//     copy-on-write hash table of fixed-width records ([]uint64 words: what
//     a window accumulator is), split into small Segments; snapshots by
//     version (COW, Registry, View) whose pause does not grow with the
//     state. Records of one key may be chained (a session list). Users
//     read Segments directly in their hot loops: the lookups inline.
//   - Badger (badger.go): the Store (options sized for bounded memory), a
//     Writer of write batches, the key layout by tag (value state, timers,
//     list state, expiry index) with the key group in every key, and a
//     KeyFilter (filter.go), a Bloom filter that spares reads of keys new
//     to a table.
//   - Snapshot framing (codec.go): per key group, a magic naming format and
//     version, the user's configuration fingerprint, then the body; Dec
//     reads it.
//   - Incremental snapshots (incremental.go, badger): a Chain of deltas on
//     confirmed checkpoints, each Delta the database entries changed since
//     its base, bucketed by key group; ApplyDelta restores one.
//   - Timers (timers.go): the heap backend's min-heap of event-time timers
//     per key; on badger timers are keys under TagTimer (TimerKey).
//   - List state (list.go, list_badger.go): per key an append-only list of
//     (event time, row bytes), read back in order, dropped by TTL; both
//     backends, full snapshots in one format, deltas on badger. Joins are
//     its first users.
//
// What is not here: what a user's state means. The window operator
// (engine/window) keeps its panes, sessions, accumulator layout and
// snapshot body format; it uses this package for everything stored.
package state
