// Package nexmark holds the reference answers of the Nexmark queries
// (nexmark-flink's q0–q8, q6 left out, as Flink leaves it out): each query
// written directly in Go as a pure function from the generated events to
// its result rows, for tests and benchmarks to compare the engine's output
// with. The events come from engine/nexmark, the same code as the
// `nexmark` source's, so a job and its reference see the same events.
//
// A reference computes the query's final answer over a bounded event
// sequence, as SQL defines it over the whole input: the answer an
// event-time job reaches once its input has ended and every window has
// fired. It assumes no event is late (the nexmark source's watermark never
// passes an event still to come, so a job drops none), and it says
// nothing about when a streaming job emits a row.
//
// Rows come in canonical order: sorted by their JSON line (row.AppendJSON,
// as the file and print sinks write them), so that a job's output, sorted
// the same way, compares line for line.
package nexmark

import (
	"fmt"
	"slices"

	"github.com/sluice-stream/sluice/engine/nexmark"
	"github.com/sluice-stream/sluice/engine/row"
)

// Query is one Nexmark query.
type Query struct {
	Name  string // "q0" …
	Title string // nexmark-flink's name for it
	// What the query computes, in a sentence.
	What string
	// Schema is the result's columns: nexmark-flink's sink table, with its
	// column names.
	Schema *row.Schema
	// Runnable says whether examples/nexmark/<Name>.json exists, i.e.
	// whether today's engine nodes express the query exactly; NotYet says
	// what is missing when they do not.
	Runnable bool
	NotYet   string
	// eval emits the result rows in any order.
	eval func(g *nexmark.Generator, emit func(...any))
}

// Result is a query's answer.
type Result struct {
	Schema *row.Schema
	// Lines are the rows as JSON lines, in canonical (byte) order.
	Lines []string
}

var (
	tsField = func(name string) row.Field { return row.Field{Name: name, Type: row.Timestamp} }
	i64     = func(name string) row.Field { return row.Field{Name: name, Type: row.Int64} }
	str     = func(name string) row.Field { return row.Field{Name: name, Type: row.String} }
	bidRow  = row.MustSchema(i64("auction"), i64("bidder"), i64("price"), tsField("dateTime"), str("extra"))
)

// Window sizes of q5, q7, q8 (nexmark-flink's, in ms).
const (
	q5Size, q5Slide = 10_000, 2_000
	q7Size          = 10_000
	q8Size          = 10_000
)

// Queries are q0–q8 without q6, in order.
var Queries = []*Query{
	{
		Name: "q0", Title: "Pass through", Runnable: true,
		What:   "every bid's auction, bidder, price, dateTime and extra, unchanged (the cost of reading and writing the events)",
		Schema: bidRow,
		eval: func(g *nexmark.Generator, emit func(...any)) {
			forBids(g, func(b *nexmark.Bid) { emit(b.Auction, b.Bidder, b.Price, b.DateTime, b.Extra) })
		},
	},
	{
		Name: "q1", Title: "Currency conversion", Runnable: true,
		What: "every bid with its price converted from dollars to euros (× 0.908)",
		Schema: row.MustSchema(i64("auction"), i64("bidder"), row.Field{Name: "price", Type: row.Float64},
			tsField("dateTime"), str("extra")),
		eval: func(g *nexmark.Generator, emit func(...any)) {
			forBids(g, func(b *nexmark.Bid) { emit(b.Auction, b.Bidder, Euros(b.Price), b.DateTime, b.Extra) })
		},
	},
	{
		Name: "q2", Title: "Selection", Runnable: true,
		What:   "auction and price of the bids on every 123rd auction (auction % 123 == 0)",
		Schema: row.MustSchema(i64("auction"), i64("price")),
		eval: func(g *nexmark.Generator, emit func(...any)) {
			forBids(g, func(b *nexmark.Bid) {
				if b.Auction%123 == 0 {
					emit(b.Auction, b.Price)
				}
			})
		},
	},
	{
		Name: "q3", Title: "Local item suggestion",
		What:   "who sells in OR, ID or CA in category 10, and which auctions: auctions joined with their seller (a regular, unwindowed join)",
		Schema: row.MustSchema(str("name"), str("city"), str("state"), i64("id")),
		NotYet: "needs a regular equi-join of auctions and persons (issue #12)",
		eval:   q3,
	},
	{
		Name: "q4", Title: "Average price for a category",
		What:   "per category, the average winning bid (highest bid between the auction's start and its expiry) over its auctions",
		Schema: row.MustSchema(i64("id"), i64("final")),
		NotYet: "needs a join of auctions and bids, and an aggregate over the join's updating result (issue #12)",
		eval:   q4,
	},
	{
		Name: "q5", Title: "Hot items",
		What:   "per 10 s window sliding by 2 s, the auctions with the most bids, and how many",
		Schema: row.MustSchema(i64("auction"), i64("num")),
		NotYet: "needs the max of per-auction counts per window joined back to the counts (a window over a window's output and a join, issue #12)",
		eval:   q5,
	},
	{
		Name: "q7", Title: "Highest bid",
		What:   "the bids whose price is the highest of a 10 s tumbling window, with dateTime in [window end − 10 s, window end]",
		Schema: bidRow,
		NotYet: "needs the bids joined with the max price of their window (issue #12)",
		eval:   q7,
	},
	{
		Name: "q8", Title: "Monitor new users",
		What:   "persons who registered and opened an auction in the same 10 s tumbling window, with the window's start",
		Schema: row.MustSchema(i64("id"), str("name"), tsField("stime")),
		NotYet: "needs a two-input window join of persons and auctions (issue #12)",
		eval:   q8,
	},
}

