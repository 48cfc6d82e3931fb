// Package backend keeps the ready endpoints of each model version and picks one per request:
// lock-free round robin that skips endpoints recently ejected for failing to connect.
package backend

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint is one host:port of a version. ejectedUntil is unix nanoseconds; 0 = healthy.
type Endpoint struct {
	Addr         string
	ejectedUntil atomic.Int64
}

// Eject makes pickers skip the endpoint until now+d.
func (e *Endpoint) Eject(now time.Time, d time.Duration) { e.ejectedUntil.Store(now.Add(d).UnixNano()) }

// IsEjected reports whether the endpoint is still inside its ejection window.
func (e *Endpoint) IsEjected(now time.Time) bool { return e.ejectedUntil.Load() > now.UnixNano() }

// Pool is the endpoint set of one version; the slice is replaced whole, never mutated.
type Pool struct {
	eps  atomic.Pointer[[]*Endpoint]
	next atomic.Uint64
}

// Len is the number of endpoints, ejected or not.
func (p *Pool) Len() int {
	if eps := p.eps.Load(); eps != nil {
		return len(*eps)
	}
	return 0
}

// Pick returns the next endpoint in round-robin order that is neither ejected nor `exclude`.
// When every other endpoint is ejected it still returns one (an ejection is a guess, a 503
// is certain); it returns nil only when no endpoint other than `exclude` exists.
func (p *Pool) Pick(exclude *Endpoint, now time.Time) *Endpoint {
	ptr := p.eps.Load()
	if ptr == nil || len(*ptr) == 0 {
		return nil
	}
	eps := *ptr
	start := p.next.Add(1)
	var fallback *Endpoint
	for i := range uint64(len(eps)) {
		e := eps[(start+i)%uint64(len(eps))]
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
	return fallback
}

// Registry maps version -> Pool. Versions appear on first use and stay (cheap, few).
type Registry struct {
	mu    sync.Mutex
	pools sync.Map // string -> *Pool
}

// Pool returns the pool of a version, creating an empty one.
func (r *Registry) Pool(version string) *Pool {
	if p, ok := r.pools.Load(version); ok {
		return p.(*Pool)
	}
	p, _ := r.pools.LoadOrStore(version, &Pool{})
	return p.(*Pool)
}

// Set replaces a version's endpoints, keeping Endpoint objects (and their ejection state)
// for addresses that stay. Returns whether the address set changed.
func (r *Registry) Set(version string, addrs []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	pool := r.Pool(version)
	old := map[string]*Endpoint{}
	if ptr := pool.eps.Load(); ptr != nil {
		for _, e := range *ptr {
			old[e.Addr] = e
		}
	}
	addrs = slices.Compact(slices.Sorted(slices.Values(addrs)))
	next := make([]*Endpoint, 0, len(addrs))
	changed := len(addrs) != len(old)
	for _, a := range addrs {
		e, ok := old[a]
		if !ok {
			e, changed = &Endpoint{Addr: a}, true
		}
		next = append(next, e)
	}
	pool.eps.Store(&next)
	return changed
}

// Addrs lists a version's endpoint addresses (for logs and tests).
func (r *Registry) Addrs(version string) []string {
	ptr := r.Pool(version).eps.Load()
	if ptr == nil {
		return nil
	}
	out := make([]string, 0, len(*ptr))
	for _, e := range *ptr {
		out = append(out, e.Addr)
	}
	return out
}

// Versions lists every version that has (or had) a pool.
func (r *Registry) Versions() []string {
	var out []string
	r.pools.Range(func(k, _ any) bool { out = append(out, k.(string)); return true })
	slices.Sort(out)
	return out
}
