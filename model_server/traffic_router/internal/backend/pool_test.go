package backend

import (
	"reflect"
	"testing"
	"time"
)

func ready(addrs ...string) Addrs { return Addrs{Ready: addrs} }

func TestPickRoundRobinSkipsEjected(t *testing.T) {
	var r Registry
	r.Set("v1", ready("a:1", "b:1", "c:1"))
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
	r.Set("v1", ready("a:1"))
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
	r.Set("v1", ready("a:1", "b:1"))
	now := time.Now()
	p := r.Pool("v1")
	a := p.Pick(nil, now)
	a.Eject(now, time.Minute)
	if ch := r.Set("v1", ready("b:1", a.Addr, "c:1")); !ch.Changed {
		t.Fatal("adding c must report a change")
	}
	if r.Set("v1", ready("c:1", "b:1", a.Addr)).Changed {
		t.Fatal("same set in another order is not a change")
	}
	for range 10 {
		if p.Pick(nil, now).Addr == a.Addr {
			t.Fatal("ejection lost on endpoint update")
		}
	}
}

func TestComputeTiers(t *testing.T) {
	cases := []struct {
		name      string
		in        Addrs
		allow     bool
		wantTiers [][]string
		wantPanic bool
	}{
		{"ready only", Addrs{Ready: []string{"a"}}, true, [][]string{{"a"}}, false},
		{"ready wins over not-ready", Addrs{Ready: []string{"a"}, Serving: []string{"b"}, NotServing: []string{"c"}},
			true, [][]string{{"a"}}, false},
		{"no ready: serving then the rest", Addrs{Serving: []string{"b"}, NotServing: []string{"c"}},
			true, [][]string{{"b"}, {"c"}}, true},
		{"no ready, only not serving", Addrs{NotServing: []string{"c"}}, true, [][]string{nil, {"c"}}, true},
		{"panic routing off", Addrs{Serving: []string{"b"}, NotServing: []string{"c"}}, false, [][]string{nil}, false},
		{"nothing at all", Addrs{}, true, [][]string{nil}, false},
	}
	for _, c := range cases {
		tiers, inPanic := ComputeTiers(c.in, c.allow)
		if !reflect.DeepEqual(tiers, c.wantTiers) || inPanic != c.wantPanic {
			t.Errorf("%s: got %v %v, want %v %v", c.name, tiers, inPanic, c.wantTiers, c.wantPanic)
		}
	}
}

func TestNormalizeKeepsEachAddressInItsBestList(t *testing.T) {
	got := NormalizeAddrs(Addrs{Ready: []string{"b", "a", "b"}, Serving: []string{"a", "c"}, NotServing: []string{"c", "d", "b"}})
	want := Addrs{Ready: []string{"a", "b"}, Serving: []string{"c"}, NotServing: []string{"d"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v want %+v", got, want)
	}
	if empty := NormalizeAddrs(Addrs{}); empty.Ready == nil || empty.Fallback() == nil {
		t.Fatal("empty lists must be [] (logged as [], not null)")
	}
}

func TestPanicModeRoutesToNotReadyServingFirstThenOnlyReady(t *testing.T) {
	r := Registry{PanicRouting: true}
	now := time.Now()
	ch := r.Set("v1", Addrs{Serving: []string{"s:1"}, NotServing: []string{"n:1", "m:1"}})
	if ch != (Change{Changed: true, Panic: true}) {
		t.Fatalf("entering panic: %+v", ch)
	}
	p := r.Pool("v1")
	if !p.IsPanic() || p.Len() != 3 {
		t.Fatalf("panic %v len %d", p.IsPanic(), p.Len())
	}
	for range 10 {
		if got := p.Pick(nil, now).Addr; got != "s:1" {
			t.Fatalf("picked %s while a serving endpoint is healthy", got)
		}
	}
	s := p.Pick(nil, now)
	if got := p.Pick(s, now); got == nil || got.Addr == "s:1" {
		t.Fatalf("retry after the serving endpoint failed must go to a not-serving one, got %v", got)
	}
	s.Eject(now, time.Minute)
	seen := map[string]int{}
	for range 10 {
		seen[p.Pick(nil, now).Addr]++
	}
	if seen["m:1"] != 5 || seen["n:1"] != 5 {
		t.Fatalf("serving one ejected: want round robin over the rest, got %v", seen)
	}
	ch = r.Set("v1", Addrs{Ready: []string{"r:1"}, Serving: []string{"s:1"}, NotServing: []string{"n:1", "m:1"}})
	if ch != (Change{Changed: true, Panic: false, WasPanic: true}) || p.IsPanic() || p.Len() != 1 {
		t.Fatalf("leaving panic: %+v panic %v len %d", ch, p.IsPanic(), p.Len())
	}
	ready := p.Pick(nil, now)
	if ready.Addr != "r:1" || p.Pick(ready, now) != nil {
		t.Fatal("with a ready endpoint only ready ones are used, even for the retry")
	}
	ready.Eject(now, time.Minute)
	if p.Pick(nil, now) != ready {
		t.Fatal("an ejected ready endpoint still beats not-ready ones")
	}
	// Back into panic: s:1 kept its ejection across the two Sets.
	r.Set("v1", Addrs{Serving: []string{"s:1"}, NotServing: []string{"n:1"}})
	if got := p.Pick(nil, now).Addr; got != "n:1" {
		t.Fatalf("ejection lost when the endpoint moved lists: picked %s", got)
	}
}

func TestPanicRoutingOffNeverUsesNotReady(t *testing.T) {
	var r Registry
	ch := r.Set("v1", Addrs{Serving: []string{"s:1"}, NotServing: []string{"n:1"}})
	p := r.Pool("v1")
	if ch.Panic || p.IsPanic() || p.Len() != 0 || p.Pick(nil, time.Now()) != nil {
		t.Fatalf("panic routing off: %+v len %d", ch, p.Len())
	}
	if got := p.Addrs().Fallback(); !reflect.DeepEqual(got, []string{"s:1", "n:1"}) {
		t.Fatalf("the listed not-ready endpoints are still known (for messages): %v", got)
	}
	if ch := r.Set("v1", Addrs{Serving: []string{"s:1"}, NotServing: []string{"n:1"}}); ch.Changed {
		t.Fatal("same sets again is not a change")
	}
}
