// Package fs is Sluice's one filesystem abstraction: checkpoints, savepoints
// and the HA store all go through an FS opened from a URI (file:// now,
// hdfs:// later), so that a storage back-end is added in one place.
//
// It is not a general-purpose VFS: it has what snapshot storage needs —
// whole-file atomic writes, reads, listing, renames and removal — and the
// streamed files of the file source and sink (Create, Open; no appends).
// Paths inside an FS are slash-separated.
package fs

import (
	"context"
	"fmt"
	"io"
	iofs "io/fs"
	"net/url"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// ErrNotExist is io/fs.ErrNotExist, re-exported so that callers need not
// import both packages named fs.
var ErrNotExist = iofs.ErrNotExist

// FS is a filesystem. Implementations are safe for concurrent use.
type FS interface {
	// WriteFile writes data atomically: to a temporary name in the same
	// directory, fsync, then rename. Missing parent directories are created.
	WriteFile(ctx context.Context, path string, data []byte) error
	ReadFile(ctx context.Context, path string) ([]byte, error)
	// List returns the entries of dir sorted by name; a missing dir is
	// empty, not an error.
	List(ctx context.Context, dir string) ([]Entry, error)
	MkdirAll(ctx context.Context, dir string) error
	// RemoveAll removes path and anything under it; a missing path is not an
	// error.
	RemoveAll(ctx context.Context, path string) error
	Rename(ctx context.Context, from, to string) error
	// Stat describes path; errors.Is(err, ErrNotExist) when it is missing.
	Stat(ctx context.Context, path string) (Entry, error)
	// Create and Open stream a file (stream.go).
	Create(ctx context.Context, path string) (io.WriteCloser, error)
	Open(ctx context.Context, path string) (io.ReadCloser, error)
}

// Entry describes a file or directory.
type Entry struct {
	Name  string
	IsDir bool
	Size  int64
}

// Opener opens the FS of a URI with a registered scheme and returns the
// path within it.
type Opener func(u *url.URL) (FS, string, error)

var (
	mu      sync.RWMutex
	openers = map[string]Opener{"file": openFileURI}
)

// Register makes Open handle URIs with the given scheme (for example
// "hdfs"). It panics if the scheme is already registered.
func Register(scheme string, open Opener) {
	mu.Lock()
	defer mu.Unlock()
	scheme = strings.ToLower(scheme)
	if _, dup := openers[scheme]; dup {
		panic(fmt.Sprintf("fs: scheme %q registered twice", scheme))
	}
	openers[scheme] = open
}

// Open returns the filesystem of uri and the path within it. A file:// URI
// (file:///abs/path) or a plain absolute or relative path is local; other
// schemes must be registered.
func Open(uri string) (FS, string, error) {
	if uri == "" {
		return nil, "", fmt.Errorf("empty storage URI")
	}
	i := schemeEnd(uri)
	if i < 0 {
		p, err := filepath.Abs(uri)
		if err != nil {
			return nil, "", fmt.Errorf("storage path %q: %w", uri, err)
		}
		return Local{}, filepath.ToSlash(p), nil
	}
	scheme := strings.ToLower(uri[:i])
	mu.RLock()
	open, ok := openers[scheme]
	var names []string
	if !ok {
		for s := range openers {
			names = append(names, s)
		}
	}
	mu.RUnlock()
	if !ok {
		slices.Sort(names)
		return nil, "", fmt.Errorf("unsupported storage scheme %q (supported: %s)", scheme, strings.Join(names, ", "))
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, "", fmt.Errorf("storage URI %q: %w", uri, err)
	}
	return open(u)
}

// schemeEnd returns the index of the ':' ending uri's scheme, or -1 for a
// plain path. One-letter schemes are not schemes (C:\ on Windows).
func schemeEnd(uri string) int {
	for i := 0; i < len(uri); i++ {
		c := uri[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case c == ':' && i > 1:
			return i
		default:
			return -1
		}
	}
	return -1
}

func openFileURI(u *url.URL) (FS, string, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, "", fmt.Errorf("file URI %q names host %q: want file:///absolute/path", u, u.Host)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, "", fmt.Errorf("file URI %q has a query or fragment", u)
	}
	if !strings.HasPrefix(u.Path, "/") {
		return nil, "", fmt.Errorf("file URI %q: want file:///absolute/path", u)
	}
	return Local{}, path.Clean(u.Path), nil
}

// Join joins path elements with slashes and cleans the result.
func Join(elem ...string) string { return path.Join(elem...) }

// URI returns a string naming path in f that Open accepts: a URI when f can
// say its own (file:///… for Local), otherwise path itself.
func URI(f FS, p string) string {
	if u, ok := f.(interface{ URI(string) string }); ok {
		return u.URI(p)
	}
	return p
}
