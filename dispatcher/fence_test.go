package dispatcher

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/internal/hdfstest"
)

// forEachStore runs f on a store of each kind the dispatcher supports:
// file:// and hdfs:// (an hdfstest cluster speaking the real protocols).
func forEachStore(t *testing.T, f func(t *testing.T, uri string)) {
	t.Run("file", func(t *testing.T) { f(t, "file://"+t.TempDir()) })
	t.Run("hdfs", func(t *testing.T) {
		c, err := hdfstest.Start(t.TempDir(), hdfstest.BlockSize(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
		t.Setenv("HADOOP_USER_NAME", "sluice")
		t.Setenv("HADOOP_CONF_DIR", t.TempDir()) // empty: no site configuration
		t.Setenv("HADOOP_HOME", "")
		f(t, "hdfs://"+c.Addr()+"/sluice")
	})
}

// startOn starts a dispatcher on the store at uri, with its own Store (its
// own epoch), as a second process would.
func startOn(t *testing.T, uri string, fenceInterval time.Duration) *env {
	t.Helper()
	s, err := OpenStore(uri)
	if err != nil {
		t.Fatal(err)
	}
	l := &fakeLauncher{t: t}
	d, err := New(Config{Store: s, Launcher: l, Backoff: time.Millisecond, PollInterval: 20 * time.Millisecond,
		FenceInterval: fenceInterval})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() { srv.Close(); d.Close() })
	return &env{t: t, d: d, srv: srv, l: l}
}

// A second dispatcher on the same store supersedes the first: the first
// stores, launches and stops nothing any more, answers changes with 503
// and /healthz with 503; the second runs every job.
func TestFenceTakeover(t *testing.T) {
	forEachStore(t, func(t *testing.T, uri string) {
		ctx := context.Background()
		// The first finds out through its own actions, not the periodic check.
		e1 := startOn(t, uri, time.Hour)
		id := e1.submit(goodSpec)
		e1.waitState(id, Running)
		other := e1.submit(goodYAML)
		e1.waitState(other, Running)
		if e1.d.store.Epoch() != 1 {
			t.Fatalf("first dispatcher's epoch: %d", e1.d.store.Epoch())
		}

		e2 := startOn(t, uri, time.Hour)
		if e2.d.store.Epoch() != 2 {
			t.Fatalf("second dispatcher's epoch: %d", e2.d.store.Epoch())
		}
		e2.waitState(id, Running) // recovered, and a master launched for it
		e2.waitState(other, Running)

		// The first's API: changes are 503 naming the reason.
		var er errorReply
		if code := e1.do("POST", "/v1/jobs", []byte(goodSpec), &er); code != 503 || !strings.Contains(er.Error, "superseded by dispatcher epoch 2") {
			t.Fatalf("submit to the superseded dispatcher: %d %+v", code, er)
		}
		if code := e1.do("DELETE", "/v1/jobs/"+id, nil, &er); code != 503 || !strings.Contains(er.Error, "superseded by dispatcher epoch 2") {
			t.Fatalf("cancel at the superseded dispatcher: %d %+v", code, er)
		}
		if code := e1.do("POST", "/v1/jobs/"+id+"/savepoints", nil, &er); code != 503 {
			t.Fatalf("savepoint at the superseded dispatcher: %d %+v", code, er)
		}
		var health map[string]string
		if code := e1.do("GET", "/healthz", nil, &health); code != 503 || !strings.Contains(health["error"], "superseded by dispatcher epoch 2") {
			t.Fatalf("healthz of the superseded dispatcher: %d %v", code, health)
		}
		if code := e2.do("GET", "/healthz", nil, nil); code != 200 {
			t.Fatalf("healthz of the new dispatcher: %d", code)
		}

		// Its store writes are refused, and nothing lands.
		rec := e1.d.job(id).snapshot()
		rec.Reason = "written by the superseded dispatcher"
		rec.CancelRequested = true
		if err := e1.d.store.Save(ctx, &rec); !errors.Is(err, errSuperseded) || !strings.Contains(err.Error(), "superseded by dispatcher epoch 2") {
			t.Fatalf("a superseded Save: %v", err)
		}
		zombie := &Record{ID: newID(), Name: "zombie", State: Pending, Run: 1}
		if err := e1.d.store.Create(ctx, zombie, []byte(goodSpec)); !errors.Is(err, errSuperseded) {
			t.Fatalf("a superseded Create: %v", err)
		}

		// It launches and stops no master.
		_, _, m1 := e1.d.job(id).state()
		if m1 == nil {
			t.Fatal("the first dispatcher lost its master")
		}
		if err := m1.Stop(ctx); !errors.Is(err, errSuperseded) {
			t.Fatalf("a superseded Stop: %v", err)
		}
		e1.l.mu.Lock()
		fm1 := e1.l.launched[0] // id's: launched before the other job was submitted
		e1.l.mu.Unlock()
		select {
		case <-fm1.done:
			t.Fatal("the superseded dispatcher stopped a master")
		default:
		}
		if _, err := e1.d.cfg.Launcher.Launch(ctx, e1.d.masterSpec(&rec, []byte(goodSpec))); !errors.Is(err, errSuperseded) {
			t.Fatalf("a superseded Launch: %v", err)
		}
		// Its master dies: it is not started again by the first.
		fm1.end(1)
		e1.d.Close() // waits for its supervisors: they stopped when it was superseded
		if n := e1.l.count(); n != 2 {
			t.Fatalf("the superseded dispatcher launched %d masters", n)
		}

		// The second sees nothing the first wrote after the takeover, and
		// runs the job.
		recs, err := e2.d.store.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 {
			t.Fatalf("the store after the takeover: %+v", recs)
		}
		for _, r := range recs {
			if r.CancelRequested || r.Reason != "" {
				t.Fatalf("the store after the takeover: %+v", r)
			}
		}
		if _, err := e2.d.store.Spec(ctx, zombie.ID); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the superseded Create wrote a spec: %v", err)
		}
		id2 := e2.submit(goodSpec)
		e2.waitState(id2, Running)
		var c cancelReply
		if code := e2.do("DELETE", "/v1/jobs/"+id, nil, &c); code != 200 || c.State != Canceled {
			t.Fatalf("cancel at the new dispatcher: %d %+v", code, c)
		}
		if e2.d.superseded() != nil {
			t.Fatalf("the new dispatcher thinks it is superseded: %v", e2.d.superseded())
		}
	})
}

