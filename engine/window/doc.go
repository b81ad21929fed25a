// Package window is the logic of Sluice's event-time window operator:
// tumbling, sliding and session windows over keyed rows, with incremental
// aggregates (count, sum, min, max, avg), watermarks, allowed lateness and a
// side output for late rows, and copy-on-write snapshots of its state by key
// group.
//
// It is a pure, single-goroutine core in the style of etcd's raft: the
// runtime's task goroutine calls Process with each input batch and
// AdvanceWatermark when event time moves; output batches come back through a
// callback. There are no goroutines, channels, files or clocks here — time is
// the watermark the caller passes in — so the operator is tested by stepping
// it by hand, and benchmarked without a runtime.
//
// What it is not: it does not route rows (the exchange hash-partitions by key
// group before rows arrive; a row of a key group outside Config.KeyGroups is
// a routing bug and panics), it does not decide when to snapshot or where the
// bytes go (the runtime calls Snapshot on a barrier and uploads what
// WriteKeyGroup returns from another goroutine), and it keeps no buffer of
// rows: each (key, window) holds one accumulator of fixed width.
//
// State layout, and why (the storage — tables, keys, the badger store,
// snapshot framing, deltas, timers — is engine/state's; what it means is
// this package's):
//
//   - Tumbling and sliding state is organised by pane: the time axis is cut
//     into panes of gcd(Size, Slide) ms (a tumbling window is one pane), a
//     row updates the one accumulator of (key, pane), and a window is the
//     merge of its Size/pane panes, computed per key when it fires (Flink's
//     and Arroyo's slicing). A short sorted list of live panes, each with
//     one table per owned key group; purging drops a pane whole.
//   - Session state is one table per key group; a key maps to a short linked
//     list of sessions. A min-heap of timers (rebuilt on restore, never
//     snapshotted) says which keys to look at when the watermark moves.
//   - A table (state.Table) is split into segments: small open-addressing
//     hash tables (no Go maps) from key to a record in a flat []uint64
//     slab, about state.SegMax keys each. Segments double in number as a table grows and are
//     held in chunks of 64 pointers. A single int64/timestamp key is stored
//     as int64; every other key shape uses an order-preserving byte encoding
//     of the key fields as a string.
//   - Snapshot copies one slice header per table (the table's chunk array)
//     and bumps a version. A segment, a chunk or a chunk array whose version
//     is not newer than the newest live snapshot is copied before it is
//     written (copy-on-write), so a snapshot never sees later writes and the
//     pause does not grow with the state's size (tens of µs with 1 GB). The
//     price is paid by the first writes after it: each first write to a
//     segment copies that segment (two memcpys of ~2 KB) and its chunk.
//
// Semantics follow Flink: window [start, end) fires when the watermark
// reaches end-1; a row is late when every window it belongs to has
// end-1+AllowedLateness <= watermark; a row within lateness updates its
// window, which fires again with the updated result at the next
// AdvanceWatermark. Sessions merge windows [ts, ts+Gap) that overlap or
// touch. Output is ordered by window end, then key.
package window
