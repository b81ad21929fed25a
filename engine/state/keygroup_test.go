package state

import "testing"

func TestRangeMatchesSubtaskForKeyGroup(t *testing.T) {
	for _, maxP := range []int{1, 7, 128, 1000} {
		for p := 1; p <= maxP && p <= 40; p++ {
			for kg := 0; kg < maxP; kg++ {
				st := SubtaskForKeyGroup(kg, maxP, p)
				if r := RangeForSubtask(st, maxP, p); !r.Contains(kg) {
					t.Fatalf("maxP=%d p=%d kg=%d: subtask %d range %v", maxP, p, kg, st, r)
				}
			}
		}
	}
}
