// Package budget is a byte budget shared by concurrent requests: what a request may hold in
// memory is taken before it is held and given back after, so the total never exceeds a bound.
package budget

import "sync/atomic"

// Bytes is a budget of limit bytes; the zero value holds nothing (every TryTake fails).
type Bytes struct {
	limit int64
	used  atomic.Int64
}

// New is a budget of limit bytes.
func New(limit int64) *Bytes { return &Bytes{limit: limit} }

// TryTake reserves n bytes, or reports false (and reserves nothing) when they would take the
// total over the limit. It never waits: callers shed the work instead of queueing it.
func (b *Bytes) TryTake(n int64) bool {
	if n <= 0 {
		return true
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

// Release gives back n bytes taken earlier.
func (b *Bytes) Release(n int64) {
	if n > 0 {
		b.used.Add(-n)
	}
}

// InUse is the bytes taken now (for the gauge and tests).
func (b *Bytes) InUse() int64 { return b.used.Load() }

// Limit is the bound.
func (b *Bytes) Limit() int64 { return b.limit }
