package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// The badger backend keeps keyed state in a badger database (an LSM tree
// on local disk) instead of heap tables, for state larger than memory. The
// database is an operator's own: created empty at open, removed at close,
// rebuilt from a checkpoint after a crash (so no fsync).
//
// Database keys start with a tag:
//
//	TagState  0x00 kg(2, BE) ...        value state (window panes, sessions)
//	TagTimer  0x01 time(8, ord) kg(2, BE) ...  event-time timers
//	TagList   0x02 kg(2, BE) ...        list state (list.go)
//	TagTTL    0x03 time(8, ord) kg(2, BE) ...  list state's expiry index
//	TagMap    0x04 kg(2, BE) ...        map state (mapstate.go)
//
// where ord is AppendOrd's order-preserving form, so that iterating a
// prefix visits entries in time or key order. KeyGroupOfDBKey reads the
// key group back, which is how incremental deltas are bucketed.
const (
	TagState = 0
	TagTimer = 1
	TagList  = 2
	TagTTL   = 3
	TagMap   = 4
)

// BadgerMemory bounds what a badger database keeps in memory, in bytes:
// two memtables of MemTable each, the block cache and the index cache.
// Zero fields take the defaults (BadgerMem).
type BadgerMemory struct {
	MemTable, BlockCache, IndexCache int64
}

// BadgerMem sizes the database's memory when BadgerMemory leaves it open:
// memtables (each also the size of a write-ahead log file created at
// open), base table, block cache and index cache. A var so tests can
// shrink it: opening a database allocates and maps its memtables.
var BadgerMem = DefaultBadgerMem

// DefaultBadgerMem is BadgerMem's value.
var DefaultBadgerMem = struct{ MemTable, BaseTable, BlockCache, IndexCache int64 }{32 << 20, 4 << 20, 64 << 20, 32 << 20}

// badgerOptions bounds memory: small memtables, small caches, values kept
// in the LSM tree (they are tens of bytes), no compression, no fsync (the
// database is rebuilt from a checkpoint after a crash), no conflict
// detection (one writer).
func badgerOptions(dir string, m BadgerMemory) badger.Options {
	mem := BadgerMem
	if m.MemTable > 0 {
		mem.MemTable = m.MemTable
		mem.BaseTable = max(m.MemTable/8, 256<<10)
	}
	if m.BlockCache > 0 {
		mem.BlockCache = m.BlockCache
	}
	if m.IndexCache > 0 {
		mem.IndexCache = m.IndexCache
	}
	return badger.DefaultOptions(dir).
		WithLogger(nil).
		WithSyncWrites(false).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithCompression(options.None).
		WithMemTableSize(mem.MemTable).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(mem.BaseTable).
		WithBaseLevelSize(64 << 20).
		WithBlockCacheSize(mem.BlockCache).
		WithIndexCacheSize(mem.IndexCache).
		WithValueThreshold(1 << 10).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithNumVersionsToKeep(1).
		WithCompactL0OnClose(false)
}

// Store is a badger database and a guard that keeps snapshot writers (on
// other goroutines) off it once it is closed.
type Store struct {
	DB     *badger.DB
	dir    string
	mu     sync.RWMutex
	closed bool
}

// OpenStore creates an empty database in dir (removing what a dead run
// left there).
func OpenStore(dir string, m BadgerMemory) (*Store, error) {
	if dir == "" {
		return nil, errors.New("state: the badger state backend needs a directory")
	}
	// The directory is this operator's: anything in it is a dead run's.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("state: badger state directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state: badger state directory: %w", err)
	}
	db, err := badger.Open(badgerOptions(dir, m))
	if err != nil {
		return nil, fmt.Errorf("state: opening badger state in %s: %w", dir, err)
	}
	return &Store{DB: db, dir: dir}, nil
}

// Close closes the database and removes its directory. Calling it twice
// is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.DB.Close()
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("state: closing badger state: %w", err)
	}
	return nil
}

// Use runs f with the database guaranteed open (from any goroutine); it
// returns ErrClosed if the store was closed.
func (s *Store) Use(f func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return f()
}

// ErrClosed: a snapshot was written after its operator closed the store.
var ErrClosed = errors.New("state: snapshot written after the operator closed")

