// Package nexmark is the Nexmark benchmark's event generator: persons,
// auctions and bids with the semantics of nexmark-flink's generator
// (itself Apache Beam's): the same proportions, id scheme, hot
// sellers/bidders/auctions, prices, string shapes, average sizes and event
// clock. It is our own implementation: events are not bit-identical to
// nexmark-flink's (that one draws from java.util.Random in generation
// order); instead every event is a pure function of (seed, event number),
// so the same events come out at any parallelism and after a restore or a
// rescale.
//
// Both the `nexmark` source (engine/nodes) and the queries' reference
// answers (internal/nexmark) generate their events here, so they cannot
// drift apart.
package nexmark

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Event kinds, numbered as nexmark-flink's event_type column.
const (
	KindPerson  = 0
	KindAuction = 1
	KindBid     = 2
)

// Events come in blocks of 50: 1 person, then 3 auctions, then 46 bids.
const (
	personProp  = 1
	auctionProp = 3
	totalProp   = 50

	FirstPersonID   = 1000
	FirstAuctionID  = 1000
	FirstCategoryID = 10
	NumCategories   = 5
	// PersonIDLead and AuctionIDLead are how far ahead of the last one
	// generated a bid or an auction may reference an id (the generator's
	// "leads": a bid may come before its auction).
	PersonIDLead  = 10
	AuctionIDLead = 10
	// HotBlock: the hot seller/auction/bidder is the first (bidder: second)
	// of the last block of this many ids.
	HotBlock       = 100
	hotChannels    = 4
	numChannels    = 10_000
	outOfOrderMult = 953 // prime: i·953 mod n permutes a group of n
)

// DefaultBaseTime is the event time of event 0 unless baseTime is given: a
// fixed instant, so that runs are reproducible.
var DefaultBaseTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// The values nexmark-flink draws names and places from, kept so that its
// queries (q3's states, q8's names) select the same share of events.
var (
	States     = []string{"AZ", "CA", "ID", "OR", "WA", "WY"}
	Cities     = []string{"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"}
	firstNames = []string{"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"}
	lastNames  = []string{"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"}
	hotNames   = [hotChannels]string{"Google", "Facebook", "Baidu", "Apple"}
	// Every "first last" name, built once so a person costs no allocation
	// for it.
	names = func() []string {
		var ns []string
		for _, f := range firstNames {
			for _, l := range lastNames {
				ns = append(ns, f+" "+l)
			}
		}
		return ns
	}()
)

// Params are the generator's parameters, as the `nexmark` source takes
// them in a job spec (docs/job-spec.md). Absent (nil) means the default.
type Params struct {
	Events              *int64          `json:"events"`
	Seed                int64           `json:"seed"`
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
}

// Person, Auction and Bid are the three kinds of events. Times are epoch
// milliseconds, prices cents. Strings may share memory with the
// generator's pools: they are immutable, never copied per event.
type Person struct {
	ID                                          int64
	Name, EmailAddress, CreditCard, City, State string
	DateTime                                    int64
	Extra                                       string
}

type Auction struct {
	ID                    int64
	ItemName, Description string
	InitialBid, Reserve   int64
	DateTime, Expires     int64
	Seller, Category      int64
	Extra                 string
}

type Bid struct {
	Auction, Bidder, Price int64
	Channel, URL           string
	DateTime               int64
	Extra                  string
}

// Generator makes the events of one set of Params. It is safe for
// concurrent use: all it holds is immutable once built.
type Generator struct {
	events     int64
	seed       uint64
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

	once   sync.Once
	tables *tables
}

// tables are the seed's string material, built once per generator: the
// bid channels and their URLs, and two pools of random text that names,
// descriptions and extras are cut from, so that an auction or a bid costs
// no allocation (a person costs one: its email and card number).
type tables struct {
	hotURLs  [hotChannels]string
	channels []string
	urls     []string
	text     string // lowercase letters with 1 in 13 a space
	letters  string // lowercase letters
}

