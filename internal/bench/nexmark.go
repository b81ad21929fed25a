package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	enx "github.com/sluice-stream/sluice/engine/nexmark"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/internal/nexmark"
)

// The Nexmark report (issue #12): every runnable query
// (examples/nexmark/<q>.json) over N events (10 M × -scale) with its sink
// swapped for discard, at parallelism 1 and 2, beside a hand-written
// single-goroutine loop that generates the same events with the same
// generator and computes the same rows (the COST baseline). Events per
// CPU-second of the process is the per-core figure that published Nexmark
// results are compared with (docs/benchmarks.md § Nexmark).

// nexmarkLoops are the hand-written loops, by query: f sees every event
// number and returns a checksum (so the work is not optimized away).
var nexmarkLoops = map[string]func(g *enx.Generator, events int64) int64{
	"q0": func(g *enx.Generator, events int64) int64 {
		var s int64
		var b enx.Bid
		for n := range events {
			if enx.KindOf(n) == enx.KindBid {
				g.BidInto(n, &b)
				s += b.Auction ^ b.Bidder ^ b.Price ^ b.DateTime + int64(len(b.Extra))
			}
		}
		return s
	},
	"q1": func(g *enx.Generator, events int64) int64 {
		var s int64
		var f float64
		var b enx.Bid
		for n := range events {
			if enx.KindOf(n) == enx.KindBid {
				g.BidInto(n, &b)
				f += nexmark.Euros(b.Price)
				s += b.Auction ^ b.Bidder ^ b.DateTime + int64(len(b.Extra))
			}
		}
		return s + int64(f)
	},
	"q2": func(g *enx.Generator, events int64) int64 {
		var s int64
		var b enx.Bid
		for n := range events {
			if enx.KindOf(n) == enx.KindBid {
				g.BidInto(n, &b)
				if b.Auction%123 == 0 {
					s += b.Auction ^ b.Price
				}
			}
		}
		return s
	},
}

func scenarioNexmark() {
	n := int64(10_000_000 * *scale)
	for _, q := range nexmark.Queries {
		if !q.Runnable {
			continue
		}
		specJSON, err := readRepoFile(filepath.Join("examples", "nexmark", q.Name+".json"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		name := "nexmark " + q.Name
		var loop *measurement
		if f := nexmarkLoops[q.Name]; f != nil {
			g, err := enx.New(enx.Params{Events: &n})
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				os.Exit(1)
			}
			m := best(*reps, func() measurement { return timeIt(n, func() { sink += f(g, n) }) })
			loop = &m
			line(name, "hand-written loop", m, nil)
		}
		sets := []string{"nodes.out.type=discard", "nodes.out.params={}"}
		job, err := spec.Parse(specJSON, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		for _, nd := range job.Nodes {
			if nd.Type == "nexmark" {
				sets = append(sets, fmt.Sprintf("nodes.%s.params.events=%d", nd.ID, n))
			}
		}
		for _, p := range []int{1, 2} {
			m := best(*reps, func() measurement {
				return timeIt(n, func() { mustRun(string(specJSON), append(sets, fmt.Sprintf("parallelism=%d", p))...) })
			})
			line(name, fmt.Sprintf("engine, parallelism %d", p), m, loop)
		}
	}
}

// readRepoFile reads a file of the repository from the working directory
// or the nearest directory above it that has go.mod.
func readRepoFile(rel string) ([]byte, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return os.ReadFile(filepath.Join(dir, rel))
		}
		up := filepath.Dir(dir)
		if up == dir {
			return nil, errors.New("no go.mod in the working directory or above it: run the bench from the repository")
		}
		dir = up
	}
}
