package fs

import (
	"bytes"
	"context"
	"io"
)

// Streams: a state file can be larger than memory, so it is written as a
// stream (Create) and read by ranges (OpenFile) instead of whole
// (WriteFile, ReadFile). Both are optional interfaces of an FS; Create and
// OpenFile fall back to the whole-file methods for an FS without them.

// FileWriter is a file being written. Nothing is visible at its path until
// Commit, which publishes it atomically as WriteFile does (temporary name,
// sync, rename). A FileWriter is not safe for concurrent use.
type FileWriter interface {
	io.Writer
	// Commit syncs the file and renames it to its path.
	Commit() error
	// Abort discards the file; harmless after Commit or a failed Commit.
	Abort()
}

// File is a file open for reading by ranges; ReadAt is safe for
// concurrent use.
type File interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Creator is an FS that writes files as streams.
type Creator interface {
	// Create starts writing path; ctx bounds the whole write, up to and
	// including Commit.
	Create(ctx context.Context, path string) (FileWriter, error)
}

// RangeReader is an FS that reads files by ranges.
type RangeReader interface {
	// OpenFile opens path for ReadAt; ctx bounds the reads until Close.
	// errors.Is(err, ErrNotExist) when it is missing.
	OpenFile(ctx context.Context, path string) (File, error)
}

// Create starts writing path on f, as a stream when f is a Creator and
// otherwise into memory, written with WriteFile on Commit.
func Create(ctx context.Context, f FS, path string) (FileWriter, error) {
	if c, ok := f.(Creator); ok {
		return c.Create(ctx, path)
	}
	return &bufferedWriter{ctx: ctx, f: f, path: path}, nil
}

// OpenFile opens path on f for ranged reads, reading it whole into memory
// when f is not a RangeReader.
func OpenFile(ctx context.Context, f FS, path string) (File, error) {
	if r, ok := f.(RangeReader); ok {
		return r.OpenFile(ctx, path)
	}
	data, err := f.ReadFile(ctx, path)
	if err != nil {
		return nil, err
	}
	return memFile{bytes.NewReader(data)}, nil
}

type bufferedWriter struct {
	ctx  context.Context
	f    FS
	path string
	buf  []byte
}

func (w *bufferedWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	return len(p), nil
}
func (w *bufferedWriter) Commit() error { return w.f.WriteFile(w.ctx, w.path, w.buf) }
func (w *bufferedWriter) Abort()        { w.buf = nil }

type memFile struct{ *bytes.Reader }

func (memFile) Close() error { return nil }
