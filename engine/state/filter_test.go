package state

import "testing"

// TestKeyFilter: no false negatives while it grows; few false positives.
func TestKeyFilter(t *testing.T) {
	var f KeyFilter
	const n = 200_000
	for i := int64(0); i < n; i++ {
		f.Add(FilterHash(i * 3))
	}
	for i := int64(0); i < n; i++ {
		if !f.MayContain(FilterHash(i * 3)) {
			t.Fatalf("key %d added but not found", i*3)
		}
	}
	fp := 0
	for i := int64(0); i < n; i++ {
		if f.MayContain(FilterHash(i*3 + 1)) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.05 {
		t.Fatalf("false positive rate %.3f", rate)
	}
	var s KeyFilter
	s.Add(FilterHash("a"))
	if !s.MayContain(FilterHash("a")) {
		t.Fatal("string key not found")
	}
}
