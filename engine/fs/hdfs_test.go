package fs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/internal/hdfstest"
)

// Every test starts its own hdfstest cluster: a namenode and a datanode
// speaking Hadoop RPC and the data transfer protocol on loopback.

func startHDFS(t *testing.T, opts ...hdfstest.Option) *hdfstest.Cluster {
	t.Helper()
	c, err := hdfstest.Start(t.TempDir(), append([]hdfstest.Option{hdfstest.BlockSize(1 << 20), hdfstest.Logf(t.Logf)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	t.Setenv("HADOOP_USER_NAME", "sluice")
	t.Setenv("HADOOP_CONF_DIR", t.TempDir()) // empty: no site configuration
	t.Setenv("HADOOP_HOME", "")
	return c
}

func openHDFS(t *testing.T, uri string) (fs.FS, string) {
	t.Helper()
	f, p, err := fs.Open(uri)
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := f.(*fs.HDFS); !ok {
		t.Fatalf("Open(%q) = %T", uri, f)
	} else {
		t.Cleanup(func() { h.Close() })
	}
	return f, p
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestHDFSConformance runs what TestLocal checks of Local against hdfs://.
func TestHDFSConformance(t *testing.T) {
	c := startHDFS(t)
	ctx := context.Background()
	f, base := openHDFS(t, "hdfs://"+c.Addr()+"/sluice")
	if base != "/sluice" {
		t.Fatalf("path = %q", base)
	}

	// WriteFile creates parents and replaces atomically.
	p := fs.Join(base, "a", "b", "file")
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
	es, err := f.List(ctx, fs.Join(base, "a", "b"))
	if err != nil || len(es) != 1 || es[0] != (fs.Entry{Name: "file", Size: 6}) {
		t.Fatalf("List = %+v, %v (temporary files left behind?)", es, err)
	}

	if err := f.MkdirAll(ctx, fs.Join(base, "a", "c", "d")); err != nil {
		t.Fatal(err)
	}
	if err := f.MkdirAll(ctx, fs.Join(base, "a", "c", "d")); err != nil {
		t.Fatalf("MkdirAll of an existing dir: %v", err)
	}
	es, err = f.List(ctx, fs.Join(base, "a"))
	if err != nil || len(es) != 2 || es[0] != (fs.Entry{Name: "b", IsDir: true}) || es[1] != (fs.Entry{Name: "c", IsDir: true}) {
		t.Fatalf("List = %+v, %v", es, err)
	}
	if es, err := f.List(ctx, fs.Join(base, "missing")); err != nil || len(es) != 0 {
		t.Fatalf("List(missing) = %+v, %v", es, err)
	}

	st, err := f.Stat(ctx, p)
	if err != nil || st != (fs.Entry{Name: "file", Size: 6}) {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	if st, err := f.Stat(ctx, fs.Join(base, "a")); err != nil || st != (fs.Entry{Name: "a", IsDir: true}) {
		t.Fatalf("Stat(dir) = %+v, %v", st, err)
	}
	_, err = f.Stat(ctx, fs.Join(base, "nope"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "hdfs://"+c.Addr()+"/sluice/nope") {
		t.Fatalf("Stat(missing) err = %v", err)
	}
	if _, err := f.ReadFile(ctx, fs.Join(base, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadFile(missing) err = %v", err)
	}
	if _, err := f.ReadFile(ctx, fs.Join(base, "a")); err == nil {
		t.Fatal("ReadFile of a directory succeeded")
	}

	if err := f.Rename(ctx, fs.Join(base, "a", "b"), fs.Join(base, "a", "e")); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadFile(ctx, fs.Join(base, "a", "e", "file")); err != nil || string(got) != "second" {
		t.Fatalf("after rename: %q, %v", got, err)
	}
	if err := f.Rename(ctx, fs.Join(base, "a", "gone"), fs.Join(base, "a", "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Rename(missing) = %v", err)
	}
	// Renaming a file over another replaces it.
	if err := f.WriteFile(ctx, fs.Join(base, "r1"), []byte("r1")); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile(ctx, fs.Join(base, "r2"), []byte("r2")); err != nil {
		t.Fatal(err)
	}
	if err := f.Rename(ctx, fs.Join(base, "r1"), fs.Join(base, "r2")); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadFile(ctx, fs.Join(base, "r2")); err != nil || string(got) != "r1" {
		t.Fatalf("after rename over a file: %q, %v", got, err)
	}

	if err := f.RemoveAll(ctx, fs.Join(base, "a")); err != nil {
		t.Fatal(err)
	}
	if err := f.RemoveAll(ctx, fs.Join(base, "a")); err != nil {
		t.Fatalf("RemoveAll(missing) = %v", err)
	}
	if _, err := f.Stat(ctx, fs.Join(base, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after RemoveAll: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.WriteFile(cctx, p, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteFile with a cancelled context: %v", err)
	}

	// A target that is a non-empty directory: the rename fails and the
	// temporary file is removed.
	if err := f.MkdirAll(ctx, fs.Join(base, "x", "y")); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile(ctx, fs.Join(base, "x"), []byte("z")); err == nil {
		t.Fatal("writing over a directory succeeded")
	}
	es, _ = f.List(ctx, base)
	if len(es) != 2 || es[0].Name != "r2" || es[1].Name != "x" {
		t.Fatalf("left behind: %+v", es)
	}
}

func TestHDFSMultiBlock(t *testing.T) {
	c := startHDFS(t)
	ctx := context.Background()
	f, base := openHDFS(t, "hdfs://"+c.Addr()+"/")
	p := fs.Join(base, "chk", "state")

	big := randomBytes(5<<20+4321, 1) // six 1 MiB blocks, the last partial
	if err := f.WriteFile(ctx, p, big); err != nil {
		t.Fatal(err)
	}
	if st, err := f.Stat(ctx, p); err != nil || st.Size != int64(len(big)) {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	got, err := f.ReadFile(ctx, p)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("ReadFile: %d bytes, %v", len(got), err)
	}

	// Atomic overwrite: a reader sees the old or the new content, whole.
	exact := randomBytes(3<<20, 2) // exactly three blocks
	done := make(chan error)
	go func() {
		for {
			select {
			case <-done:
				done <- nil
				return
			default:
			}
			got, err := f.ReadFile(ctx, p)
			if err != nil {
				done <- err
				return
			}
			if !bytes.Equal(got, big) && !bytes.Equal(got, exact) {
				done <- fmt.Errorf("read %d bytes that are neither version", len(got))
				return
			}
		}
	}()
	for range 2 {
		if err := f.WriteFile(ctx, p, exact); err != nil {
			t.Fatal(err)
		}
		if err := f.WriteFile(ctx, p, big); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.WriteFile(ctx, p, exact); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("reader: %v", err)
	case done <- nil:
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got, err := f.ReadFile(ctx, p); err != nil || !bytes.Equal(got, exact) {
		t.Fatalf("after overwrite: %d bytes, %v", len(got), err)
	}
	es, err := f.List(ctx, fs.Join(base, "chk"))
	if err != nil || len(es) != 1 || es[0] != (fs.Entry{Name: "state", Size: 3 << 20}) {
		t.Fatalf("List = %+v, %v", es, err)
	}
}

func TestHDFSNamenodeRestart(t *testing.T) {
	c := startHDFS(t)
	ctx := context.Background()
	f, base := openHDFS(t, "hdfs://"+c.Addr()+"/data")
	data := randomBytes(2<<20+17, 3)
	p := fs.Join(base, "f")
	if err := f.WriteFile(ctx, p, data); err != nil {
		t.Fatal(err)
	}

	c.Stop()
	for _, call := range []func() error{
		func() error { _, err := f.Stat(ctx, p); return err },
		func() error { _, err := f.ReadFile(ctx, p); return err },
		func() error { return f.WriteFile(ctx, fs.Join(base, "g"), []byte("g")) },
		func() error { _, err := f.List(ctx, base); return err },
		func() error { return f.Rename(ctx, p, p+"2") },
	} {
		err := call()
		if err == nil {
			t.Fatal("a call succeeded while the namenode is down")
		}
		if errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("outage reported as not-exist: %v", err)
		}
	}

	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadFile(ctx, p); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after restart: %d bytes, %v", len(got), err)
	}
	if err := f.WriteFile(ctx, fs.Join(base, "g"), []byte("g")); err != nil {
		t.Fatal(err)
	}

	// A restart between two calls: the connection the client holds is
	// dead, which the next call finds out and recovers from.
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	es, err := f.List(ctx, base)
	if err != nil || len(es) != 2 || es[0].Name != "f" || es[1].Name != "g" {
		t.Fatalf("List after a second restart = %+v, %v", es, err)
	}
}

func TestHDFSOpen(t *testing.T) {
	c := startHDFS(t)
	ctx := context.Background()

	f1, p := openHDFS(t, "hdfs://"+c.Addr()+"/a/../b/")
	if p != "/b" {
		t.Fatalf("path = %q", p)
	}
	if u := fs.URI(f1, "/b/c"); u != "hdfs://"+c.Addr()+"/b/c" {
		t.Fatalf("URI = %q", u)
	}
	f2, _ := openHDFS(t, "HDFS://"+c.Addr()+"/other")
	if f1 != f2 {
		t.Error("two URIs of one cluster opened two clients")
	}
	for _, bad := range []string{"hdfs://u@" + c.Addr() + "/x", "hdfs://" + c.Addr() + "/x?y", "hdfs:///x"} {
		if _, _, err := fs.Open(bad); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}

	// A nameservice of HADOOP_CONF_DIR names the namenodes (HA: the
	// first is down, the client fails over), and fs.defaultFS serves
	// hdfs:///path.
	conf := t.TempDir()
	t.Setenv("HADOOP_CONF_DIR", conf)
	site := func(name string, kv ...string) {
		var b strings.Builder
		b.WriteString("<?xml version=\"1.0\"?>\n<configuration>\n")
		for i := 0; i < len(kv); i += 2 {
			fmt.Fprintf(&b, "  <property><name>%s</name><value>%s</value></property>\n", kv[i], kv[i+1])
		}
		b.WriteString("</configuration>\n")
		if err := os.WriteFile(filepath.Join(conf, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	site("core-site.xml", "fs.defaultFS", "hdfs://sluicens")
	site("hdfs-site.xml",
		"dfs.nameservices", "sluicens",
		"dfs.ha.namenodes.sluicens", "nn1,nn2",
		"dfs.namenode.rpc-address.sluicens.nn1", "127.0.0.1:1", // nothing listens
		"dfs.namenode.rpc-address.sluicens.nn2", c.Addr())
	f3, p3 := openHDFS(t, "hdfs://sluicens/x")
	if p3 != "/x" || fs.URI(f3, p3) != "hdfs://sluicens/x" {
		t.Fatalf("nameservice: %q %q", p3, fs.URI(f3, p3))
	}
	if err := f3.WriteFile(ctx, p3, []byte("via the nameservice")); err != nil {
		t.Fatal(err)
	}
	f4, p4 := openHDFS(t, "hdfs:///x")
	if got, err := f4.ReadFile(ctx, p4); err != nil || string(got) != "via the nameservice" {
		t.Fatalf("via fs.defaultFS: %q, %v", got, err)
	}
	if got, err := f1.ReadFile(ctx, "/x"); err != nil || string(got) != "via the nameservice" {
		t.Fatalf("via the address: %q, %v", got, err)
	}
}

func TestHDFSContext(t *testing.T) {
	c := startHDFS(t)
	f, _ := openHDFS(t, "hdfs://"+c.Addr()+"/")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.WriteFile(ctx, "/f", []byte("x")); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := f.ReadFile(ctx, "/f"); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadFile with a cancelled context: %v", err)
	}
	if got, err := f.ReadFile(context.Background(), "/f"); err != nil || string(got) != "x" {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
}

// TestHDFSUnresponsiveNamenode: a namenode that accepts connections but never
// answers fails calls when their context ends instead of hanging them.
func TestHDFSUnresponsiveNamenode(t *testing.T) {
	startHDFS(t) // for the environment
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, conn); conn.Close() }()
		}
	}()
	f, _ := openHDFS(t, "hdfs://"+ln.Addr().String()+"/")
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		_, err := f.Stat(ctx, "/x")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("Stat = %v after %v", err, time.Since(start))
		}
	}
}

// TestHDFSCheckpointStorage runs engine/checkpoint's storage on hdfs://.
func TestHDFSCheckpointStorage(t *testing.T) {
	c := startHDFS(t)
	ctx := context.Background()
	root := "hdfs://" + c.Addr()
	st, err := checkpoint.Open(root+"/job/checkpoints", root+"/job/savepoints")
	if err != nil {
		t.Fatal(err)
	}
	if st.CheckpointDir() != root+"/job/checkpoints" {
		t.Fatalf("CheckpointDir = %q", st.CheckpointDir())
	}
	state := randomBytes(1<<20+999, 4) // spans two blocks
	for id := int64(1); id <= 3; id++ {
		w := checkpoint.NewWriter()
		w.AddKeyGroup(0, state)
		w.AddOperatorState([]byte(fmt.Sprint("offset-", id)))
		data, ss := w.Finish()
		ss, err := st.WriteState(ctx, id, false, "src", 0, data, ss)
		if err != nil {
			t.Fatal(err)
		}
		md := &checkpoint.Metadata{JobName: "job", CheckpointID: id, TimestampMs: id, MaxParallelism: 1,
			Nodes: []checkpoint.NodeState{{NodeID: "src", Parallelism: 1, Subtasks: []checkpoint.SubtaskState{ss}}}}
		loc, err := st.Commit(ctx, md)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(loc, root+"/job/checkpoints/chk-") {
			t.Fatalf("Commit = %q", loc)
		}
	}
	if err := st.Prune(ctx, 2); err != nil {
		t.Fatal(err)
	}

	// The latest checkpoint survives a namenode restart.
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	md, dir, err := st.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if md.CheckpointID != 3 || dir != root+"/job/checkpoints/chk-3" {
		t.Fatalf("Latest = %d at %q", md.CheckpointID, dir)
	}
	data, err := st.ReadState(ctx, dir, md.Nodes[0].Subtasks[0])
	if err != nil {
		t.Fatal(err)
	}
	kg := md.Nodes[0].Subtasks[0].KeyGroups[0]
	if !bytes.Equal(data[kg.Offset:kg.Offset+kg.Length], state) {
		t.Fatal("state differs after the round trip")
	}
	f, _ := openHDFS(t, root+"/")
	es, err := f.List(ctx, "/job/checkpoints")
	if err != nil || len(es) != 2 || es[0].Name != "chk-2" || es[1].Name != "chk-3" {
		t.Fatalf("after Prune(2): %+v, %v", es, err)
	}
}
