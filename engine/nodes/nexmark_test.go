package nodes

import (
	"encoding/json"
	"fmt"
	"math"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/nexmark"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/internal/cputime"
)

// nxOut collects a subtask's rows (boxed, in emission order) and, after
// each batch, the source's watermark.
type nxOut struct {
	rows [][]any
}

func (o *nxOut) Collect(b *row.Batch) {
	for i := range b.Len {
		r := make([]any, len(b.Cols))
		for c := range b.Cols {
			r[c] = b.Value(i, c)
		}
		o.rows = append(o.rows, r)
	}
	b.Release()
}

func (o *nxOut) Watermark(int64) {}

func planNx(t testing.TB, params string) *Planned {
	t.Helper()
	p, err := planNexmark(&PlanContext{Job: &spec.Job{}, Node: &spec.Node{ID: "nx", Type: "nexmark", Params: json.RawMessage(params)}})
	if err != nil {
		t.Fatalf("plan %s: %v", params, err)
	}
	return p
}

// nxTask is one subtask of a nexmark node, driven by hand.
type nxTask struct {
	src   *nexmarkSource
	out   *nxOut
	ended bool
}

func openNx(t testing.TB, p *Planned, par, maxPar int, restored *runtime.Restored) []*nxTask {
	t.Helper()
	tasks := make([]*nxTask, par)
	for i := range tasks {
		out := &nxOut{}
		src := p.NewSource().(*nexmarkSource)
		ctx := &runtime.Context{NodeID: "nx", Subtask: i, Parallelism: par, MaxParallelism: maxPar, Out: out}
		if err := src.Open(ctx, restored); err != nil {
			t.Fatal(err)
		}
		tasks[i] = &nxTask{src: src, out: out}
	}
	return tasks
}

// pollAll polls the subtasks round-robin, each at most polls times (≤ 0:
// until every one has ended).
func pollAll(t testing.TB, tasks []*nxTask, polls int) {
	t.Helper()
	for k := 0; polls <= 0 || k < polls; k++ {
		live := false
		for _, tk := range tasks {
			if tk.ended {
				continue
			}
			end, err := tk.src.Poll()
			if err != nil {
				t.Fatal(err)
			}
			tk.ended = end
			live = live || !end
		}
		if !live {
			return
		}
	}
}

func allRows(tasks []*nxTask) [][]any {
	var rows [][]any
	for _, tk := range tasks {
		rows = append(rows, tk.out.rows...)
	}
	return rows
}

// genNx runs a nexmark node to its end and returns its rows.
func genNx(t testing.TB, params string, par, maxPar int) [][]any {
	t.Helper()
	tasks := openNx(t, planNx(t, params), par, maxPar, nil)
	pollAll(t, tasks, 0)
	return allRows(tasks)
}

// rowKeys renders rows as sorted strings, for comparing multisets.
func rowKeys(rows [][]any) []string {
	ks := make([]string, len(rows))
	for i, r := range rows {
		ks[i] = fmt.Sprintf("%q", r)
	}
	slices.Sort(ks)
	return ks
}

func sameRows(t *testing.T, what string, got, want [][]any) {
	t.Helper()
	g, w := rowKeys(got), rowKeys(want)
	if len(g) != len(w) {
		t.Fatalf("%s: %d rows, want %d", what, len(g), len(w))
	}
	for i := range g {
		if g[i] != w[i] {
			t.Fatalf("%s: row %d differs:\n got %s\nwant %s", what, i, g[i], w[i])
		}
	}
}

func TestNexmarkProportions(t *testing.T) {
	const blocks = 200
	rows := genNx(t, fmt.Sprintf(`{"events": %d, "seed": 7}`, blocks*50), 1, 8)
	if len(rows) != blocks*50 {
		t.Fatalf("%d rows, want %d", len(rows), blocks*50)
	}
	// At parallelism 1 without disorder, rows come in event number order:
	// every block of 50 is 1 person, 3 auctions, 46 bids.
	counts := [3]int{}
	for i, r := range rows {
		typ := r[nxaType].(int64)
		want := int64(nxBid)
		switch i % 50 {
		case 0:
			want = nxPerson
		case 1, 2, 3:
			want = nxAuction
		}
		if typ != want {
			t.Fatalf("event %d has type %d, want %d", i, typ, want)
		}
		counts[typ]++
	}
	if counts != [3]int{blocks, 3 * blocks, 46 * blocks} {
		t.Fatalf("counts %v, want 1:3:46 of %d blocks", counts, blocks)
	}
}