// Lookup returns the query named name ("q0" …), or nil.
func Lookup(name string) *Query {
	for _, q := range Queries {
		if q.Name == name {
			return q
		}
	}
	return nil
}

// Euros is q1's conversion of a price in cents: 0.908 × price, computed as
// price × 908 / 1000 so that it is the double nearest to the exact decimal
// nexmark-flink's DECIMAL(23, 3) holds (0.908 has no exact double; a
// product with it would print as 90.80000000000001). q1's spec computes
// it the same way.
func Euros(price int64) float64 { return float64(price*908) / 1000 }

// Run computes query q over the events p generates; p must bound the
// events (params.events).
func (q *Query) Run(p nexmark.Params) (*Result, error) {
	if p.Events == nil {
		return nil, fmt.Errorf("%s: the reference needs a bounded event count (params.events)", q.Name)
	}
	g, err := nexmark.New(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q.Name, err)
	}
	return q.run(g), nil
}

func (q *Query) run(g *nexmark.Generator) *Result {
	b := row.NewBatch(q.Schema)
	n := 0
	q.eval(g, func(vals ...any) {
		for i, v := range vals {
			c := &b.Cols[i]
			switch v := v.(type) {
			case int64:
				c.Ints = append(c.Ints, v)
			case float64:
				c.Floats = append(c.Floats, v)
			case string:
				c.Strs = append(c.Strs, v)
			default:
				panic(fmt.Sprintf("%s: column %d: value %T", q.Name, i, v))
			}
		}
		n++
	})
	b.SetLen(n)
	lines := make([]string, n)
	var buf []byte
	for i := range n {
		buf = row.AppendJSON(buf[:0], b, i)
		lines[i] = string(buf)
	}
	b.Release()
	slices.Sort(lines)
	return &Result{Schema: q.Schema, Lines: lines}
}

// SortLines puts JSON lines (a job's output) in canonical order.
func SortLines(lines []string) { slices.Sort(lines) }

// forBids calls f for every bid, in event number order.
func forBids(g *nexmark.Generator, f func(*nexmark.Bid)) {
	var b nexmark.Bid
	for n := range g.Events() {
		if nexmark.KindOf(n) == nexmark.KindBid {
			g.BidInto(n, &b)
			f(&b)
		}
	}
}

// forEvents calls the function of each event's kind, in event number
// order (nil: skip that kind).
func forEvents(g *nexmark.Generator, person func(nexmark.Person), auction func(nexmark.Auction), bid func(*nexmark.Bid)) {
	var b nexmark.Bid
	for n := range g.Events() {
		switch nexmark.KindOf(n) {
		case nexmark.KindPerson:
			if person != nil {
				person(g.Person(n))
			}
		case nexmark.KindAuction:
			if auction != nil {
				auction(g.Auction(n))
			}
		default:
			if bid != nil {
				g.BidInto(n, &b)
				bid(&b)
			}
		}
	}
}

// q3: SELECT P.name, P.city, P.state, A.id FROM auction A JOIN person P
// ON A.seller = P.id WHERE A.category = 10 AND P.state IN ('OR','ID','CA').
// A regular join: every matching pair, whichever came first.
func q3(g *nexmark.Generator, emit func(...any)) {
	persons := map[int64]nexmark.Person{}
	var auctions []nexmark.Auction
	forEvents(g, func(p nexmark.Person) {
		if p.State == "OR" || p.State == "ID" || p.State == "CA" {
			persons[p.ID] = p
		}
	}, func(a nexmark.Auction) {
		if a.Category == 10 {
			auctions = append(auctions, a)
		}
	}, nil)
	for _, a := range auctions {
		if p, ok := persons[a.Seller]; ok {
			emit(p.Name, p.City, p.State, a.ID)
		}
	}
}

