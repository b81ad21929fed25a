package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/colinmarc/hdfs/v2"
)

// Streamed files: what is too large for WriteFile and ReadFile (a file
// sink's part files, a file source's inputs).
//
// Create creates path for writing, truncating an existing file and
// creating missing parent directories. The data is durable once Close
// returns nil (fsync on local disk; on HDFS the file is complete); a file
// whose Close was not reached may hold part of it, so write under a
// temporary name and Rename when done. Not safe for concurrent use.
//
// Open opens path for reading. The reader is an io.Seeker too, for both
// implementations here (see Seek).

// Create implements FS.
func (Local) Create(ctx context.Context, p string) (io.WriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p = osPath(p)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if errors.Is(err, iofs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		}
	}
	if err != nil {
		return nil, err
	}
	return localWriter{f}, nil
}

// localWriter syncs on Close, so that a closed file is durable.
type localWriter struct{ *os.File }

func (w localWriter) Close() error {
	err := w.File.Sync()
	if cerr := w.File.Close(); err == nil {
		err = cerr
	}
	return err
}

// Open implements FS.
func (Local) Open(ctx context.Context, p string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return os.Open(osPath(p))
}

// Create implements FS: an existing file is removed first (HDFS files
// cannot be truncated to zero by create without overwrite).
func (h *HDFS) Create(ctx context.Context, p string) (io.WriteCloser, error) {
	p = path.Clean(p)
	var w *hdfs.FileWriter
	err := h.do(ctx, true, func(cl *hdfs.Client) error {
		err := cl.Remove(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		w, err = cl.Create(p)
		if errors.Is(err, os.ErrNotExist) {
			if err = cl.MkdirAll(path.Dir(p), 0o755); err == nil {
				w, err = cl.Create(p)
			}
		}
		return err
	})
	if err != nil {
		return nil, h.wrap("creating", p, err)
	}
	return &hdfsWriter{w: w, h: h, p: p}, nil
}

type hdfsWriter struct {
	w *hdfs.FileWriter
	h *HDFS
	p string
}

func (w *hdfsWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	return n, w.h.wrap("writing", w.p, err)
}

// Close completes the file: the namenode reports it complete once the
// datanodes acknowledged every block.
func (w *hdfsWriter) Close() error { return w.h.wrap("closing", w.p, w.w.Close()) }

// Open implements FS.
func (h *HDFS) Open(ctx context.Context, p string) (io.ReadCloser, error) {
	var r *hdfs.FileReader
	err := h.do(ctx, true, func(cl *hdfs.Client) error {
		var err error
		if r, err = cl.Open(p); err == nil && r.Stat().IsDir() {
			r.Close()
			r, err = nil, &os.PathError{Op: "open", Path: p, Err: errIsDir}
		}
		return err
	})
	if err != nil {
		return nil, h.wrap("opening", p, err)
	}
	return r, nil
}

// Seek moves r, from Open, to byte offset: by seeking when it can, else by
// reading up to it.
func Seek(r io.Reader, offset int64) error {
	if offset <= 0 {
		return nil
	}
	if s, ok := r.(io.Seeker); ok {
		_, err := s.Seek(offset, io.SeekStart)
		return err
	}
	n, err := io.CopyN(io.Discard, r, offset)
	if err == io.EOF {
		return fmt.Errorf("offset %d is past the end (%d bytes)", offset, n)
	}
	return err
}

// Glob returns the paths in f matching pattern (path.Match syntax in any
// segment), sorted. A pattern without meta characters matches itself if it
// exists.
func Glob(ctx context.Context, f FS, pattern string) ([]string, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, err
	}
	segs := strings.Split(pattern, "/")
	// The directory before the first segment with a meta character.
	i := 0
	for i < len(segs) && !hasMeta(segs[i]) {
		i++
	}
	if i == len(segs) {
		if _, err := f.Stat(ctx, pattern); err != nil {
			if errors.Is(err, ErrNotExist) {
				return nil, nil
			}
			return nil, err
		}
		return []string{pattern}, nil
	}
	dir := strings.Join(segs[:i], "/")
	if dir == "" && strings.HasPrefix(pattern, "/") {
		dir = "/"
	}
	out, err := globIn(ctx, f, dir, segs[i:])
	slices.Sort(out)
	return out, err
}

func globIn(ctx context.Context, f FS, dir string, segs []string) ([]string, error) {
	list := dir
	if list == "" {
		list = "."
	}
	entries, err := f.List(ctx, list)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if ok, _ := path.Match(segs[0], e.Name); !ok {
			continue
		}
		p := path.Join(dir, e.Name)
		if len(segs) == 1 {
			out = append(out, p)
			continue
		}
		if !e.IsDir {
			continue
		}
		more, err := globIn(ctx, f, p, segs[1:])
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }
