package nodes

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// The nexmark source generates the Nexmark benchmark's auction events
// (persons, auctions, bids) with the semantics of nexmark-flink's
// generator (itself Apache Beam's): the same proportions, id scheme, hot
// sellers/bidders/auctions, prices, string shapes, average sizes and event
// clock. It is our own implementation: events are not bit-identical to
// nexmark-flink's (that one draws from java.util.Random in generation
// order); instead every event is a pure function of (seed, event number),
// so the same events come out at any parallelism and after a restore or a
// rescale. Event numbers are the ids idSplits hands out.

func init() {
	Register("nexmark", Factory{Kind: Source, Plan: planNexmark})
}

// Event kinds, numbered as nexmark-flink's event_type column.
const (
	nxPerson  = 0
	nxAuction = 1
	nxBid     = 2
	nxAll     = -1
)

// Events come in blocks of 50: 1 person, then 3 auctions, then 46 bids.
const (
	nxPersonProp  = 1
	nxAuctionProp = 3
	nxTotalProp   = 50

	nxFirstPersonID   = 1000
	nxFirstAuctionID  = 1000
	nxFirstCategoryID = 10
	nxNumCategories   = 5
	// Ids a bid or an auction may reference ahead of the last one generated
	// (the generator's "leads": a bid may come before its auction).
	nxPersonIDLead  = 10
	nxAuctionIDLead = 10
	// The hot seller/auction/bidder is the first (bidder: second) of the
	// last block of this many ids.
	nxHotBlock       = 100
	nxHotChannels    = 4
	nxChannels       = 10_000
	nxOutOfOrderMult = 953 // prime: i·953 mod n permutes a group of n
)

// NexmarkParams are the nexmark source's params.
type NexmarkParams struct {
	Events              *int64          `json:"events"`
	Kind                string          `json:"kind"`
	Seed                int64           `json:"seed"`
	Rate                float64         `json:"rate"`
	FirstEventRate      *float64        `json:"firstEventRate"`
	InterEventDelayUs   *float64        `json:"interEventDelayUs"`
	BaseTime            json.RawMessage `json:"baseTime"`
	OutOfOrderGroupSize *int64          `json:"outOfOrderGroupSize"`
	HotAuctionRatio     *int64          `json:"hotAuctionRatio"`
	HotSellersRatio     *int64          `json:"hotSellersRatio"`
	HotBiddersRatio     *int64          `json:"hotBiddersRatio"`
	NumActivePeople     *int64          `json:"numActivePeople"`
	NumInFlightAuctions *int64          `json:"numInFlightAuctions"`
	AvgPersonByteSize   *int64          `json:"avgPersonByteSize"`
	AvgAuctionByteSize  *int64          `json:"avgAuctionByteSize"`
	AvgBidByteSize      *int64          `json:"avgBidByteSize"`
	Watermark           WatermarkParams `json:"watermark"`
}

// NexmarkDefaultBaseTime is the event time of event 0 unless baseTime is
// given: a fixed instant, so that runs are reproducible.
var NexmarkDefaultBaseTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// The output schemas: one per kind, and the flat "all" schema.
var (
	NexmarkPersonSchema = row.MustSchema(
		row.Field{Name: "id", Type: row.Int64},
		row.Field{Name: "name", Type: row.String},
		row.Field{Name: "emailAddress", Type: row.String},
		row.Field{Name: "creditCard", Type: row.String},
		row.Field{Name: "city", Type: row.String},
		row.Field{Name: "state", Type: row.String},
		row.Field{Name: "dateTime", Type: row.Timestamp},
		row.Field{Name: "extra", Type: row.String},
	)
	NexmarkAuctionSchema = row.MustSchema(
		row.Field{Name: "id", Type: row.Int64},
		row.Field{Name: "itemName", Type: row.String},
		row.Field{Name: "description", Type: row.String},
		row.Field{Name: "initialBid", Type: row.Int64},
		row.Field{Name: "reserve", Type: row.Int64},
		row.Field{Name: "dateTime", Type: row.Timestamp},
		row.Field{Name: "expires", Type: row.Timestamp},
		row.Field{Name: "seller", Type: row.Int64},
		row.Field{Name: "category", Type: row.Int64},
		row.Field{Name: "extra", Type: row.String},
	)
	NexmarkBidSchema = row.MustSchema(
		row.Field{Name: "auction", Type: row.Int64},
		row.Field{Name: "bidder", Type: row.Int64},
		row.Field{Name: "price", Type: row.Int64},
		row.Field{Name: "channel", Type: row.String},
		row.Field{Name: "url", Type: row.String},
		row.Field{Name: "dateTime", Type: row.Timestamp},
		row.Field{Name: "extra", Type: row.String},
	)
	// NexmarkAllSchema has every kind's columns, prefixed by the kind, with
	// one dateTime for all; a row fills its own kind's columns and leaves
	// the others zero or empty.
	NexmarkAllSchema = row.MustSchema(
		row.Field{Name: "eventType", Type: row.Int64},
		row.Field{Name: "dateTime", Type: row.Timestamp},
		row.Field{Name: "person_id", Type: row.Int64},
		row.Field{Name: "person_name", Type: row.String},
		row.Field{Name: "person_emailAddress", Type: row.String},
		row.Field{Name: "person_creditCard", Type: row.String},
		row.Field{Name: "person_city", Type: row.String},
		row.Field{Name: "person_state", Type: row.String},
		row.Field{Name: "person_extra", Type: row.String},
		row.Field{Name: "auction_id", Type: row.Int64},
		row.Field{Name: "auction_itemName", Type: row.String},
		row.Field{Name: "auction_description", Type: row.String},
		row.Field{Name: "auction_initialBid", Type: row.Int64},
		row.Field{Name: "auction_reserve", Type: row.Int64},
		row.Field{Name: "auction_expires", Type: row.Timestamp},
		row.Field{Name: "auction_seller", Type: row.Int64},
		row.Field{Name: "auction_category", Type: row.Int64},
		row.Field{Name: "auction_extra", Type: row.String},
		row.Field{Name: "bid_auction", Type: row.Int64},
		row.Field{Name: "bid_bidder", Type: row.Int64},
		row.Field{Name: "bid_price", Type: row.Int64},
		row.Field{Name: "bid_channel", Type: row.String},
		row.Field{Name: "bid_url", Type: row.String},
		row.Field{Name: "bid_extra", Type: row.String},
	)
)

// The values nexmark-flink draws names and places from, kept so that its
// queries (q3's states, q8's names) select the same share of events.
var (
	nxStates     = []string{"AZ", "CA", "ID", "OR", "WA", "WY"}
	nxCities     = []string{"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"}
	nxFirstNames = []string{"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"}
	nxLastNames  = []string{"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"}
	nxHotNames   = [nxHotChannels]string{"Google", "Facebook", "Baidu", "Apple"}
	// Every "first last" name, built once so a person costs no allocation
	// for it.
	nxNames = func() []string {
		var ns []string
		for _, f := range nxFirstNames {
			for _, l := range nxLastNames {
				ns = append(ns, f+" "+l)
			}
		}
		return ns
	}()
)

// nexmarkConfig is what every subtask of a nexmark node shares; immutable
// once planned, except for the lazily built tables.
type nexmarkConfig struct {
	kind       int
	schema     *row.Schema
	events     int64
	seed       uint64
	rate       float64
	baseTime   int64
	tsNum      uint64 // event n's time is baseTime + n·tsNum/tsDen ms
	tsDen      uint64
	tsFast     int64 // below this event number n·tsNum fits in an int64
	group      int64 // outOfOrderGroupSize
	hotAuction uint64
	hotSeller  uint64
	hotBidder  uint64
	active     int64 // numActivePeople
	inFlight   int64 // numInFlightAuctions
	avgPerson  int
	avgAuction int
	avgBid     int
	ooo        int64
	idle       time.Duration

	once   sync.Once
	tables *nexmarkTables
}

// nexmarkTables are the seed's string material, built once per node: the
// bid channels and their URLs, and two pools of random text that names,
// descriptions and extras are cut from, so that an auction or a bid costs
// no allocation (a person costs one: its email and card number).
type nexmarkTables struct {
	hotURLs  [nxHotChannels]string
	channels []string
	urls     []string
	text     string // lowercase letters with 1 in 13 a space
	letters  string // lowercase letters
}

func planNexmark(c *PlanContext) (*Planned, error) {
	var p NexmarkParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	cfg := &nexmarkConfig{seed: uint64(p.Seed), rate: p.Rate, events: math.MaxInt64,
		ooo: p.Watermark.OutOfOrderness.Millis(), idle: p.Watermark.IdleTimeout.D()}
	switch p.Kind {
	case "", "all":
		cfg.kind, cfg.schema = nxAll, NexmarkAllSchema
	case "person":
		cfg.kind, cfg.schema = nxPerson, NexmarkPersonSchema
	case "auction":
		cfg.kind, cfg.schema = nxAuction, NexmarkAuctionSchema
	case "bid":
		cfg.kind, cfg.schema = nxBid, NexmarkBidSchema
	default:
		return nil, fmt.Errorf(`params.kind: %q is not one of "bid", "auction", "person", "all"`, p.Kind)
	}
	if p.Events != nil {
		if *p.Events < 0 {
			return nil, fmt.Errorf("params.events: must be ≥ 0, got %d", *p.Events)
		}
		cfg.events = *p.Events
	}
	if p.Rate < 0 || math.IsNaN(p.Rate) || math.IsInf(p.Rate, 0) {
		return nil, fmt.Errorf("params.rate: must be > 0 events/s, got %v", p.Rate)
	}
	if err := cfg.setClock(p.FirstEventRate, p.InterEventDelayUs); err != nil {
		return nil, err
	}
	base, err := parseBaseTime(p.BaseTime)
	if err != nil {
		return nil, fmt.Errorf("params.baseTime: %w", err)
	}
	cfg.baseTime = base
	intParam := func(name string, v *int64, def, lo, hi int64) (int64, error) {
		if v == nil {
			return def, nil
		}
		if *v < lo || *v > hi {
			return 0, fmt.Errorf("params.%s: must be in [%d, %d], got %d", name, lo, hi, *v)
		}
		return *v, nil
	}
	var hotA, hotS, hotB, avgP, avgA, avgB int64
	for _, ip := range []struct {
		name        string
		v           *int64
		dst         *int64
		def, lo, hi int64
	}{
		{"outOfOrderGroupSize", p.OutOfOrderGroupSize, &cfg.group, 1, 1, 1 << 30},
		{"hotAuctionRatio", p.HotAuctionRatio, &hotA, 2, 1, 1 << 30},
		{"hotSellersRatio", p.HotSellersRatio, &hotS, 4, 1, 1 << 30},
		{"hotBiddersRatio", p.HotBiddersRatio, &hotB, 4, 1, 1 << 30},
		{"numActivePeople", p.NumActivePeople, &cfg.active, 1000, 1, 1 << 40},
		{"numInFlightAuctions", p.NumInFlightAuctions, &cfg.inFlight, 100, 1, 1 << 40},
		{"avgPersonByteSize", p.AvgPersonByteSize, &avgP, 200, 0, 1 << 20},
		{"avgAuctionByteSize", p.AvgAuctionByteSize, &avgA, 500, 0, 1 << 20},
		{"avgBidByteSize", p.AvgBidByteSize, &avgB, 100, 0, 1 << 20},
	} {
		if *ip.dst, err = intParam(ip.name, ip.v, ip.def, ip.lo, ip.hi); err != nil {
			return nil, err
		}
	}
	if cfg.group%nxOutOfOrderMult == 0 {
		return nil, fmt.Errorf("params.outOfOrderGroupSize: must not be a multiple of %d (the shuffle would not be a permutation), got %d", nxOutOfOrderMult, cfg.group)
	}
	cfg.hotAuction, cfg.hotSeller, cfg.hotBidder = uint64(hotA), uint64(hotS), uint64(hotB)
	cfg.avgPerson, cfg.avgAuction, cfg.avgBid = int(avgP), int(avgA), int(avgB)
	return &Planned{Schema: cfg.schema, NewSource: func() runtime.Source { return &nexmarkSource{cfg: cfg} }}, nil
}

