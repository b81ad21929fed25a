package mesos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/master"
	"github.com/mesos/mesos-go/api/v1/lib/quota"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

// fakeMaster is a small stand-in for a Mesos master's scheduler API, for
// the client's own behaviour (the full emulator is internal/mesostest):
// protobuf SUBSCRIBE answered by a RecordIO stream the test feeds,
// other calls recorded and answered 202.
type fakeMaster struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	heartbeat float64
	removed   map[string]bool
	reject    int // answer SUBSCRIBE with this status
	subs      []*scheduler.Call
	calls     []*scheduler.Call
	auth      []string
	streams   chan *fakeStream
	seq       int
	subTimes  []time.Time
	// endAfterSubscribed: end each stream right after SUBSCRIBED.
	endAfterSubscribed bool
	// hang: take SUBSCRIBE and never answer.
	hang bool
	// garbage: answer SUBSCRIBE 200 with this body and content type.
	garbage, garbageType string
	// redirect: answer every request 307 to this master (host:port), as a
	// master that does not lead does.
	redirect string
	requests int
	quota    map[string]float64 // GET_QUOTA's limits for role "job"
	// current: each subscribed framework's stream id (none: not
	// subscribed); calls must carry it, as the master checks
	// (15-stream-id-errors).
	current map[string]string
}

type fakeStream struct {
	fid    string
	events chan *scheduler.Event
	end    chan struct{}
	once   sync.Once
}

func (s *fakeStream) send(e *scheduler.Event) { s.events <- e }
func (s *fakeStream) close()                  { s.once.Do(func() { close(s.end) }) }

func newFakeMaster(t *testing.T) *fakeMaster {
	f := &fakeMaster{t: t, heartbeat: 15, removed: map[string]bool{}, streams: make(chan *fakeStream, 100), current: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

func (f *fakeMaster) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	redirect, limits := f.redirect, f.quota
	f.mu.Unlock()
	if redirect != "" {
		w.Header().Set("Location", "//"+redirect+r.URL.Path)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	if r.URL.Path == "/api/v1" {
		b, _ := io.ReadAll(r.Body)
		var c master.Call
		if err := proto.Unmarshal(b, &c); err != nil || c.Type != master.Call_GET_QUOTA {
			http.Error(w, "bad call", http.StatusBadRequest)
			return
		}
		cfg := quota.QuotaConfig{Role: "job", Limits: map[string]mesos.Value_Scalar{}}
		for k, v := range limits {
			cfg.Limits[k] = mesos.Value_Scalar{Value: v}
		}
		resp := &master.Response{Type: master.Response_GET_QUOTA, GetQuota: &master.Response_GetQuota{Status: quota.QuotaStatus{Configs: []quota.QuotaConfig{cfg}}}}
		out, _ := proto.Marshal(resp)
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
		return
	}
	if r.URL.Path != "/api/v1/scheduler" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "Expecting 'Content-Type' of application/json or application/x-protobuf", http.StatusUnsupportedMediaType)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var c scheduler.Call
	if err := proto.Unmarshal(b, &c); err != nil {
		http.Error(w, "Failed to parse body into Call protobuf", http.StatusBadRequest)
		return
	}
	u, p, _ := r.BasicAuth()
	f.mu.Lock()
	f.auth = append(f.auth, u+":"+p)
	if c.Type != scheduler.Call_SUBSCRIBE {
		f.calls = append(f.calls, &c)
		fid := c.FrameworkID.GetValue()
		cur, subscribed := f.current[fid]
		if c.Type == scheduler.Call_TEARDOWN && subscribed && r.Header.Get("Mesos-Stream-Id") == cur {
			delete(f.current, fid)
			f.removed[fid] = true
		}
		f.mu.Unlock()
		sid := r.Header.Get("Mesos-Stream-Id")
		switch {
		case sid == "":
			http.Error(w, "All non-subscribe calls should include the 'Mesos-Stream-Id' header", http.StatusBadRequest)
		case !subscribed:
			http.Error(w, "Framework is not subscribed", http.StatusForbidden)
		case sid != cur:
			http.Error(w, fmt.Sprintf("The stream ID '%s' included in this request didn't match the stream ID currently associated with framework ID %s", sid, fid), http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
		return
	}
	f.subs = append(f.subs, &c)
	f.subTimes = append(f.subTimes, time.Now())
	reject, hb, end, hang := f.reject, f.heartbeat, f.endAfterSubscribed, f.hang
	fid := c.FrameworkID.GetValue()
	removed := f.removed[fid]
	if fid == "" {
		f.seq++
		fid = "fw-" + strconv.Itoa(f.seq)
	}
	f.mu.Unlock()
	if r.Header.Get("Mesos-Stream-Id") != "" {
		http.Error(w, "Subscribe calls should not include the 'Mesos-Stream-Id' header", http.StatusBadRequest)
		return
	}
	if reject != 0 {
		http.Error(w, "no", reject)
		return
	}
	if hang {
		<-r.Context().Done()
		return
	}
	f.mu.Lock()
	garbage, garbageType := f.garbage, f.garbageType
	f.mu.Unlock()
	if garbage != "" {
		w.Header().Set("Content-Type", garbageType)
		_, _ = io.WriteString(w, garbage)
		return
	}
	sid := fmt.Sprintf("stream-%d", time.Now().UnixNano())
	if !removed {
		f.set(func() { f.current[fid] = sid })
		defer f.set(func() {
			if f.current[fid] == sid {
				delete(f.current, fid)
			}
		})
	}
	w.Header().Set("Mesos-Stream-Id", sid)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
	write := func(e *scheduler.Event) bool {
		b, _ := proto.Marshal(e)
		_, err := fmt.Fprintf(w, "%d\n%s", len(b), b)
		w.(http.Flusher).Flush()
		return err == nil
	}
	if removed {
		write(&scheduler.Event{Type: scheduler.Event_ERROR, Error: &scheduler.Event_Error{Message: "Framework has been removed"}})
		return
	}
	write(&scheduler.Event{Type: scheduler.Event_SUBSCRIBED, Subscribed: &scheduler.Event_Subscribed{
		FrameworkID: &mesos.FrameworkID{Value: fid}, HeartbeatIntervalSeconds: &hb}})
	if end {
		return
	}
	s := &fakeStream{fid: fid, events: make(chan *scheduler.Event, 100), end: make(chan struct{})}
	f.streams <- s
	for {
		select {
		case e := <-s.events:
			if !write(e) {
				return
			}
		case <-s.end:
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (f *fakeMaster) stream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("no subscription")
		return nil
	}
}

// waitCall waits for the n-th (from 1) call of type typ matching ok.
func (f *fakeMaster) waitCall(t *testing.T, typ scheduler.Call_Type, ok func(*scheduler.Call) bool) *scheduler.Call {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		for _, c := range f.calls {
			if c.Type == typ && (ok == nil || ok(c)) {
				f.mu.Unlock()
				return c
			}
		}
		f.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %s call", typ)
	return nil
}

func (f *fakeMaster) count(typ scheduler.Call_Type) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.Type == typ {
			n++
		}
	}
	return n
}

func (f *fakeMaster) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeMaster) host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeMaster) subscriptions() []*scheduler.Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*scheduler.Call(nil), f.subs...)
}

