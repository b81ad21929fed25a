// Package checkpoint stores checkpoints and savepoints on an engine/fs
// filesystem and finds, verifies and prunes them. It does not decide when to
// checkpoint (the coordinator does) nor what a state file holds (operators
// do): a state file is opaque bytes cut into sections, one per key group of
// keyed state and one per list entry of operator state, so that a job with
// another parallelism can pick the sections it owns.
//
// Layout:
//
//	<checkpoints>/chk-<id>/<node>-<subtask>   one state file per subtask with state
//	<checkpoints>/chk-<id>/_metadata          written last, atomically
//	<savepoints>/savepoint-<id>-<6 hex>/…     the same format
//
// A checkpoint is complete when its _metadata exists. _metadata is indented
// JSON followed by one line "crc32c <8 hex digits>" (CRC-32C of everything
// before that line), and it records the size and CRC-32C of every state
// file, so that a torn or corrupted checkpoint is detected and skipped.
// State files are written and read as streams (stream.go): each section
// also records its own CRC-32C, so that a restore reads and checks only
// the sections it needs.
package checkpoint

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sluice-stream/sluice/engine/fs"
)

// MetadataVersion is the version of the metadata format this package writes.
const MetadataVersion = 1

// MetadataFile is the name of the file that completes a checkpoint.
const MetadataFile = "_metadata"

