package backend

import (
	"testing"
	"time"
)

func TestPickRoundRobinSkipsEjected(t *testing.T) {
	var r Registry
	r.Set("v1", []string{"a:1", "b:1", "c:1"})
	p := r.Pool("v1")
	now := time.Now()
	seen := map[string]int{}
	for range 300 {
		seen[p.Pick(nil, now).Addr]++
	}
	if seen["a:1"] != 100 || seen["b:1"] != 100 || seen["c:1"] != 100 {
		t.Fatalf("round robin uneven: %v", seen)
	}
	b := p.Pick(nil, now)
	b.Eject(now, time.Second)
	for range 50 {
		if p.Pick(nil, now) == b {
			t.Fatal("picked an ejected endpoint while others are healthy")
		}
	}
	if p.Pick(nil, now.Add(2*time.Second)) == nil {
		t.Fatal("no endpoint after ejection expired")
	}
}

func TestPickExcludeAndFallback(t *testing.T) {
	var r Registry
	r.Set("v1", []string{"a:1"})
	p := r.Pool("v1")
	now := time.Now()
	a := p.Pick(nil, now)
	if p.Pick(a, now) != nil {
		t.Fatal("the only endpoint was excluded; want nil")
	}
	a.Eject(now, time.Minute)
	if p.Pick(nil, now) != a {
		t.Fatal("all ejected: want a fallback endpoint, not nil")
	}
	if r.Pool("v9").Pick(nil, now) != nil {
		t.Fatal("unknown version must have no endpoint")
	}
}

func TestSetKeepsEjectionState(t *testing.T) {
	var r Registry
	r.Set("v1", []string{"a:1", "b:1"})
	now := time.Now()
	p := r.Pool("v1")
	a := p.Pick(nil, now)
	a.Eject(now, time.Minute)
	if changed := r.Set("v1", []string{"b:1", a.Addr, "c:1"}); !changed {
		t.Fatal("adding c must report a change")
	}
	if r.Set("v1", []string{"c:1", "b:1", a.Addr}) {
		t.Fatal("same set in another order is not a change")
	}
	for range 10 {
		if p.Pick(nil, now).Addr == a.Addr {
			t.Fatal("ejection lost on endpoint update")
		}
	}
}
