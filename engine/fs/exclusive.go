package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/colinmarc/hdfs/v2"
)

// ErrExist is io/fs.ErrExist: CreateExclusive found the path taken.
var ErrExist = iofs.ErrExist

// Exclusive is an FS that can create a file only if its path is free,
// atomically: of several processes racing for one path exactly one wins.
// HA metadata takes fencing epochs with it.
type Exclusive interface {
	// CreateExclusive writes data to path if nothing is there; an error
	// wrapping ErrExist when something is. The file appears whole.
	CreateExclusive(ctx context.Context, path string, data []byte) error
}

// CreateExclusive writes data to path on fsys if the path is free; an
// error wrapping ErrExist when it is taken. An FS that cannot do it
// atomically is refused: an epoch taken twice would fence nothing.
func CreateExclusive(ctx context.Context, fsys FS, path string, data []byte) error {
	x, ok := fsys.(Exclusive)
	if !ok {
		return fmt.Errorf("creating %s: %T cannot create a file exclusively", path, fsys)
	}
	return x.CreateExclusive(ctx, path, data)
}

// CreateExclusive implements Exclusive: written whole under a temporary
// name, then hard-linked to path (link(2) fails if path exists).
func (l Local) CreateExclusive(ctx context.Context, p string, data []byte) error {
	w, err := l.Create(ctx, p+".excl")
	if err != nil {
		return err
	}
	lw := w.(*localWriter)
	if _, err := lw.Write(data); err != nil {
		w.Abort()
		return err
	}
	if err := lw.f.Sync(); err != nil {
		w.Abort()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	tmp := lw.f.Name()
	if err := lw.f.Close(); err != nil {
		w.Abort()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	defer os.Remove(tmp)
	lw.done = true
	if err := os.Link(tmp, osPath(p)); err != nil {
		if errors.Is(err, iofs.ErrExist) {
			return fmt.Errorf("creating %s: %w", p, ErrExist)
		}
		return fmt.Errorf("creating %s: %w", p, err)
	}
	return syncDir(filepath.Dir(osPath(p)))
}

// CreateExclusive implements Exclusive: the namenode creates a file only if
// the path is free (no overwrite flag), and one client wins. The data is
// written after the create, so a reader may see the file before its bytes:
// what matters is who created it.
func (h *HDFS) CreateExclusive(ctx context.Context, p string, data []byte) error {
	p = path.Clean(p)
	var w *hdfs.FileWriter
	err := h.do(ctx, false, func(cl *hdfs.Client) (err error) {
		w, err = cl.Create(p)
		if errors.Is(err, os.ErrNotExist) {
			if err = cl.MkdirAll(path.Dir(p), 0o755); err == nil {
				w, err = cl.Create(p)
			}
		}
		return err
	})
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("hdfs: creating %s: %w", h.URI(p), ErrExist)
	}
	if err != nil {
		return h.wrap("creating", p, err)
	}
	if _, err := w.Write(data); err != nil {
		w.Close()
		return h.wrap("writing", p, err)
	}
	return h.wrap("writing", p, w.Close())
}
