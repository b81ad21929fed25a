package mesos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

// sentCall is a call as the client sent it: when its request left (the
// transport's RoundTrip) and its body.
type sentCall struct {
	at   time.Time
	body []byte
}

// stampTransport notes when each request is sent; the body is kept as
// bytes and decoded after the batch, so the timed path pays only a copy.
type stampTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	sent []sentCall
}

func (s *stampTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	at := time.Now()
	var body []byte
	if req.GetBody != nil {
		if rc, err := req.GetBody(); err == nil {
			body, _ = io.ReadAll(rc)
			rc.Close()
		}
	}
	s.mu.Lock()
	s.sent = append(s.sent, sentCall{at: at, body: body})
	s.mu.Unlock()
	return s.next.RoundTrip(req)
}

func (s *stampTransport) take() []sentCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sent
	s.sent = nil
	return out
}

// BenchmarkOfferToLaunch: one OFFERS event from 1,000 agents (as the
// master sends an allocation cycle's offers to a framework: one event),
// decoded from its protobuf bytes and handled by the resource manager as
// its subscription does; each accepted offer's latency runs from the
// event's bytes in hand to its ACCEPT call leaving the client. The calls
// go over loopback HTTP to a server that answers 202 at once, as the
// master does (it answers before it acts), so the figure includes the
// resource manager's sequential calls: the k-th ACCEPT waits for the k-1
// before it. Metrics: p50-us and p99-us of the accepted offers, decline-us
// (the one DECLINE of the rest), accepts/op; ns/op is one whole batch.
func BenchmarkOfferToLaunch(b *testing.B) {
	for _, c := range []struct {
		name        string
		need        int
		constraints []string
	}{
		{"agents=1000/need=10", 10, nil},
		{"agents=1000/need=1000", 1000, nil},
		{"agents=1000/need=1000/hostname-UNIQUE", 1000, []string{"hostname:UNIQUE"}},
	} {
		b.Run(c.name, func(b *testing.B) { benchOffers(b, 1000, c.need, c.constraints) })
	}
}

func benchOffers(b *testing.B, agents, need int, constraints []string) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	client, err := NewClient(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	st := &stampTransport{next: &http.Transport{MaxIdleConnsPerHost: 4}}
	client.HTTP = &http.Client{Transport: st, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var cons []Constraint
	for _, s := range constraints {
		c, err := ParseConstraint(s)
		if err != nil {
			b.Fatal(err)
		}
		cons = append(cons, c)
	}
	r, err := New(Config{Client: client, Role: "job", BinaryURI: "http://files/sluice", Constraints: cons,
		Profile: Profile{CPUs: 1, MemMB: 1024, DiskMB: 256, Ports: 1}, Slots: 1,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	r.master = "10.0.0.1:7000"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &session{r: r, ctx: ctx, fid: "fw-bench", wake: make(chan struct{}, 1)}

	// Agents of 8 cpus and 32 GB, as in a production cluster: the matcher
	// spreads, one TaskManager per offer per round.
	offers := make([]mesos.Offer, agents)
	for i := range offers {
		host := "10.1." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250)
		offers[i] = mkOffer(offerSpec{id: "o-" + strconv.Itoa(i), host: host, cpus: 8, mem: 32768, disk: 100000,
			ports: [][2]uint64{{31000, 32000}}, attrs: map[string]string{"rack": "r" + strconv.Itoa(i%20)}})
	}
	ev, err := proto.Marshal(offersEvent(offers...))
	if err != nil {
		b.Fatal(err)
	}
	reset := func() {
		r.mu.Lock()
		r.tasks, r.ended, r.want, r.suppressed, r.revive = map[string]*task{}, map[string]bool{}, need, false, false
		r.mu.Unlock()
	}

	var lat []time.Duration
	var decline []time.Duration
	accepts := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		reset()
		st.take()
		b.StartTimer()
		t0 := time.Now()
		var e scheduler.Event
		if err := proto.Unmarshal(ev, &e); err != nil {
			b.Fatal(err)
		}
		if err := r.handle(s, &e); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, c := range st.take() {
			var call scheduler.Call
			if err := proto.Unmarshal(c.body, &call); err != nil {
				b.Fatal(err)
			}
			switch call.Type {
			case scheduler.Call_ACCEPT:
				accepts++
				for range call.Accept.OfferIDs {
					lat = append(lat, c.at.Sub(t0))
				}
			case scheduler.Call_DECLINE:
				decline = append(decline, c.at.Sub(t0))
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	if len(lat) != min(need, agents)*b.N {
		b.Fatalf("%d offers accepted over %d batches, want %d each", len(lat), b.N, min(need, agents))
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(percentile(lat, 0.50)), "p50-us")
	b.ReportMetric(us(percentile(lat, 0.99)), "p99-us")
	if len(decline) > 0 {
		b.ReportMetric(us(percentile(decline, 0.50)), "decline-us")
	}
	b.ReportMetric(float64(accepts)/float64(b.N), "accepts/op")
}

// percentile: the nearest-rank percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(k, len(s)-1))]
}

// TestPercentile: the benchmark's figures rest on it.
func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {1, 100}, {0.001, 1}} {
		if got := percentile(ds, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("empty: %v", fmt.Sprint(got))
	}
}

// BenchmarkOfferBatchParts: the parts of BenchmarkOfferToLaunch before the
// first call, apart: decoding the 1,000-offer event, and Match for 10
// TaskManagers.
func BenchmarkOfferBatchParts(b *testing.B) {
	offers := make([]mesos.Offer, 1000)
	for i := range offers {
		host := "10.1." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250)
		offers[i] = mkOffer(offerSpec{id: "o-" + strconv.Itoa(i), host: host, cpus: 8, mem: 32768, disk: 100000,
			ports: [][2]uint64{{31000, 32000}}, attrs: map[string]string{"rack": "r" + strconv.Itoa(i%20)}})
	}
	ev, err := proto.Marshal(offersEvent(offers...))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var e scheduler.Event
			if err := proto.Unmarshal(ev, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("match/need=10", func(b *testing.B) {
		b.ReportAllocs()
		req := Request{Role: "job", Profile: Profile{CPUs: 1, MemMB: 1024, DiskMB: 256, Ports: 1}, Need: 10}
		for i := 0; i < b.N; i++ {
			if p := Match(offers, req); len(p.Accept) != 10 {
				b.Fatalf("%d accepted", len(p.Accept))
			}
		}
	})
}