// ErrCorrupt is wrapped by errors about checkpoints that fail verification.
var ErrCorrupt = errors.New("corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Metadata describes a completed checkpoint or savepoint.
type Metadata struct {
	Version        int    `json:"version"`
	JobName        string `json:"jobName"`
	CheckpointID   int64  `json:"checkpointId"`
	Savepoint      bool   `json:"savepoint"`
	TimestampMs    int64  `json:"timestampMs"`
	MaxParallelism int    `json:"maxParallelism"`
	// Epoch is the fencing epoch of the master that committed it (0 in a
	// one-process run): see Lineage.
	Epoch int64 `json:"epoch,omitempty"`
	// Nodes holds one entry per node that has state.
	Nodes []NodeState `json:"nodes"`
}

// NodeState is a node's state: one entry per subtask that has state.
type NodeState struct {
	NodeID      string         `json:"nodeId"`
	Parallelism int            `json:"parallelism"`
	Subtasks    []SubtaskState `json:"subtasks"`
}

// SubtaskState locates a subtask's state file and its sections.
type SubtaskState struct {
	Subtask int `json:"subtask"`
	// File is relative to the checkpoint directory, or to Dir when set.
	File string `json:"file"`
	// Dir is the absolute directory of File on the checkpoint's filesystem
	// when it is not the checkpoint directory (entropy injection).
	Dir    string `json:"dir,omitempty"`
	Size   int64  `json:"size"`
	CRC32C uint32 `json:"crc32c"`
	// KeyGroups holds keyed state, one section per key group, ascending.
	KeyGroups []Section `json:"keyGroups,omitempty"`
	// OperatorState holds the list entries of non-keyed state (source
	// positions, sinks' pending files); their KeyGroup is unused.
	OperatorState []Section `json:"operatorState,omitempty"`
	// SectionCRCs: each section records its own CRC-32C, so that a restore
	// that reads some sections checks them without reading the whole file
	// (files written before streamed state files have only CRC32C).
	SectionCRCs bool `json:"sectionCrc32c,omitempty"`
	// Delta marks an incremental checkpoint's state: KeyGroups hold the
	// changes since the state in Chain, which a restore reads first.
	Delta bool `json:"delta,omitempty"`
	// Chain lists the earlier state files (of earlier checkpoints) that a
	// delta builds on, oldest first: a full snapshot, then deltas. Prune
	// keeps the checkpoints they belong to while a retained one refers to
	// them.
	Chain []StateFile `json:"chain,omitempty"`
}

// StateFile is the keyed state of a state file written by an earlier
// checkpoint, referred to by an incremental checkpoint.
type StateFile struct {
	CheckpointID int64 `json:"checkpointId"`
	// Dir is the file's absolute directory on the checkpoint filesystem.
	Dir       string    `json:"dir"`
	File      string    `json:"file"`
	Size      int64     `json:"size"`
	CRC32C    uint32    `json:"crc32c"`
	KeyGroups []Section `json:"keyGroups,omitempty"`
	Delta     bool      `json:"delta,omitempty"`
	// SectionCRCs as in SubtaskState.
	SectionCRCs bool `json:"sectionCrc32c,omitempty"`
}

// Located is the file as a SubtaskState, for ReadState.
func (f StateFile) Located() SubtaskState {
	return SubtaskState{File: f.File, Dir: f.Dir, Size: f.Size, CRC32C: f.CRC32C, KeyGroups: f.KeyGroups, SectionCRCs: f.SectionCRCs}
}

// Ref describes the keyed state of st, written for checkpoint id, for the
// Chain of a later incremental checkpoint.
func (s *Storage) Ref(id int64, st SubtaskState) StateFile {
	dir := st.Dir
	if dir == "" {
		dir = fs.Join(s.base, chkName(id))
	}
	return StateFile{CheckpointID: id, Dir: dir, File: st.File, Size: st.Size, CRC32C: st.CRC32C, KeyGroups: st.KeyGroups, Delta: st.Delta, SectionCRCs: st.SectionCRCs}
}

// Files lists the state files st's state is read from: its chain, then
// its own file.
func (st SubtaskState) Files() []SubtaskState {
	out := make([]SubtaskState, 0, len(st.Chain)+1)
	for _, f := range st.Chain {
		out = append(out, f.Located())
	}
	return append(out, st)
}

// Section is a byte range of a state file. A key group may have several
// sections (written in parts), read in the order listed.
type Section struct {
	KeyGroup int   `json:"keyGroup"`
	Offset   int64 `json:"offset"`
	Length   int64 `json:"length"`
	// CRC32C of the section's bytes, when the file has SectionCRCs.
	CRC32C uint32 `json:"crc32c,omitempty"`
}

// Writer builds one subtask's state file in memory, for WriteState (the
// runtime streams its state files with CreateState instead). Keyed state is written
// either with AddKeyGroup or with BeginKeyGroup followed by Write calls;
// operator state with AddOperatorState. A Writer is not safe for concurrent
// use and is done after Finish.
type Writer struct {
	buf       []byte
	keyGroups []Section
	opState   []Section
	open      bool // Write appends to the last key group
}

// NewWriter returns an empty Writer.
func NewWriter() *Writer { return &Writer{} }

// BeginKeyGroup starts the section of key group kg; Write appends to it.
func (w *Writer) BeginKeyGroup(kg int) {
	w.keyGroups = append(w.keyGroups, Section{KeyGroup: kg, Offset: int64(len(w.buf))})
	w.open = true
}

// Write appends to the key group begun last.
func (w *Writer) Write(p []byte) (int, error) {
	if !w.open {
		return 0, errors.New("checkpoint: Writer.Write outside a key group (call BeginKeyGroup first)")
	}
	w.buf = append(w.buf, p...)
	w.keyGroups[len(w.keyGroups)-1].Length += int64(len(p))
	return len(p), nil
}

// AddKeyGroup adds the state of key group kg. Adding a key group twice
// concatenates the parts.
func (w *Writer) AddKeyGroup(kg int, data []byte) {
	w.BeginKeyGroup(kg)
	w.Write(data)
	w.open = false
}

// AddOperatorState adds one list entry of operator state.
func (w *Writer) AddOperatorState(data []byte) {
	w.open = false
	w.opState = append(w.opState, Section{Offset: int64(len(w.buf)), Length: int64(len(data))})
	w.buf = append(w.buf, data...)
}

// Finish returns the file's bytes and its sections (File and CRC32C are
// filled in by Storage.WriteState). Key group sections come out ascending,
// one per key group.
func (w *Writer) Finish() ([]byte, SubtaskState) {
	w.open = false
	kgs := slices.Clone(w.keyGroups)
	slices.SortStableFunc(kgs, func(a, b Section) int { return a.KeyGroup - b.KeyGroup })
	dup := false
	for i := 1; i < len(kgs); i++ {
		dup = dup || kgs[i].KeyGroup == kgs[i-1].KeyGroup
	}
	data, ops := w.buf, w.opState
	if dup {
		// Rare: lay the parts of each key group out contiguously.
		data = make([]byte, 0, len(w.buf))
		var merged []Section
		for _, s := range kgs {
			if n := len(merged); n > 0 && merged[n-1].KeyGroup == s.KeyGroup {
				merged[n-1].Length += s.Length
			} else {
				merged = append(merged, Section{KeyGroup: s.KeyGroup, Offset: int64(len(data)), Length: s.Length})
			}
			data = append(data, w.buf[s.Offset:s.Offset+s.Length]...)
		}
		kgs = merged
		ops = make([]Section, len(w.opState))
		for i, s := range w.opState {
			ops[i] = Section{Offset: int64(len(data)), Length: s.Length}
			data = append(data, w.buf[s.Offset:s.Offset+s.Length]...)
		}
	}
	return data, SubtaskState{Size: int64(len(data)), KeyGroups: kgs, OperatorState: ops}
}

// Storage reads and writes checkpoints and savepoints. It is safe for
// concurrent use: subtasks upload their state files in parallel.
type Storage struct {
	fs     fs.FS
	base   string // checkpoint directory within fs
	spFS   fs.FS
	spBase string

	// Log receives the warnings about skipped checkpoints; nil means
	// slog.Default().
	Log *slog.Logger

	mu         sync.Mutex
	savepoints map[int64]string // savepoint id → its directory, while in progress

	entropy *entropy // nil: no entropy injection

	lineage func(ctx context.Context) (Lineage, error) // nil: every checkpoint counts
}

// Open returns the storage for checkpoints under checkpointURI and
// savepoints under savepointURI (default <checkpointURI>/savepoints). Both
// are URIs that engine/fs.Open accepts. Nothing is created until written.
func Open(checkpointURI, savepointURI string, opts ...Option) (*Storage, error) {
	if checkpointURI == "" {
		return nil, errors.New("no checkpoint storage URI")
	}
	if savepointURI == "" {
		savepointURI = strings.TrimRight(checkpointURI, "/") + "/savepoints"
	}
	cfs, base, err := fs.Open(checkpointURI)
	if err != nil {
		return nil, err
	}
	sfs, spBase, err := fs.Open(savepointURI)
	if err != nil {
		return nil, fmt.Errorf("savepoints: %w", err)
	}
	s := &Storage{fs: cfs, base: base, spFS: sfs, spBase: spBase, savepoints: map[int64]string{}}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// CheckpointDir is the URI under which chk-<id> directories are written.
func (s *Storage) CheckpointDir() string { return fs.URI(s.fs, s.base) }

// SavepointDir is the URI under which savepoint directories are written.
func (s *Storage) SavepointDir() string { return fs.URI(s.spFS, s.spBase) }

func (s *Storage) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func chkName(id int64) string { return "chk-" + strconv.FormatInt(id, 10) }

// parseID parses the decimal id that starts name after prefix and ends at
// the end of name or at '-'. It returns -1 when name does not match.
func parseID(name, prefix string, suffix bool) int64 {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return -1
	}
	digits := rest
	if suffix {
		var found bool
		if digits, _, found = strings.Cut(rest, "-"); !found {
			return -1
		}
	}
	if digits == "" || digits[0] < '1' || digits[0] > '9' {
		return -1
	}
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return -1
		}
	}
	id, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return -1
	}
	return id
}