// q4: SELECT category, AVG(final) FROM (SELECT MAX(B.price) AS final,
// A.category FROM auction A, bid B WHERE A.id = B.auction AND B.dateTime
// BETWEEN A.dateTime AND A.expires GROUP BY A.id, A.category) GROUP BY
// category. AVG of a BIGINT is a BIGINT in Flink: the sum divided by the
// count, truncated.
func q4(g *nexmark.Generator, emit func(...any)) {
	auctions := map[int64]nexmark.Auction{}
	var bids []nexmark.Bid
	forEvents(g, nil, func(a nexmark.Auction) { auctions[a.ID] = a },
		func(b *nexmark.Bid) { bids = append(bids, *b) })
	final := map[int64]int64{} // auction id → highest qualifying price
	for _, b := range bids {
		a, ok := auctions[b.Auction]
		if !ok || b.DateTime < a.DateTime || b.DateTime > a.Expires {
			continue
		}
		if f, seen := final[a.ID]; !seen || b.Price > f {
			final[a.ID] = b.Price
		}
	}
	type acc struct{ sum, n int64 }
	cats := map[int64]acc{}
	for id, f := range final {
		c := cats[auctions[id].Category]
		c.sum += f
		c.n++
		cats[auctions[id].Category] = c
	}
	for cat, c := range cats {
		emit(cat, c.sum/c.n)
	}
}

// windowStart is the start of the window of the given size (aligned to
// the epoch, as Flink aligns them) holding time ts.
func windowStart(ts, size int64) int64 { return ts - ((ts%size)+size)%size }

// q5: per HOP(dateTime, 2 s slide, 10 s size) window the bid count per
// auction, and the auctions whose count is the window's highest
// (num >= max(num)).
func q5(g *nexmark.Generator, emit func(...any)) {
	type key struct{ start, auction int64 }
	counts := map[key]int64{}
	forBids(g, func(b *nexmark.Bid) {
		// Every window [s, s+size) with s a multiple of the slide holding ts.
		for s := windowStart(b.DateTime, q5Slide); s > b.DateTime-q5Size; s -= q5Slide {
			counts[key{s, b.Auction}]++
		}
	})
	most := map[int64]int64{}
	for k, n := range counts {
		most[k.start] = max(most[k.start], n)
	}
	for k, n := range counts {
		if n >= most[k.start] {
			emit(k.auction, n)
		}
	}
}

// q7: the bids B joined with (MAX(price) AS maxprice, window_end) of each
// 10 s TUMBLE window, ON B.price = maxprice WHERE B.dateTime BETWEEN
// window_end − 10 s AND window_end. BETWEEN is inclusive: a bid at a
// window's end (in the next window) also matches that window if its price
// is that window's highest.
func q7(g *nexmark.Generator, emit func(...any)) {
	var bids []nexmark.Bid
	maxPrice := map[int64]int64{} // window start → highest price
	forBids(g, func(b *nexmark.Bid) {
		bids = append(bids, *b)
		s := windowStart(b.DateTime, q7Size)
		if m, ok := maxPrice[s]; !ok || b.Price > m {
			maxPrice[s] = b.Price
		}
	})
	for _, b := range bids {
		s := windowStart(b.DateTime, q7Size)
		if maxPrice[s] == b.Price {
			emit(b.Auction, b.Bidder, b.Price, b.DateTime, b.Extra)
		}
		// The previous window, whose end is exactly this bid's time.
		if s == b.DateTime {
			if m, ok := maxPrice[s-q7Size]; ok && m == b.Price {
				emit(b.Auction, b.Bidder, b.Price, b.DateTime, b.Extra)
			}
		}
	}
}

// q8: persons (id, name) per 10 s TUMBLE window joined with the sellers of
// the auctions of the same window: P.id = A.seller, same window start and
// end. Both sides are grouped, so each (person, window) once.
func q8(g *nexmark.Generator, emit func(...any)) {
	type key struct{ start, id int64 }
	var persons []struct {
		key
		name string
	}
	sellers := map[key]bool{}
	forEvents(g, func(p nexmark.Person) {
		persons = append(persons, struct {
			key
			name string
		}{key{windowStart(p.DateTime, q8Size), p.ID}, p.Name})
	}, func(a nexmark.Auction) {
		sellers[key{windowStart(a.DateTime, q8Size), a.Seller}] = true
	}, nil)
	seen := map[key]bool{} // GROUP BY id, name, window: each once
	for _, p := range persons {
		if sellers[p.key] && !seen[p.key] {
			seen[p.key] = true
			emit(p.id, p.name, p.start)
		}
	}
}

// Names lists the queries' names (only the runnable ones if runnableOnly).
func Names(runnableOnly bool) []string {
	var ns []string
	for _, q := range Queries {
		if q.Runnable || !runnableOnly {
			ns = append(ns, q.Name)
		}
	}
	return ns
}
