package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
)

// Local is the FS of the local filesystem (file://).
type Local struct{}

var _ FS = Local{}

func osPath(p string) string { return filepath.FromSlash(p) }

// URI returns file:// followed by the absolute form of p.
func (Local) URI(p string) string {
	if abs, err := filepath.Abs(osPath(p)); err == nil {
		p = filepath.ToSlash(abs)
	}
	return "file://" + p
}

// WriteFile implements FS: one streamed write (Create), committed.
func (l Local) WriteFile(ctx context.Context, p string, data []byte) error {
	w, err := l.Create(ctx, p)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadFile implements FS.
func (Local) ReadFile(ctx context.Context, p string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return os.ReadFile(osPath(p))
}

// List implements FS.
func (Local) List(ctx context.Context, dir string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	des, err := os.ReadDir(osPath(dir))
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		e := Entry{Name: de.Name(), IsDir: de.IsDir()}
		if !e.IsDir {
			info, err := de.Info()
			if errors.Is(err, iofs.ErrNotExist) {
				continue // removed since ReadDir
			}
			if err != nil {
				return nil, err
			}
			e.Size = info.Size()
		}
		out = append(out, e)
	}
	return out, nil
}

// MkdirAll implements FS.
func (Local) MkdirAll(ctx context.Context, dir string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.MkdirAll(osPath(dir), 0o755)
}

// RemoveAll implements FS.
func (Local) RemoveAll(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.RemoveAll(osPath(p))
}

// Rename implements FS.
func (Local) Rename(ctx context.Context, from, to string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.Rename(osPath(from), osPath(to))
}

// Stat implements FS.
func (Local) Stat(ctx context.Context, p string) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	info, err := os.Stat(osPath(p))
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Name: info.Name(), IsDir: info.IsDir()}
	if !e.IsDir {
		e.Size = info.Size()
	}
	return e, nil
}

// Create implements Creator: the file is written under a temporary name in
// the same directory and renamed to p by Commit, as WriteFile does.
func (Local) Create(ctx context.Context, p string) (FileWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p = osPath(p)
	dir, base := filepath.Split(p)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if errors.Is(err, iofs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			f, err = os.CreateTemp(dir, "."+base+".tmp-*")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", p, err)
	}
	return &localWriter{ctx: ctx, f: f, path: p, dir: dir}, nil
}

type localWriter struct {
	ctx       context.Context
	f         *os.File
	path, dir string
	done      bool
}

func (w *localWriter) Write(b []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := w.f.Write(b)
	if err != nil {
		err = fmt.Errorf("writing %s: %w", w.path, err)
	}
	return n, err
}

func (w *localWriter) Commit() (err error) {
	if w.done {
		return fmt.Errorf("writing %s: committed or aborted already", w.path)
	}
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	if err = w.ctx.Err(); err != nil {
		return err
	}
	if err = w.f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	if err = w.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", w.path, err)
	}
	if err = w.f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	if err = os.Rename(w.f.Name(), w.path); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	w.done = true
	// The rename is durable only once the directory is synced.
	if err = syncDir(w.dir); err != nil {
		return fmt.Errorf("syncing directory of %s: %w", w.path, err)
	}
	return nil
}

func (w *localWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// OpenFile implements RangeReader.
func (Local) OpenFile(ctx context.Context, p string) (File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(osPath(p))
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if info.IsDir() {
		f.Close()
		return nil, fmt.Errorf("reading %s: is a directory", p)
	}
	return &localFile{File: f, ctx: ctx, size: info.Size()}, nil
}

type localFile struct {
	*os.File
	ctx  context.Context
	size int64
}

func (f *localFile) Size() int64 { return f.size }

func (f *localFile) ReadAt(b []byte, off int64) (int, error) {
	if err := f.ctx.Err(); err != nil {
		return 0, err
	}
	return f.File.ReadAt(b, off)
}
