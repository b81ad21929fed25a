package fs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sluice-stream/sluice/engine/fs"
)

// testStreams runs the streamed-file contract on f under root.
func testStreams(t *testing.T, f fs.FS, root string) {
	ctx := context.Background()
	data := randomBytes(3<<20+123, 5) // several HDFS blocks of 1 MiB
	p := fs.Join(root, "a", "b", ".part-x.inprogress")
	w, err := f.Create(ctx, p) // parents created
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 100_000 {
		if _, err := w.Write(data[off:min(off+100_000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if e, err := f.Stat(ctx, p); err != nil || e.Size != int64(len(data)) {
		t.Fatalf("stat after Close: %+v, %v; want %d bytes", e, err, len(data))
	}
	for _, off := range []int64{0, 1, 1<<20 + 17, int64(len(data))} {
		r, err := f.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if err := fs.Seek(r, off); err != nil {
			t.Fatalf("seek %d: %v", off, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("read from %d: %d bytes, %v; want %d", off, len(got), err, len(data)-int(off))
		}
	}
	// Create truncates; Rename commits; Open of a missing file is ErrNotExist.
	w, err = f.Create(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("short\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	final := fs.Join(root, "a", "b", "part-x")
	if err := f.Rename(ctx, p, final); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadFile(ctx, final); err != nil || string(got) != "short\n" {
		t.Fatalf("after truncate and rename: %q, %v", got, err)
	}
	if _, err := f.Open(ctx, p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open of a renamed file: %v, want ErrNotExist", err)
	}
	if err := f.Rename(ctx, p, final); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rename of a missing file: %v, want ErrNotExist", err)
	}

	for _, name := range []string{"x/1.json", "x/2.json", "x/.hidden.json", "x/3.txt", "y/4.json", "y/sub/5.json"} {
		if err := f.WriteFile(ctx, fs.Join(root, "g", name), []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	for pattern, want := range map[string][]string{
		"g/x/*.json":      {"g/x/.hidden.json", "g/x/1.json", "g/x/2.json"}, // as filepath.Glob: * matches a leading dot
		"g/*/[1-4].json":  {"g/x/1.json", "g/x/2.json", "g/y/4.json"},
		"g/y/sub/5.json":  {"g/y/sub/5.json"},
		"g/nothing/*.txt": nil,
	} {
		got, err := fs.Glob(ctx, f, fs.Join(root, pattern))
		if err != nil {
			t.Fatalf("glob %s: %v", pattern, err)
		}
		for i := range want {
			want[i] = fs.Join(root, want[i])
		}
		if !slices.Equal(got, want) {
			t.Fatalf("glob %s: %v, want %v", pattern, got, want)
		}
	}
}

func TestLocalStreams(t *testing.T) {
	root := filepath.ToSlash(t.TempDir())
	testStreams(t, fs.Local{}, root)
	// Glob agrees with filepath.Glob on the local disk.
	for _, pattern := range []string{"g/*/*.json", "g/x/?.json", "g/*"} {
		want, _ := filepath.Glob(filepath.Join(root, pattern))
		got, err := fs.Glob(context.Background(), fs.Local{}, fs.Join(root, pattern))
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("glob %s: %v, %v; filepath.Glob: %v", pattern, got, err, want)
		}
	}
}

func TestHDFSStreams(t *testing.T) {
	c := startHDFS(t)
	f, root := openHDFS(t, "hdfs://"+c.Addr()+"/streams")
	testStreams(t, f, root)
}
