package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/sluice-stream/sluice/engine/fs"
)

// State files as streams: a subtask's state can be larger than memory, so
// StateFileWriter writes its sections to storage as they come, computing
// the file's CRC-32C, each section's CRC-32C and the offsets on the fly, and
// StateReader reads back only the sections a subtask needs, by ranges,
// checking each section's CRC-32C as it streams. A file written so records
// SectionCRCs; files written before it (whole-file CRC-32C only) are still
// read: their CRC-32C is checked by one streaming pass before any section
// is handed out.

// StateFileWriter writes one subtask's state file as a stream. Keyed state
// is written with AddKeyGroup, or with KeyGroup followed by writes to the
// writer it returns; operator state with AddOperatorState. Errors are
// sticky and returned by Commit. Not safe for concurrent use.
type StateFileWriter struct {
	node    string
	subtask int
	fw      fs.FileWriter
	tee     io.Writer
	st      SubtaskState
	off     int64
	crc     uint32
	cur     *Section // the section being written, nil between sections
	err     error
}

// CreateState starts the state file of node's subtask for checkpoint (or
// savepoint) id. Every byte is also written to tee when it is not nil (a
// local recovery copy); tee's errors are its own business and not
// reported. The file is published by Commit.
func (s *Storage) CreateState(ctx context.Context, id int64, savepoint bool, node string, subtask int, tee io.Writer) (*StateFileWriter, error) {
	if node == "" || subtask < 0 || id <= 0 {
		return nil, fmt.Errorf("checkpoint %d: bad state file for node %q subtask %d", id, node, subtask)
	}
	fsys, dir, err := s.attemptDir(id, savepoint)
	if err != nil {
		return nil, err
	}
	st := SubtaskState{Subtask: subtask, File: stateFileName(node, subtask), SectionCRCs: true}
	if s.entropy != nil && !savepoint {
		if dir, err = s.entropy.dataDir(id); err != nil {
			return nil, err
		}
		st.Dir = dir
	}
	fw, err := fs.Create(ctx, fsys, fs.Join(dir, st.File))
	if err != nil {
		return nil, fmt.Errorf("writing state of %s#%d: %w", node, subtask, err)
	}
	return &StateFileWriter{node: node, subtask: subtask, fw: fw, tee: tee, st: st}, nil
}

// Write appends p to the section begun last (KeyGroup).
func (w *StateFileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.cur == nil {
		w.err = errors.New("checkpoint: state written outside a section (call KeyGroup first)")
		return 0, w.err
	}
	n, err := w.fw.Write(p)
	if err != nil {
		w.err = fmt.Errorf("writing state of %s#%d: %w", w.node, w.subtask, err)
		return n, w.err
	}
	if w.tee != nil {
		w.tee.Write(p)
	}
	w.crc = crc32.Update(w.crc, castagnoli, p)
	w.cur.CRC32C = crc32.Update(w.cur.CRC32C, castagnoli, p)
	w.cur.Length += int64(n)
	w.off += int64(n)
	return n, nil
}

// KeyGroup starts key group kg's section and returns the writer of its
// bytes, valid until the next call on w. Starting a key group again adds
// a part that a restore reads after the earlier ones.
func (w *StateFileWriter) KeyGroup(kg int) io.Writer {
	w.st.KeyGroups = append(w.st.KeyGroups, Section{KeyGroup: kg, Offset: w.off})
	w.cur = &w.st.KeyGroups[len(w.st.KeyGroups)-1]
	return w
}

// AddKeyGroup adds the state of key group kg.
func (w *StateFileWriter) AddKeyGroup(kg int, data []byte) {
	w.KeyGroup(kg).Write(data)
	w.cur = nil
}

// AddOperatorState adds one list entry of operator state.
func (w *StateFileWriter) AddOperatorState(data []byte) {
	w.st.OperatorState = append(w.st.OperatorState, Section{Offset: w.off})
	w.cur = &w.st.OperatorState[len(w.st.OperatorState)-1]
	w.Write(data)
	w.cur = nil
}

// Commit publishes the file and returns its SubtaskState (Subtask, File,
// Dir, Size, CRC32C and sections). Key group sections come out ascending
// by key group; the parts of a key group written more than once stay in
// the order written. After an error the file is discarded.
func (w *StateFileWriter) Commit() (SubtaskState, error) {
	w.cur = nil
	if w.err != nil {
		w.fw.Abort()
		return SubtaskState{}, w.err
	}
	if err := w.fw.Commit(); err != nil {
		return SubtaskState{}, fmt.Errorf("writing state of %s#%d: %w", w.node, w.subtask, err)
	}
	st := w.st
	slices.SortStableFunc(st.KeyGroups, func(a, b Section) int { return a.KeyGroup - b.KeyGroup })
	st.Size, st.CRC32C = w.off, w.crc
	return st, nil
}