// An idle dispatcher finds out by its periodic check.
func TestFenceIdle(t *testing.T) {
	uri := "file://" + t.TempDir()
	e1 := startOn(t, uri, 10*time.Millisecond)
	if code := e1.do("GET", "/healthz", nil, nil); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	startOn(t, uri, time.Hour)
	deadline := time.Now().Add(30 * time.Second)
	for e1.do("GET", "/healthz", nil, nil) != 503 {
		if time.Now().After(deadline) {
			t.Fatal("the idle superseded dispatcher still says it is healthy")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A write checked before the takeover and paused before it lands: either
// it lands before the successor moves the records (the successor sees it,
// Save says nil) or not at all (Save says superseded, and the successor
// never sees it).
func TestFenceWriteInFlight(t *testing.T) {
	forEachStore(t, func(t *testing.T, uri string) {
		ctx := context.Background()
		s1, err := OpenStore(uri)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s1.Takeover(ctx); err != nil {
			t.Fatal(err)
		}
		rec := &Record{ID: newID(), Name: "j", State: Running, Run: 1}
		if err := s1.Create(ctx, rec, []byte(goodSpec)); err != nil {
			t.Fatal(err)
		}

		// Paused after its check; a successor takes its epoch meanwhile
		// but has not moved the records yet: the write lands, and the
		// successor reads it.
		s2, _ := OpenStore(uri)
		claimed, proceed := make(chan struct{}), make(chan struct{})
		s2.hookAfterClaim = func() { close(claimed); <-proceed }
		var wg sync.WaitGroup
		var e2 int64
		var err2 error
		s1.hookBeforeCommit = func() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e2, err2 = s2.Takeover(ctx)
			}()
			<-claimed
		}
		rec.Reason = "landed before the move"
		if err := s1.Save(ctx, rec); err != nil {
			t.Fatalf("a write landing before the successor's move: %v", err)
		}
		close(proceed)
		wg.Wait()
		if err2 != nil || e2 != 2 {
			t.Fatalf("takeover: %d %v", e2, err2)
		}
		recs, err := s2.Load(ctx)
		if err != nil || len(recs) != 1 || recs[0].Reason != "landed before the move" {
			t.Fatalf("the successor's records: %+v %v", recs, err)
		}

		// Paused after its check; a successor takes over completely: the
		// write is refused, and nothing lands.
		s2.hookBeforeCommit = func() {
			s3, _ := OpenStore(uri)
			if _, err := s3.Takeover(ctx); err != nil {
				t.Error(err)
			}
		}
		rec.Reason = "after the takeover"
		if err := s2.Save(ctx, rec); !errors.Is(err, errSuperseded) || !strings.Contains(err.Error(), "superseded by dispatcher epoch 3") {
			t.Fatalf("a write paused across a takeover: %v", err)
		}
		s4, _ := OpenStore(uri)
		if _, err := s4.Takeover(ctx); err != nil {
			t.Fatal(err)
		}
		recs, err = s4.Load(ctx)
		if err != nil || len(recs) != 1 || recs[0].Reason != "landed before the move" {
			t.Fatalf("the records after the refused write: %+v %v", recs, err)
		}
		// Nothing of it is left anywhere in the dispatcher's directories.
		f, dir, _ := fs.Open(uri)
		for _, sub := range []string{"records", "staging"} {
			es, _ := f.List(ctx, fs.Join(dir, "dispatcher", sub))
			for _, e := range es {
				files, _ := f.List(ctx, fs.Join(dir, "dispatcher", sub, e.Name))
				for _, fl := range files {
					b, _ := f.ReadFile(ctx, fs.Join(dir, "dispatcher", sub, e.Name, fl.Name))
					if strings.Contains(string(b), "after the takeover") {
						t.Fatalf("the refused write is in %s/%s/%s", sub, e.Name, fl.Name)
					}
				}
			}
		}
	})
}

// Dispatchers starting at once, on a store with a record and on a new
// one: one leads (the newest epoch), with every record, and what it writes
// is what the next one reads.
func TestFenceConcurrentTakeover(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		ctx := context.Background()
		uri := "file://" + t.TempDir()
		var want []string
		first := int64(1)
		if !fresh {
			s0, _ := OpenStore(uri)
			if _, err := s0.Takeover(ctx); err != nil {
				t.Fatal(err)
			}
			rec := &Record{ID: newID(), Name: "j", State: Running, Run: 1}
			if err := s0.Create(ctx, rec, []byte(goodSpec)); err != nil {
				t.Fatal(err)
			}
			want, first = append(want, rec.ID), 2
		}
		const n = 6
		stores := make([]*Store, n)
		var wg sync.WaitGroup
		for i := range stores {
			stores[i], _ = OpenStore(uri)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := stores[i].Takeover(ctx); err != nil && !errors.Is(err, errSuperseded) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		var leader *Store
		for _, s := range stores {
			if s.Epoch() > 0 && s.Fence(ctx) == nil {
				if leader != nil {
					t.Fatalf("fresh=%v: two leaders: epochs %d and %d", fresh, leader.Epoch(), s.Epoch())
				}
				leader = s
			}
		}
		if leader == nil || leader.Epoch() != first+n-1 {
			t.Fatalf("fresh=%v: leader: %+v", fresh, leader)
		}
		rec := &Record{ID: newID(), Name: "k", State: Pending, Run: 1}
		if err := leader.Create(ctx, rec, []byte(goodSpec)); err != nil {
			t.Fatal(err)
		}
		want = append(want, rec.ID)
		next, _ := OpenStore(uri)
		if _, err := next.Takeover(ctx); err != nil {
			t.Fatal(err)
		}
		recs, err := next.Load(ctx)
		var got []string
		for _, r := range recs {
			got = append(got, r.ID)
		}
		slices.Sort(want)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("fresh=%v: the next dispatcher's records: %v %v, want %v", fresh, got, err, want)
		}
	}
}

// A store written before epochs (jobs/<id>/job.json) keeps its jobs.
func TestFenceImportsOldStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := fs.Local{}
	id := newID()
	if err := f.WriteFile(ctx, fs.Join(dir, "jobs", id, "spec"), []byte(goodSpec)); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile(ctx, fs.Join(dir, "jobs", id, "job.json"), []byte(`{"id": "`+id+`", "name": "t", "state": "RUNNING", "run": 1}`)); err != nil {
		t.Fatal(err)
	}
	e := startOn(t, "file://"+dir, time.Hour)
	e.waitState(id, Running)
}
