package hdfstest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/colinmarc/hdfs/v2"
)

func start(t *testing.T, opts ...Option) *Cluster {
	t.Helper()
	c, err := Start(t.TempDir(), append([]Option{Logf(t.Logf)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func client(t *testing.T, c *Cluster) *hdfs.Client {
	t.Helper()
	cl, err := hdfs.NewClient(hdfs.ClientOptions{Addresses: []string{c.Addr()}, User: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeFile(t *testing.T, cl *hdfs.Client, name string, data []byte) {
	t.Helper()
	w, err := cl.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes cross packet, chunk and block boundaries.
	for off := 0; off < len(data); {
		n := min(len(data)-off, 100_000+off%7777)
		if _, err := w.Write(data[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestClientOperations(t *testing.T) {
	c := start(t, BlockSize(1<<20))
	cl := client(t, c)

	if err := cl.MkdirAll("/a/b", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := cl.MkdirAll("/a/b", 0o755); err != nil {
		t.Fatalf("MkdirAll of an existing dir: %v", err)
	}
	if err := cl.Mkdir("/a/b", 0o755); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Mkdir of an existing dir: %v", err)
	}
	if err := cl.Mkdir("/x/y", 0o755); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Mkdir without parent: %v", err)
	}

	// A multi-block file round-trips byte-exact.
	data := randomBytes(5<<20+12345, 1)
	writeFile(t, cl, "/a/b/big", data)
	fi, err := cl.Stat("/a/b/big")
	if err != nil || fi.Size() != int64(len(data)) || fi.IsDir() || fi.Name() != "big" {
		t.Fatalf("Stat = %v, %v", fi, err)
	}
	got, err := cl.ReadFile("/a/b/big")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadFile: %d bytes, %v (equal %v)", len(got), err, bytes.Equal(got, data))
	}
	f, err := cl.Open("/a/b/big")
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1, 511, 513, 1<<20 - 3, 1 << 20, 3<<20 + 777, int64(len(data)) - 10} {
		buf := make([]byte, 10)
		if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+10]) {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
	}
	f.Close()

	// Empty and small files.
	writeFile(t, cl, "/a/empty", nil)
	if got, err := cl.ReadFile("/a/empty"); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q, %v", got, err)
	}
	writeFile(t, cl, "/a/small", []byte("hello"))

	if _, err := cl.Create("/a/small"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create existing: %v", err)
	}
	if _, err := cl.CreateFile("/a/small", 1, 1<<20, 0o644); !errors.Is(err, os.ErrExist) {
		t.Fatalf("CreateFile existing (namenode check): %v", err)
	}
	if _, err := cl.CreateFile("/nope/f", 1, 1<<20, 0o644); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("CreateFile without parent: %v", err)
	}
	if _, err := cl.Stat("/a/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Stat missing: %v", err)
	}
	if _, err := cl.ReadFile("/a/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile missing: %v", err)
	}

	// Append to a partial last block and across a block boundary.
	w, err := cl.Append("/a/small")
	if err != nil {
		t.Fatal(err)
	}
	more := randomBytes(1<<20+100, 2)
	if _, err := w.Write(more); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.ReadFile("/a/small"); err != nil || !bytes.Equal(got, append([]byte("hello"), more...)) {
		t.Fatalf("after append: %d bytes, %v", len(got), err)
	}

	fis, err := cl.ReadDir("/a")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range fis {
		names = append(names, fi.Name())
	}
	if !slices.Equal(names, []string{"b", "empty", "small"}) || !fis[0].IsDir() {
		t.Fatalf("ReadDir = %v", names)
	}

	// rename2 overwrites a file; a directory moves with its contents.
	if err := cl.Rename("/a/small", "/a/empty"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Stat("/a/small"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("renamed source: %v", err)
	}
	if err := cl.Rename("/a/b", "/c"); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.ReadFile("/c/big"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after directory rename: %v", err)
	}
	if err := cl.Rename("/missing", "/d"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rename missing: %v", err)
	}

	if err := cl.Remove("/c"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("Remove non-empty: %v", err)
	}
	if err := cl.RemoveAll("/c"); err != nil {
		t.Fatal(err)
	}
	if err := cl.RemoveAll("/c"); err != nil {
		t.Fatalf("RemoveAll missing: %v", err)
	}
	if _, err := cl.Stat("/c/big"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after RemoveAll: %v", err)
	}

	if _, err := cl.StatFs(); err != nil {
		t.Fatal(err)
	}
	if cs, err := cl.GetContentSummary("/a"); err != nil || cs.Size() != int64(5+len(more)) || cs.FileCount() != 1 {
		t.Fatalf("GetContentSummary = %+v, %v", cs, err)
	}
	if d, err := cl.ServerDefaults(); err != nil || d.BlockSize != 1<<20 {
		t.Fatalf("ServerDefaults = %+v, %v", d, err)
	}
}

func TestListingPages(t *testing.T) {
	c := start(t, ListLimit(3))
	cl := client(t, c)
	var want []string
	for i := range 10 {
		name := string(rune('a' + i))
		want = append(want, name)
		writeFile(t, cl, "/"+name, []byte(name))
	}
	fis, err := cl.ReadDir("/")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range fis {
		names = append(names, fi.Name())
	}
	if !slices.Equal(names, want) {
		t.Fatalf("ReadDir = %v", names)
	}
}

func TestConcurrentWriters(t *testing.T) {
	c := start(t)
	errc := make(chan error, 4)
	for i := range 4 {
		go func() {
			cl, err := hdfs.NewClient(hdfs.ClientOptions{Addresses: []string{c.Addr()}, User: "tester"})
			if err != nil {
				errc <- err
				return
			}
			defer cl.Close()
			data := randomBytes(3<<20+i, uint64(i))
			name := "/f" + string(rune('0'+i))
			w, err := cl.Create(name)
			if err == nil {
				_, err = w.Write(data)
			}
			if err == nil {
				err = w.Close()
			}
			if err == nil {
				var got []byte
				got, err = cl.ReadFile(name)
				if err == nil && !bytes.Equal(got, data) {
					err = errors.New(name + " differs")
				}
			}
			errc <- err
		}()
	}
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestStopRestart(t *testing.T) {
	dir := t.TempDir()
	c, err := Start(dir, Logf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	addr := c.Addr()
	cl := client(t, c)
	data := randomBytes(2<<20+5, 3)
	writeFile(t, cl, "/keep", data)

	c.Stop()
	if _, err := cl.Stat("/keep"); err == nil {
		t.Fatal("Stat succeeded while the cluster is stopped")
	}
	if _, err := hdfs.NewClient(hdfs.ClientOptions{Addresses: []string{addr}, User: "tester"}); err == nil {
		t.Fatal("connected while the cluster is stopped")
	}

	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if c.Addr() != addr {
		t.Fatalf("address changed: %s -> %s", addr, c.Addr())
	}
	cl2 := client(t, c)
	if got, err := cl2.ReadFile("/keep"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after restart: %d bytes, %v", len(got), err)
	}
	writeFile(t, cl2, "/new", []byte("x"))

	// A second cluster on the same directory sees the same state.
	c.Stop()
	c2, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Stop()
	cl3 := client(t, c2)
	if got, err := cl3.ReadFile("/keep"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("new cluster on the same dir: %v", err)
	}
	if _, err := cl3.Stat("/new"); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteWhileWriting(t *testing.T) {
	c := start(t)
	cl := client(t, c)
	w, err := cl.Create("/w")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(1<<20+10, 4)); err != nil {
		t.Fatal(err)
	}
	other := client(t, c)
	if _, err := other.Create("/w"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create of a file being written: %v", err)
	}
	if err := other.Remove("/w"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close of a deleted file succeeded")
	}
}

func TestStopDuringWrite(t *testing.T) {
	c := start(t)
	cl := client(t, c)
	data := randomBytes(3<<20, 5)
	w, err := cl.Create("/partial")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:1<<20+1000]); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop hangs with a write in progress")
	}
	_, werr := w.Write(data[1<<20+1000:])
	if cerr := w.Close(); werr == nil && cerr == nil {
		t.Fatal("a write across the outage succeeded")
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	cl2 := client(t, c)
	// The completed first block survives; the file stays under
	// construction (leases are not recovered) and cannot be created anew.
	got, err := cl2.ReadFile("/partial")
	if err != nil || !bytes.Equal(got, data[:1<<20]) {
		t.Fatalf("ReadFile = %d bytes, %v", len(got), err)
	}
	if _, err := cl2.Create("/partial"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create = %v", err)
	}
	if err := cl2.Remove("/partial"); err != nil {
		t.Fatal(err)
	}
}
