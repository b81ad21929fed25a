package nexmark

import (
	"slices"
	"testing"

	"github.com/sluice-stream/sluice/engine/nexmark"
)

func generator(t *testing.T, events int64, seed int64) *nexmark.Generator {
	t.Helper()
	g, err := nexmark.New(nexmark.Params{Events: &events, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// events materializes a generator's events by kind.
func events(g *nexmark.Generator) (ps []nexmark.Person, as []nexmark.Auction, bs []nexmark.Bid) {
	forEvents(g, func(p nexmark.Person) { ps = append(ps, p) }, func(a nexmark.Auction) { as = append(as, a) },
		func(b *nexmark.Bid) { bs = append(bs, *b) })
	return
}

// naive are the queries written again the slow, obvious way (nested
// loops over all events, straight from the SQL), to check the references
// against.
var naive = map[string]func(g *nexmark.Generator, emit func(...any)){
	"q3": func(g *nexmark.Generator, emit func(...any)) {
		ps, as, _ := events(g)
		for _, a := range as {
			for i := range ps {
				if p := &ps[i]; a.Seller == p.ID && a.Category == 10 && slices.Contains([]string{"OR", "ID", "CA"}, p.State) {
					emit(p.Name, p.City, p.State, a.ID)
				}
			}
		}
	},
	"q4": func(g *nexmark.Generator, emit func(...any)) {
		_, as, bs := events(g)
		byAuction := map[int64][]nexmark.Bid{} // the join's equality, to keep it quick
		for _, b := range bs {
			byAuction[b.Auction] = append(byAuction[b.Auction], b)
		}
		sum, n := map[int64]int64{}, map[int64]int64{}
		for _, a := range as {
			final, any := int64(0), false
			for _, b := range byAuction[a.ID] {
				if a.ID == b.Auction && a.DateTime <= b.DateTime && b.DateTime <= a.Expires {
					final, any = max(final, b.Price), true
				}
			}
			if any {
				sum[a.Category] += final
				n[a.Category]++
			}
		}
		for c := range sum {
			emit(c, sum[c]/n[c])
		}
	},
	"q5": func(g *nexmark.Generator, emit func(...any)) {
		_, _, bs := events(g)
		lo, hi := bs[0].DateTime, bs[0].DateTime
		for i := range bs {
			lo, hi = min(lo, bs[i].DateTime), max(hi, bs[i].DateTime)
		}
		for s := lo - lo%2000 - 10_000; s <= hi; s += 2000 {
			count := map[int64]int64{}
			for i := range bs {
				if b := &bs[i]; s <= b.DateTime && b.DateTime < s+10_000 {
					count[b.Auction]++
				}
			}
			maxn := int64(0)
			for _, c := range count {
				maxn = max(maxn, c)
			}
			for a, c := range count {
				if c >= maxn {
					emit(a, c)
				}
			}
		}
	},
	"q7": func(g *nexmark.Generator, emit func(...any)) {
		_, _, bs := events(g)
		maxp := map[int64]int64{} // window end → max price
		for _, b := range bs {
			end := b.DateTime - b.DateTime%10_000 + 10_000
			maxp[end] = max(maxp[end], b.Price)
		}
		for end, m := range maxp {
			for i := range bs {
				if b := &bs[i]; b.Price == m && end-10_000 <= b.DateTime && b.DateTime <= end {
					emit(b.Auction, b.Bidder, b.Price, b.DateTime, b.Extra)
				}
			}
		}
	},
	"q8": func(g *nexmark.Generator, emit func(...any)) {
		ps, as, _ := events(g)
		for _, p := range ps {
			start := p.DateTime - p.DateTime%10_000
			for i := range as {
				if a := &as[i]; a.Seller == p.ID && a.DateTime-a.DateTime%10_000 == start {
					emit(p.ID, p.Name, start)
					break
				}
			}
		}
	},
}

// TestReferencesAgainstNaive: the references agree with the naive
// versions. The event clock is slowed to 1000 events/s so that the few
// events the naive loops afford span several 10 s windows.
func TestReferencesAgainstNaive(t *testing.T) {
	for _, seed := range []int64{1} {
		for _, q := range Queries {
			f := naive[q.Name]
			if f == nil {
				continue
			}
			events := int64(30_000)
			fast, err := nexmark.New(nexmark.Params{Events: &events, Seed: seed, FirstEventRate: ptr(1000.0)})
			if err != nil {
				t.Fatal(err)
			}
			got := q.run(fast)
			want := (&Query{Name: q.Name, Schema: q.Schema, eval: f}).run(fast)
			if len(want.Lines) == 0 {
				t.Fatalf("%s seed %d: no rows: the check proves nothing", q.Name, seed)
			}
			if !slices.Equal(got.Lines, want.Lines) {
				t.Errorf("%s seed %d: %d rows, naive %d:\n got %.300q\nwant %.300q", q.Name, seed, len(got.Lines), len(want.Lines), got.Lines, want.Lines)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestSimpleQueries checks q0–q2 row counts and shapes against the events.
func TestSimpleQueries(t *testing.T) {
	g := generator(t, 20_000, 3)
	_, _, bs := events(g)
	q0, q1, q2 := Lookup("q0").run(g), Lookup("q1").run(g), Lookup("q2").run(g)
	if len(q0.Lines) != len(bs) || len(q1.Lines) != len(bs) {
		t.Fatalf("q0 %d rows, q1 %d, want %d (every bid)", len(q0.Lines), len(q1.Lines), len(bs))
	}
	sel := 0
	for _, b := range bs {
		if b.Auction%123 == 0 {
			sel++
		}
	}
	if len(q2.Lines) != sel || sel == 0 {
		t.Fatalf("q2 %d rows, want %d", len(q2.Lines), sel)
	}
}

func TestEuros(t *testing.T) {
	for _, c := range []struct {
		cents int64
		want  float64
	}{{100, 90.8}, {12345, 11209.26}, {1, 0.908}, {100_000_000, 90_800_000}} {
		if got := Euros(c.cents); got != c.want {
			t.Errorf("Euros(%d) = %v, want %v", c.cents, got, c.want)
		}
	}
}

func TestWindowStart(t *testing.T) {
	for _, c := range []struct{ ts, size, want int64 }{
		{0, 10, 0}, {9, 10, 0}, {10, 10, 10}, {-1, 10, -10}, {-10, 10, -10}, {1704067212345, 2000, 1704067212000},
	} {
		if got := windowStart(c.ts, c.size); got != c.want {
			t.Errorf("windowStart(%d, %d) = %d, want %d", c.ts, c.size, got, c.want)
		}
	}
}

func TestRunNeedsBound(t *testing.T) {
	if _, err := Lookup("q0").Run(nexmark.Params{}); err == nil {
		t.Fatal("an unbounded reference did not fail")
	}
}
