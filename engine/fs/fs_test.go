package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestOpen(t *testing.T) {
	wd, _ := os.Getwd()
	cases := []struct {
		uri, path, err string
	}{
		{uri: "file:///var/lib/sluice/chk", path: "/var/lib/sluice/chk"},
		{uri: "file:///var/lib/sluice/chk/", path: "/var/lib/sluice/chk"},
		{uri: "file://localhost/tmp/x", path: "/tmp/x"},
		{uri: "file:/tmp/x", path: "/tmp/x"},
		{uri: "FILE:///tmp/x", path: "/tmp/x"},
		{uri: "/tmp/a/../b", path: "/tmp/b"},
		{uri: "rel/dir", path: filepath.ToSlash(filepath.Join(wd, "rel/dir"))},
		{uri: "gs://bucket/chk", err: `unsupported storage scheme "gs" (supported: file, hdfs`},
		{uri: "s3://bucket/x", err: `unsupported storage scheme "s3"`},
		{uri: "file://host/tmp", err: `names host "host"`},
		{uri: "file://rel/path", err: `names host "rel"`},
		{uri: "", err: "empty storage URI"},
	}
	for _, c := range cases {
		f, p, err := Open(c.uri)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Open(%q): err = %v, want %q", c.uri, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%q): %v", c.uri, err)
			continue
		}
		if _, ok := f.(Local); !ok || p != c.path {
			t.Errorf("Open(%q) = %T %q, want Local %q", c.uri, f, p, c.path)
		}
	}
}

func TestURIRoundTrip(t *testing.T) {
	dir := t.TempDir()
	u := URI(Local{}, filepath.ToSlash(dir))
	if !strings.HasPrefix(u, "file:///") {
		t.Fatalf("URI = %q", u)
	}
	_, p, err := Open(u)
	if err != nil || p != filepath.ToSlash(dir) {
		t.Fatalf("Open(%q) = %q, %v", u, p, err)
	}
}

func TestLocal(t *testing.T) {
	ctx := context.Background()
	var f FS = Local{}
	base := filepath.ToSlash(t.TempDir())

	// WriteFile creates parents and replaces atomically.
	p := Join(base, "a", "b", "file")
	if err := f.WriteFile(ctx, p, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile(ctx, p, []byte("second")); err != nil {
		t.Fatal(err)
	}
	got, err := f.ReadFile(ctx, p)
	if err != nil || string(got) != "second" {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
	es, err := f.List(ctx, Join(base, "a", "b"))
	if err != nil || len(es) != 1 || es[0] != (Entry{Name: "file", Size: 6}) {
		t.Fatalf("List = %+v, %v (temporary files left behind?)", es, err)
	}

	if err := f.MkdirAll(ctx, Join(base, "a", "c", "d")); err != nil {
		t.Fatal(err)
	}
	es, err = f.List(ctx, Join(base, "a"))
	if err != nil || len(es) != 2 || es[0] != (Entry{Name: "b", IsDir: true}) || es[1].Name != "c" {
		t.Fatalf("List = %+v, %v", es, err)
	}
	if es, err := f.List(ctx, Join(base, "missing")); err != nil || len(es) != 0 {
		t.Fatalf("List(missing) = %+v, %v", es, err)
	}

	st, err := f.Stat(ctx, p)
	if err != nil || st != (Entry{Name: "file", Size: 6}) {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	if _, err := f.Stat(ctx, Join(base, "nope")); !errors.Is(err, iofs.ErrNotExist) || !errors.Is(err, ErrNotExist) {
		t.Fatalf("Stat(missing) err = %v", err)
	}
	if _, err := f.ReadFile(ctx, Join(base, "nope")); !errors.Is(err, ErrNotExist) {
		t.Fatalf("ReadFile(missing) err = %v", err)
	}

	if err := f.Rename(ctx, Join(base, "a", "b"), Join(base, "a", "e")); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadFile(ctx, Join(base, "a", "e", "file")); err != nil || string(got) != "second" {
		t.Fatalf("after rename: %q, %v", got, err)
	}

	if err := f.RemoveAll(ctx, Join(base, "a")); err != nil {
		t.Fatal(err)
	}
	if err := f.RemoveAll(ctx, Join(base, "a")); err != nil {
		t.Fatalf("RemoveAll(missing) = %v", err)
	}
	if _, err := f.Stat(ctx, Join(base, "a")); !errors.Is(err, ErrNotExist) {
		t.Fatalf("after RemoveAll: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.WriteFile(cctx, p, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteFile with a cancelled context: %v", err)
	}
}

func TestWriteFileFailureLeavesNoTemp(t *testing.T) {
	ctx := context.Background()
	base := filepath.ToSlash(t.TempDir())
	// The target is a non-empty directory: the rename fails.
	if err := (Local{}).MkdirAll(ctx, Join(base, "x", "y")); err != nil {
		t.Fatal(err)
	}
	if err := (Local{}).WriteFile(ctx, Join(base, "x"), []byte("z")); err == nil {
		t.Fatal("writing over a directory succeeded")
	}
	es, _ := (Local{}).List(ctx, base)
	if len(es) != 1 || es[0].Name != "x" {
		t.Fatalf("left behind: %+v", es)
	}
}

var registerOnce sync.Once // -count=N runs the test N times

func TestRegister(t *testing.T) {
	registerOnce.Do(func() {
		Register("memtest", func(u *url.URL) (FS, string, error) { return Local{}, u.Path, nil })
	})
	if _, p, err := Open("memtest://h/x/y"); err != nil || p != "/x/y" {
		t.Fatalf("Open = %q, %v", p, err)
	}
	_, _, err := Open("nope://x")
	if err == nil || !strings.Contains(err.Error(), "(supported: file, hdfs, memtest)") {
		t.Fatalf("err = %v", err)
	}
}
