package nexmark

import (
	"encoding/json"
	"math"
	"math/big"
	"testing"
)

func mustNew(t testing.TB, params string) *Generator {
	t.Helper()
	var p Params
	if err := json.Unmarshal([]byte(params), &p); err != nil {
		t.Fatal(err)
	}
	g, err := New(p)
	if err != nil {
		t.Fatalf("%s: %v", params, err)
	}
	return g
}

// TestClockExact: timestamps are exact for any event number, also past
// where n × step overflows an int64.
func TestClockExact(t *testing.T) {
	for _, params := range []string{`{}`, `{"firstEventRate": 3}`, `{"firstEventRate": 0.25}`,
		`{"interEventDelayUs": 123456.5}`, `{"interEventDelayUs": 1000000000000}`, `{"baseTime": -5000, "interEventDelayUs": 0.001}`} {
		g := mustNew(t, params)
		for _, n := range []int64{0, 1, 7, 1 << 20, g.tsFast - 1, g.tsFast, g.tsFast + 12345, math.MaxInt64 / 3, math.MaxInt64} {
			if n < 0 {
				continue
			}
			q := new(big.Int).Mul(big.NewInt(n), new(big.Int).SetUint64(g.tsNum))
			q.Quo(q, new(big.Int).SetUint64(g.tsDen))
			q.Add(q, big.NewInt(g.baseTime))
			want := int64(math.MaxInt64)
			if q.IsInt64() {
				want = q.Int64()
			}
			if got := g.Timestamp(n); got != want {
				t.Errorf("%s: event %d at %d, want %d", params, n, got, want)
			}
		}
	}
}

// TestPure: an event depends only on (params, event number), not on what
// was generated before or by which Generator.
func TestPure(t *testing.T) {
	const params = `{"seed": 3, "events": 1000}`
	a, b := mustNew(t, params), mustNew(t, params)
	for n := int64(999); n >= 0; n -= 7 {
		switch KindOf(n) {
		case KindPerson:
			if a.Person(n) != b.Person(n) {
				t.Fatalf("person %d differs", n)
			}
		case KindAuction:
			if a.Auction(n) != b.Auction(n) {
				t.Fatalf("auction %d differs", n)
			}
		default:
			if a.Bid(n) != b.Bid(n) {
				t.Fatalf("bid %d differs", n)
			}
		}
	}
	if c := mustNew(t, `{"seed": 4}`); c.Bid(10) == a.Bid(10) {
		t.Fatal("another seed gives the same bid")
	}
}