// setClock sets the event clock from firstEventRate (events/s) or
// interEventDelayUs, as an exact fraction so every subtask and every test
// computes the same timestamps.
func (c *nexmarkConfig) setClock(rate, delayUs *float64) error {
	switch {
	case rate != nil && delayUs != nil:
		return fmt.Errorf("params.interEventDelayUs: give firstEventRate or interEventDelayUs, not both")
	case delayUs != nil:
		d, err := newTimeStep(*delayUs)
		if err != nil {
			return fmt.Errorf("params.interEventDelayUs: %w", err)
		}
		c.tsNum, c.tsDen = uint64(d.num), uint64(d.den)*1000
	default:
		r := 10_000.0 // nexmark-flink's default
		if rate != nil {
			r = *rate
		}
		f, err := newTimeStep(r)
		if err != nil || f.num == 0 {
			return fmt.Errorf("params.firstEventRate: must be a number > 0 with at most 6 decimals, got %v", r)
		}
		// delay = 1e6/r µs = 1000·den/num ms
		c.tsNum, c.tsDen = 1000*uint64(f.den), uint64(f.num)
	}
	if g := gcd(c.tsNum, c.tsDen); g > 1 {
		c.tsNum, c.tsDen = c.tsNum/g, c.tsDen/g
	}
	c.tsFast = math.MaxInt64
	if c.tsNum > 1 {
		c.tsFast = int64(math.MaxInt64 / c.tsNum)
	}
	return nil
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// parseBaseTime takes epoch milliseconds or an RFC 3339 time.
func parseBaseTime(raw json.RawMessage) (int64, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return NexmarkDefaultBaseTime, nil
	}
	if s[0] == '"' {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, err
		}
		t, err := time.Parse(time.RFC3339Nano, str)
		if err != nil {
			return 0, fmt.Errorf("want epoch milliseconds or an RFC 3339 time: %w", err)
		}
		return t.UnixMilli(), nil
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want epoch milliseconds or an RFC 3339 time, got %s", s)
	}
	return ms, nil
}

// timestamp is event n's time: baseTime + n × inter-event delay, floored
// to the millisecond.
// Times past the int64 range are clamped to its end.
func (c *nexmarkConfig) timestamp(n int64) int64 {
	var q uint64
	if n < c.tsFast {
		q = uint64(n*int64(c.tsNum)) / c.tsDen
	} else {
		hi, lo := bits.Mul64(uint64(n), c.tsNum)
		if hi >= c.tsDen {
			return math.MaxInt64
		}
		q, _ = bits.Div64(hi, lo, c.tsDen)
	}
	if q > math.MaxInt64-uint64(max(c.baseTime, 0)) {
		return math.MaxInt64
	}
	return c.baseTime + int64(q)
}

// eventNumber is the event emitted at position p: with an out-of-order
// group size n, each full group of n positions emits its n events
// shuffled (event base + (p·953 mod n)), as nexmark-flink's
// outOfOrderGroupSize does. A partial last group is emitted in order.
func (c *nexmarkConfig) eventNumber(p int64) int64 {
	g := c.group
	if g == 1 {
		return p
	}
	base := p / g * g
	if base > c.events-g {
		return p
	}
	return base + (p%g)*nxOutOfOrderMult%g
}

// groupStart bounds from below the event numbers of every position ≥ p.
func (c *nexmarkConfig) groupStart(p int64) int64 { return p / c.group * c.group }

// nexmarkKind is the kind of event n.
func nexmarkKind(n int64) int {
	switch r := n % nxTotalProp; {
	case r < nxPersonProp:
		return nxPerson
	case r < nxPersonProp+nxAuctionProp:
		return nxAuction
	default:
		return nxBid
	}
}

// lastPerson is the base-0 id of the last person generated at or before
// event n.
func lastPerson(n int64) int64 {
	epoch, off := n/nxTotalProp, n%nxTotalProp
	off = min(off, nxPersonProp-1)
	return epoch*nxPersonProp + off
}