// New checks p and returns its generator. Errors name the param
// ("params.events: …").
func New(p Params) (*Generator, error) {
	g := &Generator{seed: uint64(p.Seed), events: math.MaxInt64}
	if p.Events != nil {
		if *p.Events < 0 {
			return nil, fmt.Errorf("params.events: must be ≥ 0, got %d", *p.Events)
		}
		g.events = *p.Events
	}
	if err := g.setClock(p.FirstEventRate, p.InterEventDelayUs); err != nil {
		return nil, err
	}
	base, err := parseBaseTime(p.BaseTime)
	if err != nil {
		return nil, fmt.Errorf("params.baseTime: %w", err)
	}
	g.baseTime = base
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
		{"outOfOrderGroupSize", p.OutOfOrderGroupSize, &g.group, 1, 1, 1 << 30},
		{"hotAuctionRatio", p.HotAuctionRatio, &hotA, 2, 1, 1 << 30},
		{"hotSellersRatio", p.HotSellersRatio, &hotS, 4, 1, 1 << 30},
		{"hotBiddersRatio", p.HotBiddersRatio, &hotB, 4, 1, 1 << 30},
		{"numActivePeople", p.NumActivePeople, &g.active, 1000, 1, 1 << 40},
		{"numInFlightAuctions", p.NumInFlightAuctions, &g.inFlight, 100, 1, 1 << 40},
		{"avgPersonByteSize", p.AvgPersonByteSize, &avgP, 200, 0, 1 << 20},
		{"avgAuctionByteSize", p.AvgAuctionByteSize, &avgA, 500, 0, 1 << 20},
		{"avgBidByteSize", p.AvgBidByteSize, &avgB, 100, 0, 1 << 20},
	} {
		if *ip.dst, err = intParam(ip.name, ip.v, ip.def, ip.lo, ip.hi); err != nil {
			return nil, err
		}
	}
	if g.group%outOfOrderMult == 0 {
		return nil, fmt.Errorf("params.outOfOrderGroupSize: must not be a multiple of %d (the shuffle would not be a permutation), got %d", outOfOrderMult, g.group)
	}
	g.hotAuction, g.hotSeller, g.hotBidder = uint64(hotA), uint64(hotS), uint64(hotB)
	g.avgPerson, g.avgAuction, g.avgBid = int(avgP), int(avgA), int(avgB)
	return g, nil
}

// Events is the number of events (math.MaxInt64: unbounded).
func (g *Generator) Events() int64 { return g.events }

// setClock sets the event clock from firstEventRate (events/s) or
// interEventDelayUs, as an exact fraction so every subtask and every test
// computes the same timestamps.
func (g *Generator) setClock(rate, delayUs *float64) error {
	switch {
	case rate != nil && delayUs != nil:
		return fmt.Errorf("params.interEventDelayUs: give firstEventRate or interEventDelayUs, not both")
	case delayUs != nil:
		num, den, err := fraction(*delayUs)
		if err != nil {
			return fmt.Errorf("params.interEventDelayUs: %w", err)
		}
		g.tsNum, g.tsDen = num, den*1000
	default:
		r := 10_000.0 // nexmark-flink's default
		if rate != nil {
			r = *rate
		}
		num, den, err := fraction(r)
		if err != nil || num == 0 {
			return fmt.Errorf("params.firstEventRate: must be a number > 0 with at most 6 decimals, got %v", r)
		}
		// delay = 1e6/r µs = 1000·den/num ms
		g.tsNum, g.tsDen = 1000*den, num
	}
	if d := gcd(g.tsNum, g.tsDen); d > 1 {
		g.tsNum, g.tsDen = g.tsNum/d, g.tsDen/d
	}
	g.tsFast = math.MaxInt64
	if g.tsNum > 1 {
		g.tsFast = int64(math.MaxInt64 / g.tsNum)
	}
	return nil
}