func TestNexmarkTimestamps(t *testing.T) {
	rows := genNx(t, `{"events": 1000}`, 1, 8)
	for n, r := range rows {
		// firstEventRate 10000/s by default: 100 µs per event.
		if got, want := r[nxaTime].(int64), NexmarkDefaultBaseTime+int64(n)/10; got != want {
			t.Fatalf("event %d at %d, want %d", n, got, want)
		}
	}
	rows = genNx(t, `{"events": 1000, "baseTime": "2025-06-01T12:00:00Z", "interEventDelayUs": 2500}`, 1, 8)
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	for n, r := range rows {
		if got, want := r[nxaTime].(int64), base+int64(n)*25/10; got != want {
			t.Fatalf("event %d at %d, want %d", n, got, want)
		}
	}
	rows = genNx(t, `{"events": 100, "baseTime": 5000, "firstEventRate": 250}`, 1, 8)
	for n, r := range rows {
		if got, want := r[nxaTime].(int64), 5000+int64(n)*4; got != want {
			t.Fatalf("event %d at %d, want %d", n, got, want)
		}
	}
}

// TestNexmarkForeignKeys checks the id scheme and that references point
// at ids generated before, or at most the generator's lead ahead, and that
// the hot ratios hold.
func TestNexmarkForeignKeys(t *testing.T) {
	const events = 50_000
	rows := genNx(t, fmt.Sprintf(`{"events": %d, "seed": 3}`, events), 1, 8)
	nextPerson, nextAuction := int64(nexmark.FirstPersonID), int64(nexmark.FirstAuctionID)
	var bids, hotBidAuction, hotBidder, auctions, hotSeller int
	check := func(what string, n int, id, first, next, lead int64) {
		t.Helper()
		if id < first || id >= next+lead {
			t.Fatalf("event %d: %s %d outside [%d, %d) (last generated %d)", n, what, id, first, next+lead, next-1)
		}
	}
	for n, r := range rows {
		switch r[nxaType].(int64) {
		case nxPerson:
			if id := r[nxaPerson].(int64); id != nextPerson {
				t.Fatalf("event %d: person id %d, want %d", n, id, nextPerson)
			}
			nextPerson++
		case nxAuction:
			if id := r[nxaAuction].(int64); id != nextAuction {
				t.Fatalf("event %d: auction id %d, want %d", n, id, nextAuction)
			}
			nextAuction++
			seller := r[nxaAuction+6].(int64)
			check("seller", n, seller, nexmark.FirstPersonID, nextPerson, nexmark.PersonIDLead)
			if cat := r[nxaAuction+7].(int64); cat < 10 || cat >= 15 {
				t.Fatalf("event %d: category %d", n, cat)
			}
			if (seller-nexmark.FirstPersonID)%nexmark.HotBlock == 0 {
				hotSeller++
			}
			auctions++
		case nxBid:
			auction, bidder := r[nxaBid].(int64), r[nxaBid+1].(int64)
			check("bid auction", n, auction, nexmark.FirstAuctionID, nextAuction, nexmark.AuctionIDLead)
			check("bidder", n, bidder, nexmark.FirstPersonID, nextPerson, nexmark.PersonIDLead)
			if (auction-nexmark.FirstAuctionID)%nexmark.HotBlock == 0 {
				hotBidAuction++
			}
			if (bidder-nexmark.FirstPersonID)%nexmark.HotBlock == 1 {
				hotBidder++
			}
			bids++
		}
	}
	// P(hot) = 1 - 1/ratio (2, 4, 4), plus the random picks that land on
	// a hot id.
	frac := func(what string, k, of int, lo, hi float64) {
		t.Helper()
		if f := float64(k) / float64(of); f < lo || f > hi {
			t.Errorf("%s: %.3f, want in [%v, %v]", what, f, lo, hi)
		}
	}
	frac("bids on the hot auction", hotBidAuction, bids, 0.48, 0.53)
	frac("bids by the hot bidder", hotBidder, bids, 0.73, 0.77)
	frac("auctions by the hot seller", hotSeller, auctions, 0.72, 0.78)
}