// lastAuction is the base-0 id of the last auction generated at or before
// event n (-1 before the first).
func lastAuction(n int64) int64 {
	epoch, off := n/nxTotalProp, n%nxTotalProp
	switch {
	case off < nxPersonProp:
		epoch--
		off = nxAuctionProp - 1
	case off >= nxPersonProp+nxAuctionProp:
		off = nxAuctionProp - 1
	default:
		off -= nxPersonProp
	}
	return epoch*nxAuctionProp + off
}

// nxRand is a splitmix64 stream: seeded from (seed, event number) it makes
// an event a pure function of both.
type nxRand struct{ s uint64 }

const nxGolden = 0x9e3779b97f4a7c15

func nxMix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func newNxRand(seed uint64, n int64) nxRand {
	return nxRand{s: nxMix(seed*nxGolden ^ nxMix(uint64(n)+nxGolden))}
}

func (r *nxRand) next() uint64 {
	r.s += nxGolden
	return nxMix(r.s)
}

// intn is uniform in [0, n), n > 0.
func (r *nxRand) intn(n uint64) uint64 {
	hi, _ := bits.Mul64(r.next(), n)
	return hi
}

// price is 10^(6u)·100 cents for a uniform u: from $1 to $1M,
// log-uniform. The power is interpolated in a table (math.Exp was a third
// of a bid's cost); relative error below 2e-6.
func (r *nxRand) price() int64 {
	x := r.next()
	i := x >> (64 - nxPriceBits)
	f := float64(x<<nxPriceBits>>11) / (1 << 53)
	lo := nxPrices[i]
	return int64(lo + (nxPrices[i+1]-lo)*f + 0.5)
}

const nxPriceBits = 12

// nxPrices[i] is 10^(6i/2^nxPriceBits)·100.
var nxPrices = func() []float64 {
	t := make([]float64, 1<<nxPriceBits+1)
	for i := range t {
		t[i] = math.Pow(10, 6*float64(i)/(1<<nxPriceBits)) * 100
	}
	return t
}()

// tablesFor builds the node's string material on first use.
func (c *nexmarkConfig) tablesFor() *nexmarkTables {
	c.once.Do(func() {
		t := &nexmarkTables{}
		r := newNxRand(c.seed, -1)
		mk := func(n int, space byte) string {
			b := make([]byte, n)
			for i := range b {
				if space != 0 && r.intn(13) == 0 {
					b[i] = space
				} else {
					b[i] = byte('a' + r.intn(26))
				}
			}
			return string(b)
		}
		t.text = mk(1<<16, ' ')
		maxExtra := max(c.avgPerson, c.avgAuction, c.avgBid)*6/5 + 1
		t.letters = mk(max(1<<16, 4*maxExtra), 0)
		baseURL := func() string {
			part := func() string { return mk(3+int(r.intn(2)), '_') }
			return "https://www.nexmark.com/" + part() + "/" + part() + "/" + part() + "/item.htm?query=1"
		}
		for i := range t.hotURLs {
			t.hotURLs[i] = baseURL()
		}
		t.channels = make([]string, nxChannels)
		t.urls = make([]string, nxChannels)
		for i := range nxChannels {
			t.channels[i] = "channel-" + strconv.Itoa(i)
			u := baseURL()
			if r.intn(10) > 0 {
				rev := int64(int32(bits.Reverse32(uint32(i))))
				u += "&channel_id=" + strconv.FormatInt(max(rev, -rev), 10)
			}
			t.urls[i] = u
		}
		c.tables = t
	})
	return c.tables
}

// nexmarkSource is one subtask of a nexmark node.
type nexmarkSource struct {
	cfg     *nexmarkConfig
	t       *nexmarkTables
	ids     idSplits
	idbuf   []int64
	scratch []byte
}

func (s *nexmarkSource) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.t = s.cfg.tablesFor()
	s.ids.idle = NewIdleness(s.cfg.idle)
	return s.ids.open(ctx, r, s.cfg.events, s.cfg.rate)
}