// fraction is x ≥ 0 with at most 6 decimals as num/den exactly.
func fraction(x float64) (num, den uint64, err error) {
	if x < 0 || math.IsNaN(x) || math.IsInf(x, 0) || x > 1<<53 {
		return 0, 0, fmt.Errorf("must be a number in [0, 2^53], got %v", x)
	}
	for d := uint64(1); d <= 1_000_000; d *= 10 {
		if n := x * float64(d); n == math.Trunc(n) && n < 1<<63 {
			return uint64(n), d, nil
		}
	}
	return 0, 0, fmt.Errorf("%v has more than 6 decimals", x)
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
		return DefaultBaseTime, nil
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

// Timestamp is event n's time: baseTime + n × inter-event delay, floored
// to the millisecond. Times past the int64 range are clamped to its end.
func (g *Generator) Timestamp(n int64) int64 {
	var q uint64
	if n < g.tsFast {
		q = uint64(n*int64(g.tsNum)) / g.tsDen
	} else {
		hi, lo := bits.Mul64(uint64(n), g.tsNum)
		if hi >= g.tsDen {
			return math.MaxInt64
		}
		q, _ = bits.Div64(hi, lo, g.tsDen)
	}
	if q > math.MaxInt64-uint64(max(g.baseTime, 0)) {
		return math.MaxInt64
	}
	return g.baseTime + int64(q)
}

// EventNumber is the event emitted at position p: with an out-of-order
// group size n, each full group of n positions emits its n events
// shuffled (event base + (p·953 mod n)), as nexmark-flink's
// outOfOrderGroupSize does. A partial last group is emitted in order.
func (g *Generator) EventNumber(p int64) int64 {
	n := g.group
	if n == 1 {
		return p
	}
	base := p / n * n
	if base > g.events-n {
		return p
	}
	return base + (p%n)*outOfOrderMult%n
}

// GroupStart bounds from below the event numbers of every position ≥ p.
func (g *Generator) GroupStart(p int64) int64 { return p / g.group * g.group }

// KindOf is the kind of event n.
func KindOf(n int64) int {
	switch r := n % totalProp; {
	case r < personProp:
		return KindPerson
	case r < personProp+auctionProp:
		return KindAuction
	default:
		return KindBid
	}
}

// lastPerson is the base-0 id of the last person generated at or before
// event n.
func lastPerson(n int64) int64 {
	epoch, off := n/totalProp, n%totalProp
	off = min(off, personProp-1)
	return epoch*personProp + off
}

// lastAuction is the base-0 id of the last auction generated at or before
// event n (-1 before the first).
func lastAuction(n int64) int64 {
	epoch, off := n/totalProp, n%totalProp
	switch {
	case off < personProp:
		epoch--
		off = auctionProp - 1
	case off >= personProp+auctionProp:
		off = auctionProp - 1
	default:
		off -= personProp
	}
	return epoch*auctionProp + off
}

// rng is a splitmix64 stream: seeded from (seed, event number) it makes
// an event a pure function of both.
type rng struct{ s uint64 }

const golden = 0x9e3779b97f4a7c15

func mix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func newRng(seed uint64, n int64) rng {
	return rng{s: mix(seed*golden ^ mix(uint64(n)+golden))}
}

func (r *rng) next() uint64 {
	r.s += golden
	return mix(r.s)
}

// intn is uniform in [0, n), n > 0.
func (r *rng) intn(n uint64) uint64 {
	hi, _ := bits.Mul64(r.next(), n)
	return hi
}

// price is 10^(6u)·100 cents for a uniform u: from $1 to $1M,
// log-uniform. The power is interpolated in a table (math.Exp was a third
// of a bid's cost); relative error below 2e-6.
func (r *rng) price() int64 {
	x := r.next()
	i := x >> (64 - priceBits)
	f := float64(x<<priceBits>>11) / (1 << 53)
	lo := prices[i]
	return int64(lo + (prices[i+1]-lo)*f + 0.5)
}

const priceBits = 12

// prices[i] is 10^(6i/2^priceBits)·100.
var prices = func() []float64 {
	t := make([]float64, 1<<priceBits+1)
	for i := range t {
		t[i] = math.Pow(10, 6*float64(i)/(1<<priceBits)) * 100
	}
	return t
}()

// tablesFor builds the generator's string material on first use (not at
// planning, which should stay cheap).
func (g *Generator) tablesFor() *tables {
	g.once.Do(func() {
		t := &tables{}
		r := newRng(g.seed, -1)
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
		maxExtra := max(g.avgPerson, g.avgAuction, g.avgBid)*6/5 + 1
		t.letters = mk(max(1<<16, 4*maxExtra), 0)
		baseURL := func() string {
			part := func() string { return mk(3+int(r.intn(2)), '_') }
			return "https://www.nexmark.com/" + part() + "/" + part() + "/" + part() + "/item.htm?query=1"
		}
		for i := range t.hotURLs {
			t.hotURLs[i] = baseURL()
		}
		t.channels = make([]string, numChannels)
		t.urls = make([]string, numChannels)
		for i := range numChannels {
			t.channels[i] = "channel-" + strconv.Itoa(i)
			u := baseURL()
			if r.intn(10) > 0 {
				rev := int64(int32(bits.Reverse32(uint32(i))))
				u += "&channel_id=" + strconv.FormatInt(max(rev, -rev), 10)
			}
			t.urls[i] = u
		}
		g.tables = t
	})
	return g.tables
}

// nextString is a random string of 3 to max-1 characters with spaces, cut
// from the text pool and trimmed as nexmark-flink trims it.
func (t *tables) nextString(r *rng, maxLen int) string {
	n := 3 + int(r.intn(uint64(maxLen-3)))
	off := int(r.intn(uint64(len(t.text) - n)))
	return strings.TrimSpace(t.text[off : off+n])
}

// extra pads an event whose other fields take size bytes to avg bytes on
// average (±20%).
func (t *tables) extra(r *rng, size, avg int) string {
	if size > avg {
		return ""
	}
	want := avg - size
	delta := int(math.Round(float64(want) * 0.2))
	n := want - delta
	if delta > 0 {
		n += int(r.intn(uint64(2 * delta)))
	}
	off := int(r.intn(uint64(len(t.letters) - n)))
	return t.letters[off : off+n]
}

// personID picks a person for an auction or bid at event n: one of the
// last numActivePeople, or up to PersonIDLead not yet generated.
func (g *Generator) personID(n int64, r *rng) int64 {
	people := lastPerson(n) + 1
	active := min(people, g.active)
	return people - active + int64(r.intn(uint64(active+PersonIDLead)))
}

// auctionID picks an auction for a bid at event n: one of the last
// numInFlightAuctions, or up to AuctionIDLead not yet generated.
func (g *Generator) auctionID(n int64, r *rng) int64 {
	last := lastAuction(n)
	first := max(last-g.inFlight, 0)
	return first + int64(r.intn(uint64(last-first+1+AuctionIDLead)))
}

// Person is event n, which must be a person (KindOf(n) == KindPerson).
func (g *Generator) Person(n int64) Person {
	t := g.tablesFor()
	r := newRng(g.seed, n)
	p := Person{ID: lastPerson(n) + FirstPersonID, DateTime: g.Timestamp(n)}
	p.Name = names[r.intn(uint64(len(names)))]
	// The email and the card number share one allocation; both fit the
	// array, which stays on the stack.
	var buf [64]byte
	b := buf[:0]
	b = append(b, t.nextString(&r, 7)...)
	b = append(b, '@')
	b = append(b, t.nextString(&r, 5)...)
	b = append(b, ".com"...)
	emailLen := len(b)
	for i := range 4 {
		if i > 0 {
			b = append(b, ' ')
		}
		v := r.intn(10000)
		b = append(b, byte('0'+v/1000), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
	}
	both := string(b)
	p.EmailAddress, p.CreditCard = both[:emailLen], both[emailLen:]
	p.City = Cities[r.intn(uint64(len(Cities)))]
	p.State = States[r.intn(uint64(len(States)))]
	size := 8 + len(p.Name) + len(p.EmailAddress) + len(p.CreditCard) + len(p.City) + len(p.State)
	p.Extra = t.extra(&r, size, g.avgPerson)
	return p
}

// Auction is event n, which must be an auction.
func (g *Generator) Auction(n int64) Auction {
	t := g.tablesFor()
	r := newRng(g.seed, n)
	ts := g.Timestamp(n)
	a := Auction{ID: lastAuction(n) + FirstAuctionID, DateTime: ts}
	if r.intn(g.hotSeller) > 0 {
		a.Seller = lastPerson(n) / HotBlock * HotBlock
	} else {
		a.Seller = g.personID(n, &r)
	}
	a.Seller += FirstPersonID
	a.Category = FirstCategoryID + int64(r.intn(NumCategories))
	a.InitialBid = r.price()
	// Auctions last on average as long as it takes to generate
	// numInFlightAuctions more of them.
	horizon := g.Timestamp(n+g.inFlight*totalProp/auctionProp) - ts
	a.Expires = ts + 1 + int64(r.intn(uint64(max(2*horizon, 1))))
	a.ItemName = t.nextString(&r, 20)
	a.Description = t.nextString(&r, 100)
	a.Reserve = a.InitialBid + r.price()
	a.Extra = t.extra(&r, 8+len(a.ItemName)+len(a.Description)+5*8, g.avgAuction)
	return a
}

// Bid is event n, which must be a bid.
func (g *Generator) Bid(n int64) Bid {
	var b Bid
	g.BidInto(n, &b)
	return b
}

// BidInto sets *b to event n, which must be a bid: Bid without the copy,
// for the source's inner loop.
func (g *Generator) BidInto(n int64, b *Bid) {
	t := g.tablesFor()
	r := newRng(g.seed, n)
	b.DateTime = g.Timestamp(n)
	if r.intn(g.hotAuction) > 0 {
		b.Auction = lastAuction(n) / HotBlock * HotBlock
	} else {
		b.Auction = g.auctionID(n, &r)
	}
	b.Auction += FirstAuctionID
	if r.intn(g.hotBidder) > 0 {
		// The second of the block, so hot bidders are not hot sellers.
		b.Bidder = lastPerson(n)/HotBlock*HotBlock + 1
	} else {
		b.Bidder = g.personID(n, &r)
	}
	b.Bidder += FirstPersonID
	b.Price = r.price()
	if r.intn(2) > 0 {
		i := r.intn(hotChannels)
		b.Channel, b.URL = hotNames[i], t.hotURLs[i]
	} else {
		i := r.intn(numChannels)
		b.Channel, b.URL = t.channels[i], t.urls[i]
	}
	b.Extra = t.extra(&r, 4*8, g.avgBid)
}
