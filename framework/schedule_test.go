package framework

import (
	"reflect"
	"testing"
)

func TestPlace(t *testing.T) {
	ws := []Worker{{"a", 2}, {"b", 2}, {"c", 2}}
	p, err := Place(3, ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Placement{0: "a", 1: "b", 2: "c"}); !reflect.DeepEqual(p, want) {
		t.Errorf("spread: %v, want %v", p, want)
	}
	// b is gone: its pipeline moves, the others stay where their local state is.
	p, err = Place(3, []Worker{{"a", 2}, {"c", 2}}, p)
	if err != nil {
		t.Fatal(err)
	}
	if p[0] != "a" || p[2] != "c" || p[1] == "b" {
		t.Errorf("after losing b: %v", p)
	}
	if _, err := Place(5, []Worker{{"a", 2}, {"c", 2}}, nil); err == nil {
		t.Error("5 pipelines on 4 slots: no error")
	}
	// A previous worker without a free slot left does not get more.
	p, err = Place(2, []Worker{{"a", 1}, {"b", 1}}, Placement{0: "a", 1: "a"})
	if err != nil || p[0] != "a" || p[1] != "b" {
		t.Errorf("prev beyond its slots: %v %v", p, err)
	}
}