func TestNexmarkSizes(t *testing.T) {
	rows := genNx(t, `{"events": 50000, "seed": 11}`, 1, 8)
	var sum, cnt [3]float64
	for _, r := range rows {
		typ := r[nxaType].(int64)
		var size int
		// Sizes as nexmark-flink counts them: 8 bytes a number, strings
		// by length (a bid's channel and url are not counted).
		switch typ {
		case nxPerson:
			size = 8
			for c := nxaPerson + 1; c < nxaAuction; c++ {
				size += len(r[c].(string))
			}
		case nxAuction:
			size = 8 + 5*8 + len(r[nxaAuction+1].(string)) + len(r[nxaAuction+2].(string)) + len(r[nxaAuction+8].(string))
		case nxBid:
			size = 4*8 + len(r[nxaBid+5].(string))
		}
		sum[typ] += float64(size)
		cnt[typ]++
	}
	for typ, want := range []float64{200, 500, 100} {
		avg := sum[typ] / cnt[typ]
		if math.Abs(avg-want) > want*0.02 {
			t.Errorf("kind %d: average size %.1f, want %v ± 2%%", typ, avg, want)
		}
	}
	// The strings look as they should.
	for _, r := range rows[:500] {
		switch r[nxaType].(int64) {
		case nxPerson:
			email, card := r[nxaPerson+2].(string), r[nxaPerson+3].(string)
			if !strings.HasSuffix(email, ".com") || strings.Count(email, "@") != 1 || len(card) != 19 {
				t.Fatalf("person %q %q", email, card)
			}
			if !slices.Contains(nexmark.States, r[nxaPerson+5].(string)) {
				t.Fatalf("state %q", r[nxaPerson+5])
			}
		case nxAuction:
			if initial, reserve := r[nxaAuction+3].(int64), r[nxaAuction+4].(int64); initial < 100 || reserve <= initial {
				t.Fatalf("auction initial %d reserve %d", initial, reserve)
			}
			if expires := r[nxaAuction+5].(int64); expires <= r[nxaTime].(int64) {
				t.Fatalf("auction expires %d before it starts %d", expires, r[nxaTime])
			}
		case nxBid:
			if p := r[nxaBid+2].(int64); p < 100 || p > 100_000_000 {
				t.Fatalf("price %d", p)
			}
			if u := r[nxaBid+4].(string); !strings.HasPrefix(u, "https://www.nexmark.com/") {
				t.Fatalf("url %q", u)
			}
		}
	}
}

// TestNexmarkDeterministic: the same events at any parallelism, and a
// single kind sees the same events as "all".
func TestNexmarkDeterministic(t *testing.T) {
	const params = `{"events": 8000, "seed": 5, "kind": %q}`
	all := genNx(t, fmt.Sprintf(params, "all"), 1, 16)
	sameRows(t, "parallelism 3", genNx(t, fmt.Sprintf(params, "all"), 3, 16), all)
	sameRows(t, "parallelism 5 of 7", genNx(t, fmt.Sprintf(params, "all"), 5, 7), all)
	if other := genNx(t, `{"events": 8000, "seed": 6}`, 1, 16); rowKeys(other)[100] == rowKeys(all)[100] {
		t.Fatal("another seed gives the same events")
	}
	project := func(typ int64, cols ...int) [][]any {
		var out [][]any
		for _, r := range all {
			if r[nxaType].(int64) == typ {
				p := make([]any, len(cols))
				for i, c := range cols {
					p[i] = r[c]
				}
				out = append(out, p)
			}
		}
		return out
	}
	P, A, B := nxaPerson, nxaAuction, nxaBid
	sameRows(t, "persons", genNx(t, fmt.Sprintf(params, "person"), 2, 16),
		project(nxPerson, P, P+1, P+2, P+3, P+4, P+5, nxaTime, P+6))
	sameRows(t, "auctions", genNx(t, fmt.Sprintf(params, "auction"), 3, 16),
		project(nxAuction, A, A+1, A+2, A+3, A+4, nxaTime, A+5, A+6, A+7, A+8))
	sameRows(t, "bids", genNx(t, fmt.Sprintf(params, "bid"), 1, 16),
		project(nxBid, B, B+1, B+2, B+3, B+4, nxaTime, B+5))
}

// snapshotState collects what the subtasks' snapshots write.
func snapshotState(t *testing.T, tasks []*nxTask) [][]byte {
	t.Helper()
	w := &stateCapture{}
	for _, tk := range tasks {
		s, err := tk.src.Snapshot(1)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(w); err != nil {
			t.Fatal(err)
		}
	}
	return w.op
}

type stateCapture struct{ op [][]byte }

func (w *stateCapture) AddKeyGroup(int, []byte)   { panic("a source has no keyed state") }
func (w *stateCapture) AddOperatorState(b []byte) { w.op = append(w.op, b) }