func (s *nexmarkSource) Poll() (bool, error) {
	b := row.NewBatch(s.cfg.schema)
	n, sawIDs := 0, false
	// A single kind skips the other kinds' event numbers, so a person
	// source takes several rounds of ids to fill a batch; half full is
	// enough, and keeps a batch within its capacity.
	for round := 0; round < 64; round++ {
		s.idbuf = s.ids.next(s.idbuf[:0])
		if len(s.idbuf) == 0 {
			break
		}
		sawIDs = true
		n += s.appendEvents(b, s.idbuf)
		if s.cfg.kind == nxAll || n >= row.DefaultBatchSize/2 {
			break
		}
	}
	b.SetLen(n)
	if n == 0 && sawIDs {
		b.Release() // only other kinds' events: not the end
		return false, nil
	}
	return s.ids.emit(b)
}

// appendEvents appends this source's kind of events among positions ps
// and returns how many rows it added.
func (s *nexmarkSource) appendEvents(b *row.Batch, ps []int64) int {
	c := s.cfg
	cols := b.Cols
	added := 0
	for _, p := range ps {
		n := c.eventNumber(p)
		k := nexmarkKind(n)
		if c.kind != nxAll && k != c.kind {
			continue
		}
		added++
		ts := c.timestamp(n)
		r := newNxRand(c.seed, n)
		switch k {
		case nxPerson:
			s.person(cols, n, ts, &r)
		case nxAuction:
			s.auction(cols, n, ts, &r)
		default:
			s.bid(cols, n, ts, &r)
		}
	}
	return added
}

// Column positions in NexmarkAllSchema.
const (
	nxaType = iota
	nxaTime
	nxaPerson  // person_id … person_extra: 7 columns
	nxaAuction = nxaPerson + 7
	nxaBid     = nxaAuction + 9
)

// nextString is a random string of 3 to max-1 characters with spaces, cut
// from the text pool and trimmed as nexmark-flink trims it.
func (s *nexmarkSource) nextString(r *nxRand, maxLen int) string {
	n := 3 + int(r.intn(uint64(maxLen-3)))
	off := int(r.intn(uint64(len(s.t.text) - n)))
	return strings.TrimSpace(s.t.text[off : off+n])
}

// extra pads an event whose other fields take size bytes to avg bytes on
// average (±20%).
func (s *nexmarkSource) extra(r *nxRand, size, avg int) string {
	if size > avg {
		return ""
	}
	want := avg - size
	delta := int(math.Round(float64(want) * 0.2))
	n := want - delta
	if delta > 0 {
		n += int(r.intn(uint64(2 * delta)))
	}
	off := int(r.intn(uint64(len(s.t.letters) - n)))
	return s.t.letters[off : off+n]
}

// personID picks a person for an auction or bid at event n: one of the
// last numActivePeople, or up to nxPersonIDLead not yet generated.
func (c *nexmarkConfig) personID(n int64, r *nxRand) int64 {
	people := lastPerson(n) + 1
	active := min(people, c.active)
	return people - active + int64(r.intn(uint64(active+nxPersonIDLead)))
}

// auctionID picks an auction for a bid at event n: one of the last
// numInFlightAuctions, or up to nxAuctionIDLead not yet generated.
func (c *nexmarkConfig) auctionID(n int64, r *nxRand) int64 {
	last := lastAuction(n)
	first := max(last-c.inFlight, 0)
	return first + int64(r.intn(uint64(last-first+1+nxAuctionIDLead)))
}

