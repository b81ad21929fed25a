package fs

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"
)

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
