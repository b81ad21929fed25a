package mesos

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler/calls"
)

func (f *fakeMaster) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// A master that does not lead answers 307 with a protocol-relative
// Location (11-redirect): every call follows it, not only SUBSCRIBE, and
// the next call goes to the leader straight away. When the leader changes,
// the next call follows the new redirect.
func TestClientFollowsRedirectOnEveryCall(t *testing.T) {
	a, b, c := newFakeMaster(t), newFakeMaster(t), newFakeMaster(t)
	a.set(func() { a.redirect = b.host() })
	cl, err := NewClient(a.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := cl.Subscribe(ctx, SubscribeCall(FrameworkOptions{Name: "t", User: "u", Role: "job"}, "", false))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := st.Next()
	if err != nil || e.Type != scheduler.Event_SUBSCRIBED {
		t.Fatalf("first event %v, %v", e, err)
	}
	if cl.Leader() != b.srv.URL {
		t.Fatalf("leader %s, want %s", cl.Leader(), b.srv.URL)
	}
	if err := cl.Call(ctx, calls.Revive().With(calls.Framework("fw-1"))); err != nil {
		t.Fatal(err)
	}
	if n := a.requestCount(); n != 1 {
		t.Fatalf("the non-leading master got %d requests, want 1 (the redirected SUBSCRIBE)", n)
	}
	if b.count(scheduler.Call_REVIVE) != 1 {
		t.Fatal("REVIVE did not reach the leader")
	}
	// The leader moves on: b now redirects to c (which knows the
	// framework's stream, for the test).
	b.set(func() { b.redirect = c.host() })
	c.set(func() { c.current["fw-1"] = st.ID })
	if err := cl.Call(ctx, calls.Suppress().With(calls.Framework("fw-1"))); err != nil {
		t.Fatal(err)
	}
	if err := cl.Call(ctx, calls.Revive().With(calls.Framework("fw-1"))); err != nil {
		t.Fatal(err)
	}
	if c.count(scheduler.Call_SUPPRESS) != 1 || c.count(scheduler.Call_REVIVE) != 1 {
		t.Fatal("calls did not follow the redirect to the new leader")
	}
	if cl.Leader() != c.srv.URL {
		t.Fatalf("leader %s, want %s", cl.Leader(), c.srv.URL)
	}
	// The operator API follows too.
	a.set(func() { a.redirect = c.host() })
	c.set(func() { c.quota = map[string]float64{"cpus": 2} })
	cl2, _ := NewClient(a.srv.URL)
	lim, err := cl2.QuotaLimits(ctx, "job")
	if err != nil || lim["cpus"] != 2 {
		t.Fatalf("quota through a redirect: %v, %v", lim, err)
	}
}

// With several masters, one that cannot be reached is skipped.
func TestClientTriesTheOtherMasters(t *testing.T) {
	down := newFakeMaster(t)
	downURL := down.srv.URL
	down.srv.Close()
	up := newFakeMaster(t)
	cl, err := NewClient(downURL + "," + strings.TrimPrefix(up.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Subscribe(context.Background(), SubscribeCall(FrameworkOptions{Name: "t", User: "u", Role: "job"}, "", false))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if cl.Leader() != up.srv.URL {
		t.Fatalf("leader %s", cl.Leader())
	}
}

// HTTP basic authentication on every call (14-http-framework-authentication),
// and the Mesos-Stream-Id on every call after SUBSCRIBE (the fake answers
// 400 without it, as the master does).
func TestClientBasicAuthAndStreamID(t *testing.T) {
	f := newFakeMaster(t)
	cl, err := NewClient(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cl.Principal, cl.Secret = "alice", "s3cret"
	ctx := context.Background()
	st, err := cl.Subscribe(ctx, SubscribeCall(FrameworkOptions{Name: "t", User: "u", Role: "job", Principal: "alice"}, "", false))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.ID == "" {
		t.Fatal("no stream id")
	}
	if err := cl.Call(ctx, calls.Revive().With(calls.Framework("fw-1"))); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.auth) != 2 || f.auth[0] != "alice:s3cret" || f.auth[1] != "alice:s3cret" {
		t.Fatalf("authorization seen: %q", f.auth)
	}
	if p := f.subs[0].Subscribe.FrameworkInfo.GetPrincipal(); p != "alice" {
		t.Fatalf("framework_info.principal %q", p)
	}
}

// A refused SUBSCRIBE is an error that carries the master's text.
func TestClientSubscribeRefused(t *testing.T) {
	f := newFakeMaster(t)
	f.set(func() { f.reject = http.StatusUnauthorized })
	cl, _ := NewClient(f.srv.URL)
	_, err := cl.Subscribe(context.Background(), SubscribeCall(FrameworkOptions{Name: "t", User: "u", Role: "job"}, "", false))
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
		t.Fatalf("got %v", err)
	}
}

func TestNewClientParsesMasters(t *testing.T) {
	c, err := NewClient("m1:5050, http://m2:5050/ ,https://m3")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"http://m1:5050", "http://m2:5050", "https://m3"}
	if strings.Join(c.Masters, " ") != strings.Join(want, " ") {
		t.Fatalf("masters %q", c.Masters)
	}
	for _, bad := range []string{"", " , ", "ftp://x"} {
		if _, err := NewClient(bad); err == nil {
			t.Errorf("NewClient(%q): no error", bad)
		}
	}
}