// TestNexmarkRestoreRescale: rows emitted before a checkpoint plus those
// after restoring it at another parallelism are the whole stream, each
// event once.
func TestNexmarkRestoreRescale(t *testing.T) {
	for _, c := range []struct {
		kind          string
		events, polls int
	}{
		{"all", 12000, 3},
		{"bid", 12000, 3},
		{"person", 80000, 1}, // a poll walks ≥ 25600 event numbers for 512 persons
	} {
		t.Run(c.kind, func(t *testing.T) {
			params := fmt.Sprintf(`{"events": %d, "seed": 9, "kind": %q, "outOfOrderGroupSize": 37}`, c.events, c.kind)
			want := genNx(t, params, 1, 8)
			p := planNx(t, params)
			before := openNx(t, p, 2, 8, nil)
			pollAll(t, before, c.polls)
			st := snapshotState(t, before)
			after := openNx(t, p, 3, 8, &runtime.Restored{CheckpointID: 1, OperatorState: st})
			pollAll(t, after, 0)
			b, a := allRows(before), allRows(after)
			if len(b) == 0 || len(a) == 0 {
				t.Fatalf("%d rows before the checkpoint, %d after: the test needs both", len(b), len(a))
			}
			sameRows(t, "before+after", append(b, a...), want)
		})
	}
}

// TestNexmarkDisorder: with outOfOrderGroupSize n, each group of n events
// comes out shuffled, so an event's time is at most (n-1) inter-event
// delays from its position's; the events are the same as in order; and
// the watermark never passes an event still to come.
func TestNexmarkDisorder(t *testing.T) {
	const g = 100
	params := `{"events": 8050, "seed": 2, "firstEventRate": 1000, "outOfOrderGroupSize": %d}`
	inOrder := genNx(t, fmt.Sprintf(params, 1), 1, 8)
	p := planNx(t, fmt.Sprintf(params, g))
	tasks := openNx(t, p, 1, 8, nil)
	tk := tasks[0]
	var wms []int64 // watermark after each batch, with the row count then
	var at []int
	for !tk.ended {
		end, err := tk.src.Poll()
		if err != nil {
			t.Fatal(err)
		}
		tk.ended = end
		wm, _ := tk.src.Watermark()
		wms, at = append(wms, wm), append(at, len(tk.out.rows))
	}
	rows := tk.out.rows
	sameRows(t, "shuffled vs in order", rows, inOrder)
	disordered := 0
	latest := rows[0][nxaTime].(int64)
	for pos, r := range rows {
		ts := r[nxaTime].(int64)
		// As documented: at most (g-1) delays (+1 ms) before the latest.
		if latest-ts > (g-1)+1 {
			t.Fatalf("position %d: time %d is %d ms before the latest emitted", pos, ts, latest-ts)
		}
		latest = max(latest, ts)
		posTs := NexmarkDefaultBaseTime + int64(pos) // 1 ms per event
		if d := ts - posTs; d < -(g-1) || d > g-1 {
			t.Fatalf("position %d: time %d is %d ms from its position's", pos, ts, d)
		}
		if ts != posTs {
			disordered++
		}
	}
	if disordered < len(rows)/2 {
		t.Fatalf("only %d of %d events out of place", disordered, len(rows))
	}
	for i, wm := range wms {
		for _, r := range rows[at[i]:] {
			if ts := r[nxaTime].(int64); ts <= wm {
				t.Fatalf("watermark %d after %d rows, but a later row has time %d", wm, at[i], ts)
			}
		}
	}
}