func (s *nexmarkSource) person(cols []row.Column, n, ts int64, r *nxRand) {
	id := lastPerson(n) + nxFirstPersonID
	name := nxNames[r.intn(uint64(len(nxNames)))]
	// The email and the card number share one allocation.
	b := s.scratch[:0]
	b = append(b, s.nextString(r, 7)...)
	b = append(b, '@')
	b = append(b, s.nextString(r, 5)...)
	b = append(b, ".com"...)
	emailLen := len(b)
	for i := range 4 {
		if i > 0 {
			b = append(b, ' ')
		}
		v := r.intn(10000)
		b = append(b, byte('0'+v/1000), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
	}
	s.scratch = b
	both := string(b)
	email, card := both[:emailLen], both[emailLen:]
	city := nxCities[r.intn(uint64(len(nxCities)))]
	state := nxStates[r.intn(uint64(len(nxStates)))]
	size := 8 + len(name) + len(email) + len(card) + len(city) + len(state)
	extra := s.extra(r, size, s.cfg.avgPerson)
	if s.cfg.kind == nxPerson {
		cols[0].Ints = append(cols[0].Ints, id)
		cols[1].Strs = append(cols[1].Strs, name)
		cols[2].Strs = append(cols[2].Strs, email)
		cols[3].Strs = append(cols[3].Strs, card)
		cols[4].Strs = append(cols[4].Strs, city)
		cols[5].Strs = append(cols[5].Strs, state)
		cols[6].Ints = append(cols[6].Ints, ts)
		cols[7].Strs = append(cols[7].Strs, extra)
		return
	}
	allHead(cols, nxPerson, ts)
	c := cols[nxaPerson:]
	c[0].Ints = append(c[0].Ints, id)
	c[1].Strs = append(c[1].Strs, name)
	c[2].Strs = append(c[2].Strs, email)
	c[3].Strs = append(c[3].Strs, card)
	c[4].Strs = append(c[4].Strs, city)
	c[5].Strs = append(c[5].Strs, state)
	c[6].Strs = append(c[6].Strs, extra)
	padAuction(cols)
	padBid(cols)
}

func (s *nexmarkSource) auction(cols []row.Column, n, ts int64, r *nxRand) {
	c := s.cfg
	id := lastAuction(n) + nxFirstAuctionID
	var seller int64
	if r.intn(c.hotSeller) > 0 {
		seller = lastPerson(n) / nxHotBlock * nxHotBlock
	} else {
		seller = c.personID(n, r)
	}
	seller += nxFirstPersonID
	category := nxFirstCategoryID + int64(r.intn(nxNumCategories))
	initial := r.price()
	// Auctions last on average as long as it takes to generate
	// numInFlightAuctions more of them.
	horizon := c.timestamp(n+c.inFlight*nxTotalProp/nxAuctionProp) - ts
	expires := ts + 1 + int64(r.intn(uint64(max(2*horizon, 1))))
	name := s.nextString(r, 20)
	desc := s.nextString(r, 100)
	reserve := initial + r.price()
	extra := s.extra(r, 8+len(name)+len(desc)+5*8, c.avgAuction)
	if c.kind == nxAuction {
		cols[0].Ints = append(cols[0].Ints, id)
		cols[1].Strs = append(cols[1].Strs, name)
		cols[2].Strs = append(cols[2].Strs, desc)
		cols[3].Ints = append(cols[3].Ints, initial)
		cols[4].Ints = append(cols[4].Ints, reserve)
		cols[5].Ints = append(cols[5].Ints, ts)
		cols[6].Ints = append(cols[6].Ints, expires)
		cols[7].Ints = append(cols[7].Ints, seller)
		cols[8].Ints = append(cols[8].Ints, category)
		cols[9].Strs = append(cols[9].Strs, extra)
		return
	}
	allHead(cols, nxAuction, ts)
	padPerson(cols)
	a := cols[nxaAuction:]
	a[0].Ints = append(a[0].Ints, id)
	a[1].Strs = append(a[1].Strs, name)
	a[2].Strs = append(a[2].Strs, desc)
	a[3].Ints = append(a[3].Ints, initial)
	a[4].Ints = append(a[4].Ints, reserve)
	a[5].Ints = append(a[5].Ints, expires)
	a[6].Ints = append(a[6].Ints, seller)
	a[7].Ints = append(a[7].Ints, category)
	a[8].Strs = append(a[8].Strs, extra)
	padBid(cols)
}

func (s *nexmarkSource) bid(cols []row.Column, n, ts int64, r *nxRand) {
	c := s.cfg
	var auction int64
	if r.intn(c.hotAuction) > 0 {
		auction = lastAuction(n) / nxHotBlock * nxHotBlock
	} else {
		auction = c.auctionID(n, r)
	}
	auction += nxFirstAuctionID
	var bidder int64
	if r.intn(c.hotBidder) > 0 {
		// The second of the block, so hot bidders are not hot sellers.
		bidder = lastPerson(n)/nxHotBlock*nxHotBlock + 1
	} else {
		bidder = c.personID(n, r)
	}
	bidder += nxFirstPersonID
	price := r.price()
	var channel, url string
	if r.intn(2) > 0 {
		i := r.intn(nxHotChannels)
		channel, url = nxHotNames[i], s.t.hotURLs[i]
	} else {
		i := r.intn(nxChannels)
		channel, url = s.t.channels[i], s.t.urls[i]
	}
	extra := s.extra(r, 4*8, c.avgBid)
	if c.kind == nxBid {
		cols[0].Ints = append(cols[0].Ints, auction)
		cols[1].Ints = append(cols[1].Ints, bidder)
		cols[2].Ints = append(cols[2].Ints, price)
		cols[3].Strs = append(cols[3].Strs, channel)
		cols[4].Strs = append(cols[4].Strs, url)
		cols[5].Ints = append(cols[5].Ints, ts)
		cols[6].Strs = append(cols[6].Strs, extra)
		return
	}
	allHead(cols, nxBid, ts)
	padPerson(cols)
	padAuction(cols)
	d := cols[nxaBid:]
	d[0].Ints = append(d[0].Ints, auction)
	d[1].Ints = append(d[1].Ints, bidder)
	d[2].Ints = append(d[2].Ints, price)
	d[3].Strs = append(d[3].Strs, channel)
	d[4].Strs = append(d[4].Strs, url)
	d[5].Strs = append(d[5].Strs, extra)
}

func allHead(cols []row.Column, kind int, ts int64) {
	cols[nxaType].Ints = append(cols[nxaType].Ints, int64(kind))
	cols[nxaTime].Ints = append(cols[nxaTime].Ints, ts)
}

// padPerson, padAuction and padBid fill a kind's columns with zero values
// in a row of another kind.
func padPerson(cols []row.Column) {
	c := cols[nxaPerson:nxaAuction]
	c[0].Ints = append(c[0].Ints, 0)
	for i := 1; i < len(c); i++ {
		c[i].Strs = append(c[i].Strs, "")
	}
}

func padAuction(cols []row.Column) {
	c := cols[nxaAuction:nxaBid]
	c[0].Ints = append(c[0].Ints, 0)
	c[1].Strs = append(c[1].Strs, "")
	c[2].Strs = append(c[2].Strs, "")
	for i := 3; i < 8; i++ {
		c[i].Ints = append(c[i].Ints, 0)
	}
	c[8].Strs = append(c[8].Strs, "")
}

func padBid(cols []row.Column) {
	c := cols[nxaBid:]
	for i := range 3 {
		c[i].Ints = append(c[i].Ints, 0)
	}
	for i := 3; i < 6; i++ {
		c[i].Strs = append(c[i].Strs, "")
	}
}

// Watermark: positions come out in order per split, and every event at a
// position ≥ p has an event number ≥ groupStart(p), so the time of that
// bounds every future timestamp of the split.
func (s *nexmarkSource) Watermark() (int64, bool) {
	wm := runtime.MaxWatermark
	ids := &s.ids
	for i := range ids.splits {
		p := ids.rounds[i]*ids.S + ids.splits[i]
		if p >= ids.rows || p < 0 {
			continue
		}
		wm = min(wm, s.cfg.timestamp(s.cfg.groupStart(p))-1-s.cfg.ooo)
	}
	if wm == runtime.MaxWatermark {
		wm = runtime.MaxWatermark - 1 // the end itself is signalled by Poll
	}
	return wm, ids.idle.Idle()
}

func (s *nexmarkSource) Snapshot(int64) (runtime.Snapshot, error) { return s.ids.snapshot(), nil }
func (s *nexmarkSource) CheckpointComplete(int64) error           { return nil }
func (s *nexmarkSource) Close() error                             { return nil }
