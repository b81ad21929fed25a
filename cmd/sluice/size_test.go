package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestSizeArticle: `sluice size` with its defaults (the article's example)
// prints the article's figures, as a table and as JSON; a bad flag names
// itself.
func TestSizeArticle(t *testing.T) {
	var out, errb bytes.Buffer
	if code := sizeMain([]string{"--explain"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"400 MB/s", "320 MB/s", "66.7 MB/s", "40 MB/s", "333 MB/s", "total                     760 MB/s  760 MB/s", "3.8 GB/s in", "NIC headroom: 39%", "checkpoint upload (full) = keys × window/slide"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := sizeMain([]string{"--json", "--peak", "1.5", "--headroom", "0.3"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r struct {
		In     float64 `json:"inBytesPerSecond"`
		Inputs struct {
			Window string `json:"window"`
		} `json:"inputs"`
		Needed struct {
			Machines int `json:"machines"`
		} `json:"needed"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if r.In != 760e6 || r.Inputs.Window != "5m0s" || r.Needed.Machines != 7 {
		t.Fatalf("json: in %v, window %q, machines needed %d\n%s", r.In, r.Inputs.Window, r.Needed.Machines, out.String())
	}
	errb.Reset()
	if code := sizeMain([]string{"--record-size", "2XB"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--record-size") {
		t.Fatalf("bad size: exit %d, %q", code, errb.String())
	}
}