// idFromDir returns the id a checkpoint or savepoint directory is named
// after, or -1.
func idFromDir(dir string) int64 {
	base := path.Base(dir)
	if id := parseID(base, "chk-", false); id > 0 {
		return id
	}
	return parseID(base, "savepoint-", true)
}

// attemptDir returns the directory of checkpoint or savepoint id, choosing
// the savepoint's random name on first use.
func (s *Storage) attemptDir(id int64, savepoint bool) (fs.FS, string, error) {
	if !savepoint {
		return s.fs, fs.Join(s.base, chkName(id)), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.savepoints[id]; ok {
		return s.spFS, d, nil
	}
	var r [3]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, "", err
	}
	d := fs.Join(s.spBase, fmt.Sprintf("savepoint-%d-%s", id, hex.EncodeToString(r[:])))
	s.savepoints[id] = d
	return s.spFS, d, nil
}

// StateFileName is the name of node's subtask's state file in a
// checkpoint directory (the runtime names its local copies the same).
func StateFileName(node string, subtask int) string { return stateFileName(node, subtask) }

// stateFileName is "<node>-<subtask>" with the node id escaped so that any
// id makes one safe file name and two ids never make the same one.
func stateFileName(node string, subtask int) string {
	var b strings.Builder
	for i := 0; i < len(node); i++ {
		c := node[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' && i > 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	b.WriteByte('-')
	b.WriteString(strconv.Itoa(subtask))
	return b.String()
}

func checkSections(secs []Section, size int64, maxPar int, keyed bool) error {
	for _, sec := range secs {
		if sec.Offset < 0 || sec.Length < 0 || sec.Offset > size-sec.Length {
			return fmt.Errorf("section [%d, +%d) is outside the file's %d bytes", sec.Offset, sec.Length, size)
		}
		if keyed && (sec.KeyGroup < 0 || maxPar > 0 && sec.KeyGroup >= maxPar) {
			return fmt.Errorf("key group %d is outside [0, %d)", sec.KeyGroup, maxPar)
		}
	}
	return nil
}

// WriteState writes a subtask's state file of checkpoint (or savepoint) id
// and returns st with Subtask, File, Size and CRC32C filled in.
func (s *Storage) WriteState(ctx context.Context, id int64, savepoint bool, node string, subtask int, data []byte, st SubtaskState) (SubtaskState, error) {
	if node == "" || subtask < 0 || id <= 0 {
		return st, fmt.Errorf("checkpoint %d: bad state file for node %q subtask %d", id, node, subtask)
	}
	if err := checkSections(st.KeyGroups, int64(len(data)), 0, true); err != nil {
		return st, fmt.Errorf("state of %s#%d: %w", node, subtask, err)
	}
	if err := checkSections(st.OperatorState, int64(len(data)), 0, false); err != nil {
		return st, fmt.Errorf("state of %s#%d: %w", node, subtask, err)
	}
	fsys, dir, err := s.attemptDir(id, savepoint)
	if err != nil {
		return st, err
	}
	st.Subtask = subtask
	st.File = stateFileName(node, subtask)
	st.Size = int64(len(data))
	st.CRC32C = crc32.Checksum(data, castagnoli)
	st.KeyGroups, st.OperatorState = sectionCRCs(st.KeyGroups, data), sectionCRCs(st.OperatorState, data)
	st.SectionCRCs = true
	if s.entropy != nil && !savepoint {
		if dir, err = s.entropy.dataDir(id); err != nil {
			return st, err
		}
		st.Dir = dir
	}
	if err := fsys.WriteFile(ctx, fs.Join(dir, st.File), data); err != nil {
		return st, fmt.Errorf("writing state of %s#%d: %w", node, subtask, err)
	}
	return st, nil
}

func sectionCRCs(secs []Section, data []byte) []Section {
	out := slices.Clone(secs)
	for i, sec := range out {
		out[i].CRC32C = crc32.Checksum(data[sec.Offset:sec.Offset+sec.Length], castagnoli)
	}
	return out
}

// validate checks what metadata must satisfy to be restorable.
func validate(md *Metadata) error {
	if md.Version < 1 || md.Version > MetadataVersion {
		return fmt.Errorf("metadata version %d is not supported (this build reads 1 to %d)", md.Version, MetadataVersion)
	}
	if md.CheckpointID <= 0 {
		return fmt.Errorf("checkpoint id %d", md.CheckpointID)
	}
	if md.MaxParallelism <= 0 {
		return fmt.Errorf("max parallelism %d", md.MaxParallelism)
	}
	nodes := map[string]bool{}
	files := map[string]bool{}
	for _, n := range md.Nodes {
		if n.NodeID == "" || nodes[n.NodeID] {
			return fmt.Errorf("node id %q is empty or repeated", n.NodeID)
		}
		nodes[n.NodeID] = true
		if n.Parallelism <= 0 {
			return fmt.Errorf("node %s: parallelism %d", n.NodeID, n.Parallelism)
		}
		subs := map[int]bool{}
		for _, st := range n.Subtasks {
			if st.Subtask < 0 || st.Subtask >= n.Parallelism || subs[st.Subtask] {
				return fmt.Errorf("node %s: subtask %d is out of range or repeated", n.NodeID, st.Subtask)
			}
			subs[st.Subtask] = true
			if st.File == "" || st.File == "." || st.File == ".." || st.File == MetadataFile || strings.ContainsAny(st.File, `/\`) || files[st.Dir+"/"+st.File] {
				return fmt.Errorf("node %s#%d: bad or repeated file name %q", n.NodeID, st.Subtask, st.File)
			}
			if st.Dir != "" && (!path.IsAbs(st.Dir) || path.Clean(st.Dir) != st.Dir || strings.Contains(st.Dir, "..")) {
				return fmt.Errorf("node %s#%d: bad state directory %q", n.NodeID, st.Subtask, st.Dir)
			}
			files[st.Dir+"/"+st.File] = true
			if st.Size < 0 {
				return fmt.Errorf("node %s#%d: size %d", n.NodeID, st.Subtask, st.Size)
			}
			if err := checkSections(st.KeyGroups, st.Size, md.MaxParallelism, true); err != nil {
				return fmt.Errorf("node %s#%d: %w", n.NodeID, st.Subtask, err)
			}
			if err := checkSections(st.OperatorState, st.Size, 0, false); err != nil {
				return fmt.Errorf("node %s#%d: %w", n.NodeID, st.Subtask, err)
			}
			if st.Delta != (len(st.Chain) > 0) {
				return fmt.Errorf("node %s#%d: a delta needs a chain, and only a delta has one", n.NodeID, st.Subtask)
			}
			for i, f := range st.Chain {
				if f.CheckpointID <= 0 || f.CheckpointID >= md.CheckpointID || f.Delta != (i > 0) || !path.IsAbs(f.Dir) || path.Clean(f.Dir) != f.Dir ||
					f.File == "" || strings.ContainsAny(f.File, `/\`) || f.Size < 0 || (i > 0 && f.CheckpointID <= st.Chain[i-1].CheckpointID) {
					return fmt.Errorf("node %s#%d: bad chain element %d (checkpoint %d, %s/%s)", n.NodeID, st.Subtask, i, f.CheckpointID, f.Dir, f.File)
				}
				if err := checkSections(f.KeyGroups, f.Size, md.MaxParallelism, true); err != nil {
					return fmt.Errorf("node %s#%d, chain element %d: %w", n.NodeID, st.Subtask, i, err)
				}
			}
		}
	}
	return nil
}

func encodeMetadata(md *Metadata) ([]byte, error) {
	body, err := json.MarshalIndent(md, "", "  ")
	if err != nil {
		return nil, err
	}
	body = append(body, '\n')
	return fmt.Appendf(body, "crc32c %08x\n", crc32.Checksum(body, castagnoli)), nil
}

// corruptError is a verification failure; errors.Is(err, ErrCorrupt).
type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return e.msg }
func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

func corruptf(format string, args ...any) error {
	return &corruptError{fmt.Sprintf(format, args...)}
}

func decodeMetadata(data []byte) (*Metadata, error) {
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, corruptf("metadata is truncated")
	}
	i := bytes.LastIndexByte(data[:len(data)-1], '\n')
	if i < 0 {
		return nil, corruptf("metadata has no checksum line")
	}
	body, line := data[:i+1], string(data[i+1:len(data)-1])
	hexSum, ok := strings.CutPrefix(line, "crc32c ")
	if !ok || len(hexSum) != 8 {
		return nil, corruptf("metadata has no checksum line")
	}
	want, err := strconv.ParseUint(hexSum, 16, 32)
	if err != nil {
		return nil, corruptf("bad metadata checksum %q", hexSum)
	}
	if got := crc32.Checksum(body, castagnoli); got != uint32(want) {
		return nil, corruptf("metadata checksum mismatch (crc32c %08x, recorded %08x)", got, want)
	}
	md := new(Metadata)
	if err := json.Unmarshal(body, md); err != nil {
		return nil, corruptf("metadata: %v", err)
	}
	if err := validate(md); err != nil {
		return nil, corruptf("metadata: %v", err)
	}
	return md, nil
}

// Commit completes a checkpoint or savepoint whose state files were written
// with WriteState by writing its metadata, last and atomically. It returns
// the checkpoint's directory as a URI that Load and ReadState accept.
func (s *Storage) Commit(ctx context.Context, md *Metadata) (string, error) {
	m := *md
	if m.Version == 0 {
		m.Version = MetadataVersion
	}
	if err := validate(&m); err != nil {
		return "", fmt.Errorf("checkpoint %d: invalid metadata: %w", md.CheckpointID, err)
	}
	data, err := encodeMetadata(&m)
	if err != nil {
		return "", err
	}
	fsys, dir, err := s.attemptDir(m.CheckpointID, m.Savepoint)
	if err != nil {
		return "", err
	}
	mdPath := fs.Join(dir, MetadataFile)
	if _, ok := fsys.(fs.Exclusive); ok {
		// Written once: a master that was paused past a newer one's
		// takeover cannot replace the metadata the newer one committed
		// under the same id (nor the other way round).
		err = fs.CreateExclusive(ctx, fsys, mdPath, data)
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("committing checkpoint %d: it was committed already (by another master of the job?): %w", m.CheckpointID, err)
		}
	} else {
		err = fsys.WriteFile(ctx, mdPath, data)
	}
	if err != nil {
		return "", fmt.Errorf("committing checkpoint %d: %w", m.CheckpointID, err)
	}
	if m.Savepoint {
		s.mu.Lock()
		delete(s.savepoints, m.CheckpointID)
		s.mu.Unlock()
	}
	return fs.URI(fsys, dir), nil
}

// Abort removes the files of a failed checkpoint or savepoint attempt. A
// completed one (its metadata exists) is left alone.
func (s *Storage) Abort(ctx context.Context, id int64, savepoint bool) {
	var fsys fs.FS
	var dir string
	if savepoint {
		s.mu.Lock()
		d, ok := s.savepoints[id]
		delete(s.savepoints, id)
		s.mu.Unlock()
		if !ok {
			return
		}
		fsys, dir = s.spFS, d
	} else {
		fsys, dir = s.fs, fs.Join(s.base, chkName(id))
	}
	if _, err := fsys.Stat(ctx, fs.Join(dir, MetadataFile)); err == nil {
		s.log().Warn("not removing a completed checkpoint", "checkpoint", id, "dir", fs.URI(fsys, dir))
		return
	}
	if err := fsys.RemoveAll(ctx, dir); err != nil {
		s.log().Warn("removing a failed checkpoint's files", "checkpoint", id, "dir", fs.URI(fsys, dir), "err", err)
	}
	if !savepoint {
		if err := s.removeData(ctx, id, nil); err != nil {
			s.log().Warn("removing a failed checkpoint's files", "checkpoint", id, "err", err)
		}
	}
}

// chkIDs returns the ids of the chk-<id> directories, newest first.
func (s *Storage) chkIDs(ctx context.Context) ([]int64, error) {
	es, err := s.fs.List(ctx, s.base)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", fs.URI(s.fs, s.base), err)
	}
	var ids []int64
	for _, e := range es {
		if id := parseID(e.Name, "chk-", false); e.IsDir && id > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return ids, nil
}

// errIncomplete marks a checkpoint directory without metadata.
var errIncomplete = errors.New("no " + MetadataFile)

// verify reads and checks the metadata of dir and every state file it lists.
// wantID > 0 also checks the recorded id.
func (s *Storage) verify(ctx context.Context, fsys fs.FS, dir string, wantID int64) (*Metadata, error) {
	return s.check(ctx, fsys, dir, wantID, true)
}

// check is verify (streaming each state file through its checksum, not
// holding it); deep=false only checks that each state file exists with
// the recorded size, leaving the checksums to the restore, which checks
// those of the sections it reads (or uses its local copy).
func (s *Storage) check(ctx context.Context, fsys fs.FS, dir string, wantID int64, deep bool) (*Metadata, error) {
	data, err := fsys.ReadFile(ctx, fs.Join(dir, MetadataFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errIncomplete
	}
	if err != nil {
		return nil, err
	}
	md, err := decodeMetadata(data)
	if err != nil {
		return nil, err
	}
	if wantID > 0 && md.CheckpointID != wantID {
		return nil, corruptf("metadata records checkpoint %d", md.CheckpointID)
	}
	for _, n := range md.Nodes {
		for _, sub := range n.Subtasks {
			for _, st := range sub.Files() {
				var err error
				if deep {
					err = verifyState(ctx, fsys, dir, st)
				} else {
					err = statState(ctx, fsys, dir, st)
				}
				if err != nil {
					return nil, fmt.Errorf("state of %s#%d: %w", n.NodeID, sub.Subtask, err)
				}
			}
		}
	}
	return md, nil
}

func statState(ctx context.Context, fsys fs.FS, dir string, st SubtaskState) error {
	if st.Dir != "" {
		dir = st.Dir
	}
	e, err := fsys.Stat(ctx, fs.Join(dir, st.File))
	if errors.Is(err, fs.ErrNotExist) {
		return corruptf("state file %s is missing", st.File)
	}
	if err != nil {
		return err
	}
	if e.Size != st.Size {
		return corruptf("state file %s has %d bytes, want %d", st.File, e.Size, st.Size)
	}
	return nil
}

func readState(ctx context.Context, fsys fs.FS, dir string, st SubtaskState) ([]byte, error) {
	if st.File == "" || st.File == "." || st.File == ".." || strings.ContainsAny(st.File, `/\`) {
		return nil, corruptf("bad state file name %q", st.File)
	}
	if st.Dir != "" {
		dir = st.Dir
	}
	data, err := fsys.ReadFile(ctx, fs.Join(dir, st.File))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, corruptf("state file %s is missing", st.File)
	}
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != st.Size {
		return nil, corruptf("state file %s has %d bytes, want %d", st.File, len(data), st.Size)
	}
	if got := crc32.Checksum(data, castagnoli); got != st.CRC32C {
		return nil, corruptf("state file %s has crc32c %08x, want %08x", st.File, got, st.CRC32C)
	}
	return data, nil
}

// Latest returns the newest checkpoint whose metadata and state files all
// verify, and its directory as a URI. Newer incomplete or corrupt ones are
// skipped with a warning. It returns (nil, "", nil) when there is none.
func (s *Storage) Latest(ctx context.Context) (*Metadata, string, error) {
	return s.LatestBefore(ctx, math.MaxInt64, true)
}

// LatestBefore is Latest among the checkpoints with an id below before.
// With deep=false only the metadata and the state files' sizes are checked
// (no state file is read); a restore then checks the checksums as it reads
// and comes back for an older one if a file turns out corrupt.
func (s *Storage) LatestBefore(ctx context.Context, before int64, deep bool) (*Metadata, string, error) {
	all, err := s.chkIDs(ctx)
	if err != nil {
		return nil, "", err
	}
	var ids []int64
	for _, id := range all {
		if id < before {
			ids = append(ids, id)
		}
	}
	var lineage Lineage
	if s.lineage != nil {
		if lineage, err = s.lineage(ctx); err != nil {
			return nil, "", fmt.Errorf("reading the job's lineage: %w", err)
		}
	}
	for k, id := range ids {
		dir := fs.Join(s.base, chkName(id))
		md, err := s.check(ctx, s.fs, dir, id, deep)
		if err == nil {
			why := lineage.Superseded(md)
			if why == "" {
				return md, fs.URI(s.fs, dir), nil
			}
			s.log().Warn(fmt.Sprintf("skipping checkpoint %d: %s", id, why), "checkpoint", id, "dir", fs.URI(s.fs, dir))
			continue
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, "", cerr
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, errIncomplete) {
			return nil, "", fmt.Errorf("reading checkpoint %d: %w", id, err)
		}
		next := "no older checkpoint to fall back to"
		if k+1 < len(ids) {
			next = fmt.Sprintf("falling back to checkpoint %d", ids[k+1])
		}
		what := "corrupt"
		if errors.Is(err, errIncomplete) {
			what = "incomplete"
		}
		s.log().Warn(fmt.Sprintf("checkpoint %d is %s: %v; %s", id, what, err, next),
			"checkpoint", id, "dir", fs.URI(s.fs, dir))
	}
	return nil, "", nil
}

// resolve maps a checkpoint or savepoint location to its filesystem and
// path: a URI is opened with fs.Open; a plain path is on the checkpoint
// storage's filesystem (the local one for file:// storage).
func (s *Storage) resolve(loc string) (fs.FS, string, error) {
	if strings.Contains(loc, "://") || strings.HasPrefix(loc, "file:") {
		return fs.Open(loc)
	}
	if _, local := s.fs.(fs.Local); local {
		return fs.Open(loc)
	}
	return s.fs, path.Clean(loc), nil
}

// Load returns the verified metadata of the checkpoint or savepoint
// directory at loc (a path or URI; the _metadata file itself is accepted
// too).
func (s *Storage) Load(ctx context.Context, loc string) (*Metadata, error) {
	if loc == "" {
		return nil, errors.New("no checkpoint or savepoint location")
	}
	fsys, dir, err := s.resolve(loc)
	if err != nil {
		return nil, err
	}
	if path.Base(dir) == MetadataFile {
		dir = path.Dir(dir)
	}
	md, err := s.verify(ctx, fsys, dir, max(idFromDir(dir), 0))
	if errors.Is(err, errIncomplete) {
		if st, serr := fsys.Stat(ctx, dir); serr != nil || !st.IsDir {
			return nil, fmt.Errorf("%s: no such checkpoint or savepoint directory", loc)
		}
		return nil, fmt.Errorf("%s is not a completed checkpoint or savepoint: %w", loc, err)
	}
	if errors.Is(err, ErrCorrupt) {
		return nil, fmt.Errorf("%s is corrupt: %w", loc, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", loc, err)
	}
	return md, nil
}

// ReadState reads and verifies a state file of the checkpoint or savepoint
// directory dir (as returned by Latest or Commit, or given to Load).
func (s *Storage) ReadState(ctx context.Context, dir string, st SubtaskState) ([]byte, error) {
	fsys, d, err := s.resolve(dir)
	if err != nil {
		return nil, err
	}
	if path.Base(d) == MetadataFile {
		d = path.Dir(d)
	}
	return readState(ctx, fsys, d, st)
}

// Prune keeps the newest `retained` (at least 1) completed checkpoints, and
// the older ones whose files their chains refer to (incremental
// checkpoints: shared files are counted by the retained checkpoints that
// refer to them, as in Flink's shared state registry, rebuilt from the
// metadata each time), and deletes older checkpoint directories, completed
// or not. Incomplete ones
// newer than the newest completed one may be in progress and are kept.
// Completion is judged by the metadata alone (its checksum), not by reading
// every state file.
func (s *Storage) Prune(ctx context.Context, retained int) error {
	retained = max(retained, 1)
	ids, err := s.chkIDs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	kept := 0
	newest := int64(-1)
	referenced := map[int64]bool{} // by the chains of retained checkpoints
	for _, id := range ids {
		dir := fs.Join(s.base, chkName(id))
		complete := false
		var md *Metadata
		var dirs []string // entropy data of this checkpoint; nil = look for it
		data, err := s.fs.ReadFile(ctx, fs.Join(dir, MetadataFile))
		switch {
		case err == nil:
			var derr error
			md, derr = decodeMetadata(data)
			if complete = derr == nil; complete {
				dirs = dataDirs(md)
			}
		case errors.Is(err, fs.ErrNotExist):
		default:
			// Unreadable for another reason: judge nothing, delete nothing.
			errs = append(errs, fmt.Errorf("checkpoint %d: %w", id, err))
			continue
		}
		if complete && kept < retained {
			kept++
			if newest < 0 {
				newest = id
			}
			for _, n := range md.Nodes {
				for _, st := range n.Subtasks {
					for _, f := range st.Chain {
						referenced[f.CheckpointID] = true
					}
				}
			}
			continue
		}
		if newest < 0 {
			continue // newer than every completed checkpoint: maybe in progress
		}
		if referenced[id] {
			continue // a retained incremental checkpoint reads its files
		}
		if err := s.removeData(ctx, id, dirs); err != nil {
			errs = append(errs, err)
		}
		if err := s.fs.RemoveAll(ctx, dir); err != nil {
			errs = append(errs, fmt.Errorf("removing checkpoint %d: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// NextCheckpointID returns one more than the highest checkpoint or
// savepoint id present (complete or not), so that a restarted job never
// reuses an id.
func (s *Storage) NextCheckpointID(ctx context.Context) (int64, error) {
	ids, err := s.chkIDs(ctx)
	if err != nil {
		return 0, err
	}
	var highest int64
	if len(ids) > 0 {
		highest = ids[0]
	}
	es, err := s.spFS.List(ctx, s.spBase)
	if err != nil {
		return 0, fmt.Errorf("listing %s: %w", fs.URI(s.spFS, s.spBase), err)
	}
	for _, e := range es {
		highest = max(highest, parseID(e.Name, "savepoint-", true))
	}
	s.mu.Lock()
	for id := range s.savepoints {
		highest = max(highest, id)
	}
	s.mu.Unlock()
	return highest + 1, nil
}