// Abort discards the file.
func (w *StateFileWriter) Abort() { w.fw.Abort() }

// StateReader reads the sections of one state file by ranges. Its methods
// may be called from one goroutine at a time.
type StateReader struct {
	f    fs.File
	st   SubtaskState
	read atomic.Int64
}

// OpenState opens a state file of the checkpoint or savepoint directory
// dir for reading its sections. The file must have its recorded size; a
// file without section checksums (written by an older version) is checked
// whole first, in one streaming pass.
func (s *Storage) OpenState(ctx context.Context, dir string, st SubtaskState) (*StateReader, error) {
	fsys, d, err := s.resolve(dir)
	if err != nil {
		return nil, err
	}
	if path.Base(d) == MetadataFile {
		d = path.Dir(d)
	}
	if st.Dir != "" {
		d = st.Dir
	}
	return OpenState(ctx, fsys, fs.Join(d, st.File), st)
}

// OpenState opens the state file at p on fsys (see Storage.OpenState).
func OpenState(ctx context.Context, fsys fs.FS, p string, st SubtaskState) (*StateReader, error) {
	if st.File == "" || st.File == "." || st.File == ".." || strings.ContainsAny(st.File, `/\`) {
		return nil, corruptf("bad state file name %q", st.File)
	}
	f, err := fs.OpenFile(ctx, fsys, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, corruptf("state file %s is missing", st.File)
	}
	if err != nil {
		return nil, err
	}
	r := &StateReader{f: f, st: st}
	if f.Size() != st.Size {
		f.Close()
		return nil, corruptf("state file %s has %d bytes, want %d", st.File, f.Size(), st.Size)
	}
	if !st.SectionCRCs {
		if err := r.verifyWhole(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return r, nil
}

// verifyWhole checks the whole file's CRC-32C without holding it.
func (r *StateReader) verifyWhole() error {
	crc, err := crcOf(io.NewSectionReader(r.f, 0, r.st.Size), &r.read)
	if err != nil {
		return err
	}
	if crc != r.st.CRC32C {
		return corruptf("state file %s has crc32c %08x, want %08x", r.st.File, crc, r.st.CRC32C)
	}
	return nil
}

func crcOf(src io.Reader, counter *atomic.Int64) (uint32, error) {
	buf := make([]byte, 256<<10)
	var crc uint32
	for {
		n, err := src.Read(buf)
		counter.Add(int64(n))
		crc = crc32.Update(crc, castagnoli, buf[:n])
		if err == io.EOF {
			return crc, nil
		}
		if err != nil {
			return crc, err
		}
	}
}

// BytesRead is how many bytes were read from the file so far.
func (r *StateReader) BytesRead() int64 { return r.read.Load() }

// Close closes the file.
func (r *StateReader) Close() error { return r.f.Close() }

// Section returns a reader of sec's bytes. With section checksums, a
// section that does not match its CRC-32C fails (errors.Is ErrCorrupt)
// before its last bytes are returned.
func (r *StateReader) Section(sec Section) io.Reader {
	return &sectionReader{r: io.NewSectionReader(r.f, sec.Offset, sec.Length), left: sec.Length, want: sec.CRC32C, check: r.st.SectionCRCs, file: r.st.File, off: sec.Offset, n: &r.read}
}

// Verify reads secs and checks their checksums (for a file without
// section checksums OpenState has checked it whole already).
func (r *StateReader) Verify(secs []Section) error {
	for _, sec := range secs {
		if _, err := crcOf(r.Section(sec), &atomic.Int64{}); err != nil {
			return err
		}
	}
	return nil
}

type sectionReader struct {
	r     *io.SectionReader
	left  int64
	crc   uint32
	want  uint32
	check bool
	file  string
	off   int64
	n     *atomic.Int64
}

func (s *sectionReader) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.n.Add(int64(n))
	s.left -= int64(n)
	if s.check {
		s.crc = crc32.Update(s.crc, castagnoli, p[:n])
		if s.left == 0 && s.crc != s.want {
			return 0, corruptf("state file %s: the section at offset %d has crc32c %08x, want %08x", s.file, s.off, s.crc, s.want)
		}
	}
	if err == io.EOF && s.left > 0 {
		return n, corruptf("state file %s is shorter than its sections", s.file)
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// verifyState checks a state file's size and CRC-32C in one streaming pass.
func verifyState(ctx context.Context, fsys fs.FS, dir string, st SubtaskState) error {
	if st.Dir != "" {
		dir = st.Dir
	}
	st.SectionCRCs = false // check it whole
	r, err := OpenState(ctx, fsys, fs.Join(dir, st.File), st)
	if err != nil {
		return err
	}
	return r.Close()
}