func offersEvent(os ...mesos.Offer) *scheduler.Event {
	return &scheduler.Event{Type: scheduler.Event_OFFERS, Offers: &scheduler.Event_Offers{Offers: os}}
}

func updateEvent(id, agent string, state mesos.TaskState, uuid []byte) *scheduler.Event {
	st := mesos.TaskStatus{TaskID: mesos.TaskID{Value: id}, State: &state, AgentID: &mesos.AgentID{Value: agent}, UUID: uuid}
	return &scheduler.Event{Type: scheduler.Event_UPDATE, Update: &scheduler.Event_Update{Status: st}}
}

// lostLog records the resource manager's lost callbacks.
type lostLog struct {
	mu  sync.Mutex
	ids []string
}

func (l *lostLog) lost(id string, err error) {
	l.mu.Lock()
	l.ids = append(l.ids, id)
	l.mu.Unlock()
}

func (l *lostLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ids...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testRM(t *testing.T, masters string, mod func(*Config)) *ResourceManager {
	t.Helper()
	c, err := NewClient(masters)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Client: c, Role: "job", BinaryURI: "http://files/sluice", Profile: Profile{CPUs: 1, MemMB: 512, DiskMB: 10, Ports: 1},
		BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond, Tick: 10 * time.Millisecond, LaunchHold: time.Nanosecond, Log: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func launched(c *scheduler.Call) []mesos.TaskInfo {
	var out []mesos.TaskInfo
	for _, op := range c.Accept.Operations {
		if op.Launch != nil {
			out = append(out, op.Launch.TaskInfos...)
		}
	}
	return out
}

func hasArg(ti mesos.TaskInfo, args ...string) bool {
	return strings.Contains(" "+strings.Join(ti.Command.Arguments, " ")+" ", " "+strings.Join(args, " ")+" ")
}

// waitCount waits until at least n calls of typ were made and returns the
// n-th.
func (f *fakeMaster) waitCount(t *testing.T, typ scheduler.Call_Type, n int) *scheduler.Call {
	t.Helper()
	var got *scheduler.Call
	waitFor(t, fmt.Sprintf("%d %s calls", n, typ), func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		k := 0
		for _, c := range f.calls {
			if c.Type == typ {
				k++
				if k == n {
					got = c
					return true
				}
			}
		}
		return false
	})
	return got
}

// memIDs is an IDStore in memory.
type memIDs struct {
	mu sync.Mutex
	id string
}

func (m *memIDs) Load(context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.id, nil
}
func (m *memIDs) Save(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id = id
	return nil
}
func (m *memIDs) Clear(context.Context) error { return m.Save(context.Background(), "") }
func (m *memIDs) get() string                 { s, _ := m.Load(context.Background()); return s }