// Size is the database's size on disk (badger's own figure is refreshed
// only every minute).
func (s *Store) Size() int64 {
	ents, _ := os.ReadDir(s.dir)
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// Fail reports a database error on the task goroutine: the runtime fails
// the task and restarts the job from its last checkpoint.
func Fail(what string, err error) {
	panic(fmt.Sprintf("state: badger state: %s: %v", what, err))
}

// Writer collects writes into WriteBatches; keys and values live in its
// buffers (Alloc) until Flush (a WriteBatch keeps references to them until
// it commits).
type Writer struct {
	St   *Store
	wb   *badger.WriteBatch
	bufs [][]byte
	cur  []byte
}

// Alloc returns an empty slice with room for n bytes, valid until Flush.
func (w *Writer) Alloc(n int) []byte {
	if cap(w.cur)-len(w.cur) < n {
		if w.cur != nil {
			w.bufs = append(w.bufs, w.cur)
		}
		w.cur = make([]byte, 0, max(n, 64<<10))
	}
	b := w.cur[len(w.cur) : len(w.cur)+n : len(w.cur)+n]
	w.cur = w.cur[:len(w.cur)+n]
	return b[:0]
}

func (w *Writer) batch() *badger.WriteBatch {
	if w.wb == nil {
		w.wb = w.St.DB.NewWriteBatch()
	}
	return w.wb
}

// Set writes k = v (both from Alloc, or kept alive until Flush).
func (w *Writer) Set(k, v []byte) {
	if err := w.batch().Set(k, v); err != nil {
		Fail("write", err)
	}
}

// Del deletes k.
func (w *Writer) Del(k []byte) {
	if err := w.batch().Delete(k); err != nil {
		Fail("delete", err)
	}
}

// Flush commits the writes.
func (w *Writer) Flush() {
	if w.wb != nil {
		if err := w.wb.Flush(); err != nil {
			Fail("write", err)
		}
		w.wb = nil
	}
	// Keep the largest buffer for the next batch.
	w.bufs = w.bufs[:0]
	w.cur = w.cur[:0]
}

// AppendOrd appends v as 8 bytes that sort as v does.
func AppendOrd(dst []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(v)^(1<<63))
}

// ReadOrd reads what AppendOrd wrote.
func ReadOrd(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

// AppendKeyBytes appends k's order-preserving encoding (an int64 key is
// AppendOrd's 8 bytes; a string key is its encoding already).
func AppendKeyBytes[K Key](dst []byte, k K) []byte {
	switch v := any(k).(type) {
	case int64:
		return AppendOrd(dst, v)
	case string:
		return append(dst, v...)
	}
	return dst
}

// KeyFromBytes reads what AppendKeyBytes wrote (the rest of a database key).
func KeyFromBytes[K Key](b []byte) (K, error) {
	var k K
	switch p := any(&k).(type) {
	case *int64:
		if len(b) != 8 {
			return k, errors.New("state: malformed int key in badger state")
		}
		*p = ReadOrd(b)
	case *string:
		*p = string(b)
	}
	return k, nil
}

// StateKey appends the prefix of key group kg's value state.
func StateKey(dst []byte, kg int) []byte {
	return binary.BigEndian.AppendUint16(append(dst, TagState), uint16(kg))
}

// TimerKey appends a timer's database key: TagTimer, t, kg, key.
func TimerKey[K Key](dst []byte, t int64, kg int, key K) []byte {
	dst = AppendOrd(append(dst, TagTimer), t)
	dst = binary.BigEndian.AppendUint16(dst, uint16(kg))
	return AppendKeyBytes(dst, key)
}

// KeyGroupOfDBKey reads the key group out of a database key, -1 if
// malformed.
func KeyGroupOfDBKey(k []byte) int {
	switch {
	case len(k) >= 3 && (k[0] == TagState || k[0] == TagList || k[0] == TagMap):
		return int(binary.BigEndian.Uint16(k[1:]))
	case len(k) >= 11 && (k[0] == TagTimer || k[0] == TagTTL):
		return int(binary.BigEndian.Uint16(k[9:]))
	}
	return -1
}

// AppendWords appends a record's words, 8 bytes little-endian each.
func AppendWords(dst []byte, ws []uint64) []byte {
	for _, w := range ws {
		dst = binary.LittleEndian.AppendUint64(dst, w)
	}
	return dst
}

// ReadWords reads len(dst) words that AppendWords wrote.
func ReadWords(dst []uint64, b []byte) {
	for i := range dst {
		dst[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
}

// Scan calls f for each live entry under prefix. The iterator is bounded
// by the prefix: badger skips deleted entries while looking ahead, and an
// unbounded iterator would walk the tombstones of purged state beyond it.
func Scan(txn *badger.Txn, prefix []byte, f func(item *badger.Item) error) error {
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.Valid(); it.Next() {
		if err := f(it.Item()); err != nil {
			return err
		}
	}
	return nil
}

// GetValue calls f with key's value and reports whether it exists.
func GetValue(txn *badger.Txn, key []byte, f func([]byte)) bool {
	item, err := txn.Get(key)
	if err == badger.ErrKeyNotFound {
		return false
	}
	if err != nil {
		Fail("read", err)
	}
	if err := item.Value(func(v []byte) error { f(v); return nil }); err != nil {
		Fail("read", err)
	}
	return true
}
