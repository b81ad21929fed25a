package fs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/sluice-stream/sluice/engine/fs"
)

// streamConformance: Create writes a file in pieces that appears only on
// Commit; Abort leaves nothing; OpenFile reads ranges.
func streamConformance(t *testing.T, f fs.FS, dir string) {
	ctx := context.Background()
	if _, ok := f.(fs.Creator); !ok {
		t.Fatalf("%T is not a Creator", f)
	}
	if _, ok := f.(fs.RangeReader); !ok {
		t.Fatalf("%T is not a RangeReader", f)
	}
	data := randomBytes(3<<20+17, 9) // more than one HDFS block in the tests
	p := fs.Join(dir, "sub", "state")
	w, err := fs.Create(ctx, f, p)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 100_000 {
		if _, err := w.Write(data[off:min(off+100_000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Stat(ctx, p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the file is visible before Commit: %v", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	w.Abort() // harmless after Commit
	r, err := fs.OpenFile(ctx, f, p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", r.Size(), len(data))
	}
	for _, rg := range [][2]int64{{0, 10}, {1 << 20, 2 << 20}, {int64(len(data)) - 5, int64(len(data))}, {5, 5}} {
		got, err := io.ReadAll(io.NewSectionReader(r, rg[0], rg[1]-rg[0]))
		if err != nil || !bytes.Equal(got, data[rg[0]:rg[1]]) {
			t.Errorf("range %v: %d bytes, err %v", rg, len(got), err)
		}
	}
	// Abort: nothing at the path, no temporary file left.
	q := fs.Join(dir, "aborted")
	w, err = fs.Create(ctx, f, q)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	w.Abort()
	es, err := f.List(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Name != "sub" {
			t.Errorf("left %q after Abort", e.Name)
		}
	}
	if _, err := fs.OpenFile(ctx, f, q); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFile of a missing file: %v, want ErrNotExist", err)
	}
}

func TestLocalStream(t *testing.T) {
	streamConformance(t, fs.Local{}, filepath.ToSlash(t.TempDir()))
}

func TestHDFSStream(t *testing.T) {
	c := startHDFS(t)
	f, _ := openHDFS(t, "hdfs://"+c.Addr()+"/")
	streamConformance(t, f, "/stream")
}
