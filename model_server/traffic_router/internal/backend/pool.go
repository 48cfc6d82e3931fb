// Package backend keeps the endpoints of each model version and picks one per request:
// lock-free round robin over the ready ones that skips endpoints recently ejected for failing
// to connect, and panic routing to not-ready ones while a version has no ready endpoint.
package backend

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Addrs is one version's endpoints (host:port) as a source sees them. Only Ready is routed to
// normally; Serving, then NotServing, are the fallback while Ready is empty (panic routing).
type Addrs struct {
	Ready      []string // passing readiness (EndpointSlice conditions.ready true or unset)
	Serving    []string // not ready but serving: terminating pods that still pass their probe
	NotServing []string // not ready and not serving: failing their probe (slow, starting) or unknown
}

// Fallback lists the not-ready addresses, the serving ones first (never nil, so logs show []).
func (a Addrs) Fallback() []string {
	out := make([]string, 0, len(a.Serving)+len(a.NotServing))
	return append(append(out, a.Serving...), a.NotServing...)
}

// Equal compares two normalized address sets.
func (a Addrs) Equal(b Addrs) bool {
	return slices.Equal(a.Ready, b.Ready) && slices.Equal(a.Serving, b.Serving) &&
		slices.Equal(a.NotServing, b.NotServing)
}

// NormalizeAddrs sorts each list and drops duplicates; an address listed in several lists
// keeps only its best one (ready, then serving), as one pod in two slices is still one pod.
// Lists are never nil, so logs show [] rather than null.
func NormalizeAddrs(a Addrs) Addrs {
	seen := map[string]bool{}
	uniq := func(in []string) []string {
		out := []string{}
		for _, s := range slices.Compact(slices.Sorted(slices.Values(in))) {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
		return out
	}
	return Addrs{Ready: uniq(a.Ready), Serving: uniq(a.Serving), NotServing: uniq(a.NotServing)}
}

// ComputeTiers decides what a version routes to, best tier first: its ready addresses; or,
// when it has none and panic routing is allowed, its not-ready ones (serving, then the rest).
// inPanic reports the latter. a must be normalized.
func ComputeTiers(a Addrs, allowPanic bool) (tiers [][]string, inPanic bool) {
	if len(a.Ready) > 0 || !allowPanic || len(a.Serving)+len(a.NotServing) == 0 {
		return [][]string{a.Ready}, false
	}
	return [][]string{a.Serving, a.NotServing}, true
}

// Endpoint is one host:port of a version. ejectedUntil is unix nanoseconds; 0 = healthy.
type Endpoint struct {
	Addr         string
	ejectedUntil atomic.Int64
}

// Eject makes pickers skip the endpoint until now+d.
func (e *Endpoint) Eject(now time.Time, d time.Duration) { e.ejectedUntil.Store(now.Add(d).UnixNano()) }

// IsEjected reports whether the endpoint is still inside its ejection window.
func (e *Endpoint) IsEjected(now time.Time) bool { return e.ejectedUntil.Load() > now.UnixNano() }

// poolState is one immutable snapshot of a version's endpoints.
type poolState struct {
	addrs   Addrs                // normalized, as the source reported them
	known   map[string]*Endpoint // every listed address, so ejections survive moves between lists
	tiers   [][]*Endpoint        // what Pick routes to, best tier first
	n       int                  // endpoints across tiers
	inPanic bool                 // tiers are not-ready endpoints (panic routing)
}

// Pool is the endpoint set of one version; the state is replaced whole, never mutated.
type Pool struct {
	state atomic.Pointer[poolState]
	next  atomic.Uint64
}

// Len is the number of endpoints Pick routes to, ejected or not (in panic mode, not-ready ones).
func (p *Pool) Len() int {
	if st := p.state.Load(); st != nil {
		return st.n
	}
	return 0
}

// IsPanic reports whether the pool routes to not-ready endpoints because no endpoint is ready.
func (p *Pool) IsPanic() bool {
	st := p.state.Load()
	return st != nil && st.inPanic
}

// Addrs returns the addresses last set (normalized; for logs, messages and tests).
func (p *Pool) Addrs() Addrs {
	if st := p.state.Load(); st != nil {
		return st.addrs
	}
	return Addrs{}
}

// Pick returns the next endpoint in round-robin order that is neither ejected nor `exclude`,
// from the first tier that has one. When every other endpoint is ejected it still returns one
// (an ejection is a guess, a 503 is certain); it returns nil only when no endpoint other than
// `exclude` exists.
func (p *Pool) Pick(exclude *Endpoint, now time.Time) *Endpoint {
	st := p.state.Load()
	if st == nil || st.n == 0 {
		return nil
	}
	start := p.next.Add(1)
	var fallback *Endpoint
	for _, eps := range st.tiers {
		n := uint64(len(eps))
		for i := range n {
			e := eps[(start+i)%n]
			if e == exclude {
				continue
			}
			if !e.IsEjected(now) {
				return e
			}
			if fallback == nil {
				fallback = e
			}
		}
	}
	return fallback
}

// Registry maps version -> Pool. Versions appear on first use and stay (cheap, few).
type Registry struct {
	PanicRouting bool // route to not-ready endpoints while a version has no ready one (--panic-routing)
	mu           sync.Mutex
	pools        sync.Map // string -> *Pool
}

// Pool returns the pool of a version, creating an empty one.
func (r *Registry) Pool(version string) *Pool {
	if p, ok := r.pools.Load(version); ok {
		return p.(*Pool)
	}
	p, _ := r.pools.LoadOrStore(version, &Pool{})
	return p.(*Pool)
}

// Change is what one Set did to a version's pool.
type Change struct {
	Changed  bool // some address was added, removed or moved between ready and not ready
	Panic    bool // the pool now routes to not-ready endpoints
	WasPanic bool // it did before this Set
}

// Set replaces a version's endpoints, keeping Endpoint objects (and their ejection state)
// for addresses that stay.
func (r *Registry) Set(version string, a Addrs) Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	pool := r.Pool(version)
	old := pool.state.Load()
	if old == nil {
		old = &poolState{}
	}
	a = NormalizeAddrs(a)
	next := &poolState{addrs: a, known: map[string]*Endpoint{}}
	for _, list := range [][]string{a.Ready, a.Serving, a.NotServing} {
		for _, s := range list {
			e, ok := old.known[s]
			if !ok {
				e = &Endpoint{Addr: s}
			}
			next.known[s] = e
		}
	}
	tiers, inPanic := ComputeTiers(a, r.PanicRouting)
	for _, tier := range tiers {
		eps := make([]*Endpoint, 0, len(tier))
		for _, s := range tier {
			eps = append(eps, next.known[s])
		}
		next.tiers, next.n = append(next.tiers, eps), next.n+len(eps)
	}
	next.inPanic = inPanic
	pool.state.Store(next)
	return Change{Changed: !old.addrs.Equal(a), Panic: inPanic, WasPanic: old.inPanic}
}

// Versions lists every version that has (or had) a pool.
func (r *Registry) Versions() []string {
	var out []string
	r.pools.Range(func(k, _ any) bool { out = append(out, k.(string)); return true })
	slices.Sort(out)
	return out
}
