package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path"
	"strings"

	"github.com/sluice-stream/sluice/engine/fs"
)

// Entropy injection (Flink's FLINK-9061, from Netflix's S3 experience): when
// the checkpoint path has a segment equal to the entropy key, state files go
// under a path where that segment is replaced by random hex characters, so
// writes spread over many prefixes of an object store or namenode; the
// metadata goes under the path with the segment removed, so it stays at a
// known place. Savepoints get no entropy: they must be self-contained.
type entropy struct {
	key    string
	length int
	root   string // the path before the entropy segment
	rest   string // the path after it ("" when the segment is last)
}

// Option configures Open.
type Option func(*Storage)

// WithEntropy enables entropy injection for the path segment key (e.g.
// "_entropy_"), replaced by length random hex characters (default 4). A
// checkpoint path without that segment gets none.
func WithEntropy(key string, length int) Option {
	return func(s *Storage) {
		if key == "" {
			return
		}
		if length <= 0 {
			length = 4
		}
		segs := strings.Split(s.base, "/")
		for i, seg := range segs {
			if seg != key {
				continue
			}
			e := &entropy{key: key, length: length, root: strings.Join(segs[:i], "/"), rest: strings.Join(segs[i+1:], "/")}
			if e.root == "" {
				e.root = "/"
			}
			s.entropy = e
			s.base = path.Clean(fs.Join(e.root, e.rest))
			return
		}
	}
}

// dataDir is where a state file of checkpoint id goes: a fresh random
// prefix per file.
func (e *entropy) dataDir(id int64) (string, error) {
	b := make([]byte, (e.length+1)/2)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	r := hex.EncodeToString(b)[:e.length]
	return fs.Join(e.root, r, e.rest, chkName(id)), nil
}

func (e *entropy) isPrefix(name string) bool {
	if len(name) != e.length {
		return false
	}
	_, err := hex.DecodeString(name + strings.Repeat("0", len(name)%2))
	return err == nil
}

// removeData deletes the state files of checkpoint id that live under
// random prefixes (those of an attempt without metadata included) and the
// prefixes left empty. It lists the root: fine for a namenode, and where
// listing is expensive the metadata's own list is used first by callers.
func (s *Storage) removeData(ctx context.Context, id int64, dirs []string) error {
	e := s.entropy
	if e == nil {
		return nil
	}
	var errs []string
	remove := func(d string) {
		if err := s.fs.RemoveAll(ctx, d); err != nil {
			errs = append(errs, err.Error())
		}
	}
	prefixes := map[string]bool{}
	for _, d := range dirs {
		remove(d)
		if rel, ok := strings.CutPrefix(d, strings.TrimSuffix(e.root, "/")+"/"); ok {
			prefixes[strings.SplitN(rel, "/", 2)[0]] = true
		}
	}
	if dirs == nil {
		es, err := s.fs.List(ctx, e.root)
		if err != nil {
			return fmt.Errorf("listing %s: %w", fs.URI(s.fs, e.root), err)
		}
		for _, en := range es {
			if en.IsDir && e.isPrefix(en.Name) {
				d := fs.Join(e.root, en.Name, e.rest, chkName(id))
				if _, err := s.fs.Stat(ctx, d); err == nil {
					remove(d)
					prefixes[en.Name] = true
				}
			}
		}
	}
	// Drop prefixes that hold nothing else now.
	for p := range prefixes {
		top := fs.Join(e.root, p)
		if s.emptyTree(ctx, top) {
			remove(top)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing state files of checkpoint %d: %s", id, strings.Join(errs, "; "))
	}
	return nil
}

// emptyTree reports whether dir holds directories only, no files.
func (s *Storage) emptyTree(ctx context.Context, dir string) bool {
	es, err := s.fs.List(ctx, dir)
	if err != nil {
		return false
	}
	for _, en := range es {
		if !en.IsDir || !s.emptyTree(ctx, fs.Join(dir, en.Name)) {
			return false
		}
	}
	return true
}

// dataDirs lists the entropy directories a checkpoint's metadata names.
func dataDirs(md *Metadata) []string {
	dirs := []string{}
	for _, n := range md.Nodes {
		for _, st := range n.Subtasks {
			if st.Dir != "" {
				dirs = append(dirs, st.Dir)
			}
		}
	}
	return dirs
}
