package nodes

import (
	"fmt"
	"math"
	"time"

	"github.com/sluice-stream/sluice/engine/nexmark"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// The nexmark source emits the Nexmark benchmark's auction events (persons,
// auctions, bids) that engine/nexmark generates, each a pure function of
// (seed, event number), so the same events come out at any parallelism and
// after a restore or a rescale. Event numbers are the ids idSplits hands
// out; this file only lays events out in columns.

func init() {
	Register("nexmark", Factory{Kind: Source, Plan: planNexmark})
}

// Event kinds as nexmark-flink's event_type column; nxAll is every kind.
const (
	nxPerson  = nexmark.KindPerson
	nxAuction = nexmark.KindAuction
	nxBid     = nexmark.KindBid
	nxAll     = -1
)

// NexmarkParams are the nexmark source's params: the generator's, and
// which kind of events to emit, how fast, with what watermark.
type NexmarkParams struct {
	nexmark.Params
	Kind      string          `json:"kind"`
	Rate      float64         `json:"rate"`
	Watermark WatermarkParams `json:"watermark"`
}

// NexmarkDefaultBaseTime is the event time of event 0 unless baseTime is
// given.
var NexmarkDefaultBaseTime = nexmark.DefaultBaseTime

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

// nexmarkConfig is what every subtask of a nexmark node shares; immutable
// once planned.
type nexmarkConfig struct {
	kind   int
	schema *row.Schema
	gen    *nexmark.Generator
	events int64
	rate   float64
	ooo    int64
	idle   time.Duration
}

func planNexmark(c *PlanContext) (*Planned, error) {
	var p NexmarkParams
	if err := c.Params(&p); err != nil {
		return nil, err
	}
	cfg := &nexmarkConfig{rate: p.Rate, ooo: p.Watermark.OutOfOrderness.Millis(), idle: p.Watermark.IdleTimeout.D()}
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
	if p.Rate < 0 || math.IsNaN(p.Rate) || math.IsInf(p.Rate, 0) {
		return nil, fmt.Errorf("params.rate: must be > 0 events/s, got %v", p.Rate)
	}
	g, err := nexmark.New(p.Params)
	if err != nil {
		return nil, err
	}
	cfg.gen, cfg.events = g, g.Events()
	return &Planned{Schema: cfg.schema, NewSource: func() runtime.Source { return &nexmarkSource{cfg: cfg} }}, nil
}

// nexmarkSource is one subtask of a nexmark node.
type nexmarkSource struct {
	cfg    *nexmarkConfig
	ids    idSplits
	idbuf  []int64
	bidBuf nexmark.Bid // reused: bids are most events
}

func (s *nexmarkSource) Open(ctx *runtime.Context, r *runtime.Restored) error {
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
	g := c.gen
	cols := b.Cols
	added := 0
	for _, p := range ps {
		n := g.EventNumber(p)
		k := nexmark.KindOf(n)
		if c.kind != nxAll && k != c.kind {
			continue
		}
		added++
		switch k {
		case nxPerson:
			s.person(cols, g.Person(n))
		case nxAuction:
			s.auction(cols, g.Auction(n))
		default:
			g.BidInto(n, &s.bidBuf)
			s.bid(cols, &s.bidBuf)
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

func (s *nexmarkSource) person(cols []row.Column, p nexmark.Person) {
	if s.cfg.kind == nxPerson {
		cols[0].Ints = append(cols[0].Ints, p.ID)
		cols[1].Strs = append(cols[1].Strs, p.Name)
		cols[2].Strs = append(cols[2].Strs, p.EmailAddress)
		cols[3].Strs = append(cols[3].Strs, p.CreditCard)
		cols[4].Strs = append(cols[4].Strs, p.City)
		cols[5].Strs = append(cols[5].Strs, p.State)
		cols[6].Ints = append(cols[6].Ints, p.DateTime)
		cols[7].Strs = append(cols[7].Strs, p.Extra)
		return
	}
	allHead(cols, nxPerson, p.DateTime)
	c := cols[nxaPerson:]
	c[0].Ints = append(c[0].Ints, p.ID)
	c[1].Strs = append(c[1].Strs, p.Name)
	c[2].Strs = append(c[2].Strs, p.EmailAddress)
	c[3].Strs = append(c[3].Strs, p.CreditCard)
	c[4].Strs = append(c[4].Strs, p.City)
	c[5].Strs = append(c[5].Strs, p.State)
	c[6].Strs = append(c[6].Strs, p.Extra)
	padAuction(cols)
	padBid(cols)
}

func (s *nexmarkSource) auction(cols []row.Column, a nexmark.Auction) {
	if s.cfg.kind == nxAuction {
		cols[0].Ints = append(cols[0].Ints, a.ID)
		cols[1].Strs = append(cols[1].Strs, a.ItemName)
		cols[2].Strs = append(cols[2].Strs, a.Description)
		cols[3].Ints = append(cols[3].Ints, a.InitialBid)
		cols[4].Ints = append(cols[4].Ints, a.Reserve)
		cols[5].Ints = append(cols[5].Ints, a.DateTime)
		cols[6].Ints = append(cols[6].Ints, a.Expires)
		cols[7].Ints = append(cols[7].Ints, a.Seller)
		cols[8].Ints = append(cols[8].Ints, a.Category)
		cols[9].Strs = append(cols[9].Strs, a.Extra)
		return
	}
	allHead(cols, nxAuction, a.DateTime)
	padPerson(cols)
	c := cols[nxaAuction:]
	c[0].Ints = append(c[0].Ints, a.ID)
	c[1].Strs = append(c[1].Strs, a.ItemName)
	c[2].Strs = append(c[2].Strs, a.Description)
	c[3].Ints = append(c[3].Ints, a.InitialBid)
	c[4].Ints = append(c[4].Ints, a.Reserve)
	c[5].Ints = append(c[5].Ints, a.Expires)
	c[6].Ints = append(c[6].Ints, a.Seller)
	c[7].Ints = append(c[7].Ints, a.Category)
	c[8].Strs = append(c[8].Strs, a.Extra)
	padBid(cols)
}

func (s *nexmarkSource) bid(cols []row.Column, b *nexmark.Bid) {
	if s.cfg.kind == nxBid {
		cols[0].Ints = append(cols[0].Ints, b.Auction)
		cols[1].Ints = append(cols[1].Ints, b.Bidder)
		cols[2].Ints = append(cols[2].Ints, b.Price)
		cols[3].Strs = append(cols[3].Strs, b.Channel)
		cols[4].Strs = append(cols[4].Strs, b.URL)
		cols[5].Ints = append(cols[5].Ints, b.DateTime)
		cols[6].Strs = append(cols[6].Strs, b.Extra)
		return
	}
	allHead(cols, nxBid, b.DateTime)
	padPerson(cols)
	padAuction(cols)
	d := cols[nxaBid:]
	d[0].Ints = append(d[0].Ints, b.Auction)
	d[1].Ints = append(d[1].Ints, b.Bidder)
	d[2].Ints = append(d[2].Ints, b.Price)
	d[3].Strs = append(d[3].Strs, b.Channel)
	d[4].Strs = append(d[4].Strs, b.URL)
	d[5].Strs = append(d[5].Strs, b.Extra)
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
		wm = min(wm, s.cfg.gen.Timestamp(s.cfg.gen.GroupStart(p))-1-s.cfg.ooo)
	}
	if wm == runtime.MaxWatermark {
		wm = runtime.MaxWatermark - 1 // the end itself is signalled by Poll
	}
	return wm, ids.idle.Idle()
}

func (s *nexmarkSource) Snapshot(int64) (runtime.Snapshot, error) { return s.ids.snapshot(), nil }
func (s *nexmarkSource) CheckpointComplete(int64) error           { return nil }
func (s *nexmarkSource) Close() error                             { return nil }