func TestNexmarkPlanErrors(t *testing.T) {
	for _, c := range []struct{ params, want string }{
		{`{"kind": "bids"}`, "params.kind:"},
		{`{"events": -1}`, "params.events:"},
		{`{"rate": -5}`, "params.rate:"},
		{`{"firstEventRate": 0}`, "params.firstEventRate:"},
		{`{"firstEventRate": 1.0000001}`, "params.firstEventRate:"},
		{`{"interEventDelayUs": -1}`, "params.interEventDelayUs:"},
		{`{"interEventDelayUs": 10, "firstEventRate": 10}`, "params.interEventDelayUs:"},
		{`{"baseTime": "yesterday"}`, "params.baseTime:"},
		{`{"baseTime": 1.5}`, "params.baseTime:"},
		{`{"outOfOrderGroupSize": 0}`, "params.outOfOrderGroupSize:"},
		{`{"outOfOrderGroupSize": 1906}`, "params.outOfOrderGroupSize:"},
		{`{"hotAuctionRatio": 0}`, "params.hotAuctionRatio:"},
		{`{"hotSellersRatio": -1}`, "params.hotSellersRatio:"},
		{`{"hotBiddersRatio": 0}`, "params.hotBiddersRatio:"},
		{`{"numActivePeople": 0}`, "params.numActivePeople:"},
		{`{"numInFlightAuctions": 0}`, "params.numInFlightAuctions:"},
		{`{"avgBidByteSize": -1}`, "params.avgBidByteSize:"},
		{`{"avgPersonByteSize": 2000000}`, "params.avgPersonByteSize:"},
		{`{"evnets": 10}`, `unknown field "evnets"`},
	} {
		_, err := planNexmark(&PlanContext{Job: &spec.Job{}, Node: &spec.Node{ID: "nx", Type: "nexmark", Params: json.RawMessage(c.params)}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one with %q", c.params, err, c.want)
		}
	}
	for kind, schema := range map[string]*row.Schema{"": NexmarkAllSchema, "all": NexmarkAllSchema,
		"person": NexmarkPersonSchema, "auction": NexmarkAuctionSchema, "bid": NexmarkBidSchema} {
		if p := planNx(t, fmt.Sprintf(`{"kind": %q}`, kind)); p.Schema != schema {
			t.Errorf("kind %q: schema %s", kind, p.Schema)
		}
	}
}

// BenchmarkNexmark measures events generated per second of CPU (one
// subtask, unbounded, rows discarded): events/cpu-s counts every event
// number walked, rows/cpu-s the rows of the kind emitted (a single kind
// skips the others).
func BenchmarkNexmark(b *testing.B) {
	for _, kind := range []string{"all", "bid", "auction", "person"} {
		b.Run(kind, func(b *testing.B) {
			p := planNx(b, fmt.Sprintf(`{"kind": %q}`, kind))
			src := p.NewSource().(*nexmarkSource)
			out := &countOut{}
			ctx := &runtime.Context{NodeID: "nx", Parallelism: 1, MaxParallelism: 128, Out: out}
			if err := src.Open(ctx, nil); err != nil {
				b.Fatal(err)
			}
			// CPU time of this thread, not wall time: the machine is shared.
			goruntime.LockOSThread()
			defer goruntime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cputime.Thread()
			for b.Loop() {
				if _, err := src.Poll(); err != nil {
					b.Fatal(err)
				}
			}
			cpu = cputime.Thread() - cpu
			b.StopTimer()
			ids := &src.ids
			events := ids.rounds[0] * ids.S // every split is at the same round
			b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
			b.ReportMetric(float64(out.rows)/cpu.Seconds(), "rows/cpu-s")
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// countOut counts and drops rows.
type countOut struct{ rows int }

func (o *countOut) Collect(b *row.Batch) { o.rows += b.Len; b.Release() }
func (o *countOut) Watermark(int64)      {}

// TestNexmarkSourceIsGenerator: the source emits exactly engine/nexmark's
// events, each in its kind's columns (the references of internal/nexmark
// rely on it).
func TestNexmarkSourceIsGenerator(t *testing.T) {
	const events = 3000
	g, err := nexmark.New(nexmark.Params{Events: ptrTo(int64(events)), Seed: 8})
	if err != nil {
		t.Fatal(err)
	}
	var persons, auctions, bids [][]any
	for n := range int64(events) {
		switch nexmark.KindOf(n) {
		case nexmark.KindPerson:
			p := g.Person(n)
			persons = append(persons, []any{p.ID, p.Name, p.EmailAddress, p.CreditCard, p.City, p.State, p.DateTime, p.Extra})
		case nexmark.KindAuction:
			a := g.Auction(n)
			auctions = append(auctions, []any{a.ID, a.ItemName, a.Description, a.InitialBid, a.Reserve, a.DateTime, a.Expires, a.Seller, a.Category, a.Extra})
		default:
			b := g.Bid(n)
			bids = append(bids, []any{b.Auction, b.Bidder, b.Price, b.Channel, b.URL, b.DateTime, b.Extra})
		}
	}
	const params = `{"events": 3000, "seed": 8, "kind": %q, "outOfOrderGroupSize": 7}`
	sameRows(t, "persons", genNx(t, fmt.Sprintf(params, "person"), 2, 8), persons)
	sameRows(t, "auctions", genNx(t, fmt.Sprintf(params, "auction"), 2, 8), auctions)
	sameRows(t, "bids", genNx(t, fmt.Sprintf(params, "bid"), 2, 8), bids)
}

func ptrTo[T any](v T) *T { return &v }
