// The memory of recent answers: request id -> which version answered, in which slice, with
// which predictions. Bounded by count and age (oldest go first), sharded so that remembering
// an answer on the hot path is one map insert under one of many small locks.
package feedback

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of one remembered answer and of what is kept beside the answers.
const (
	MaxInstances    = 32       // answers with more predictions are not remembered
	MaxLabels       = 256      // a label set larger than this is not kept (a prediction is one byte)
	MaxLabelsHeader = 16 << 10 // an x-model-labels value longer than this is not kept
	MaxVersions     = 16       // label sets kept for new answers; answers keep their own
	maxSlices       = 64       // distinct slice names kept; further ones count as "other"
	// EntryBytes is the worst case one remembered answer holds: a 128-byte id, its map slot,
	// its ring slot and 32 one-byte predictions (MemoryBound counts --feedback-max-ids of them).
	EntryBytes = 320
)

// Slice names an answer carries when the backend's x-slice says nothing usable.
const (
	SliceNone  = "none"  // no x-slice on the answer
	SliceOther = "other" // not a slice name, or more distinct names than maxSlices
)

// Canonical header keys the backend sets on an answer (read by direct map access).
const (
	sliceHeader       = "X-Slice"
	predictionsHeader = "X-Predictions"
	labelsHeader      = "X-Model-Labels"
)

// labelSet is one version's labels as its answers name them; an answer keeps a pointer to the
// set it was given in, so its predictions (indices into names) stay readable after the version
// is gone from the router's split or from the sets kept for new answers.
type labelSet struct {
	version string
	raw     string // the x-model-labels value it was parsed from
	names   []string
	index   map[string]uint8
}

type entry struct {
	id    string // "" once the id was remembered again for a newer answer (a tombstone)
	set   *labelSet
	slice string
	preds string        // one byte per instance: the predicted label's index in set.names
	at    time.Duration // when remembered, on the memory's clock
	fed   bool          // feedback was given (each answer counts once)
}

// shard is a FIFO of entries (a ring grown up to capacity) and an index into it.
type shard struct {
	mu       sync.Mutex
	byID     map[string]int32 // id -> position in ring
	ring     []entry
	start, n int // oldest position, entries held (tombstones included)
	capacity int
	_        [64]byte // keeps two shards' locks off one cache line
}

// Memory holds the most recent answers, at most maxIDs and none older than maxAge.
type Memory struct {
	shards []shard
	seed   maphash.Seed // random per process: a client cannot aim its ids at one shard
	maxIDs int
	maxAge time.Duration
	epoch  time.Time
	clock  func() time.Duration // since epoch, monotonic; tests replace it

	// Read on every answer, written when a version or slice name is new: immutable maps
	// replaced whole under mu (copy on write), so a read is one plain map lookup.
	sets     atomic.Pointer[map[string]*labelSet] // version -> its label set (at most MaxVersions)
	slices   atomic.Pointer[map[string]string]    // slice name -> the same string, interned (at most maxSlices)
	mu       sync.Mutex
	setOrder []string // versions in sets, oldest first
}

// NewMemory sizes the shards so that they hold maxIDs answers in all: one shard below 2,048,
// then more (up to 64) with at least 1,024 each, so a small bound is exact and a large one
// spreads the lock.
func NewMemory(maxIDs int, maxAge time.Duration) *Memory {
	n := 1
	for n < 64 && maxIDs/(n*2) >= 1024 {
		n *= 2
	}
	m := &Memory{shards: make([]shard, n), seed: maphash.MakeSeed(), maxIDs: maxIDs, maxAge: maxAge,
		epoch: time.Now()}
	m.clock = func() time.Duration { return time.Since(m.epoch) }
	m.sets.Store(&map[string]*labelSet{})
	m.slices.Store(&map[string]string{})
	for i := range m.shards {
		c := maxIDs / n
		if i < maxIDs%n {
			c++
		}
		m.shards[i] = shard{byID: map[string]int32{}, capacity: c}
	}
	return m
}

// Remember keeps a 2xx user-path answer of version under id, from the answer's x-slice,
// x-predictions and x-model-labels headers. An answer without predictions and labels, with
// more than MaxInstances predictions or a prediction not in its label set is not kept (false).
func (m *Memory) Remember(id, version string, h http.Header) bool {
	preds, labels := h[predictionsHeader], h[labelsHeader]
	if len(preds) != 1 || len(labels) != 1 {
		return false
	}
	set := m.labelSetFor(version, labels[0])
	if set == nil {
		return false
	}
	p, ok := set.encode(preds[0])
	if !ok {
		return false
	}
	e := entry{id: id, set: set, slice: m.sliceOf(h[sliceHeader]), preds: p, at: m.clock()}
	s := &m.shards[maphash.String(m.seed, id)&uint64(len(m.shards)-1)]
	s.mu.Lock()
	s.insert(e, m.maxAge)
	s.mu.Unlock()
	return true
}

// insert appends e as the newest entry, first dropping expired ones and, when full, the oldest.
func (s *shard) insert(e entry, maxAge time.Duration) {
	for s.n > 0 && e.at-s.ring[s.start].at > maxAge {
		s.popOldest()
	}
	if old, ok := s.byID[e.id]; ok {
		s.ring[old].id = "" // the id now names the newer answer
	}
	if s.n == s.capacity {
		s.popOldest()
	}
	if s.n == len(s.ring) {
		s.grow()
	}
	pos := (s.start + s.n) % len(s.ring)
	s.ring[pos] = e
	s.byID[e.id] = int32(pos)
	s.n++
}

func (s *shard) popOldest() {
	e := &s.ring[s.start]
	if e.id != "" {
		delete(s.byID, e.id)
	}
	*e = entry{}
	s.start = (s.start + 1) % len(s.ring)
	s.n--
}

// grow doubles the ring (up to capacity), oldest first, and re-points the index.
func (s *shard) grow() {
	ring := make([]entry, min(max(2*len(s.ring), 16), s.capacity))
	for i := 0; i < s.n; i++ {
		ring[i] = s.ring[(s.start+i)%len(s.ring)]
		if ring[i].id != "" {
			s.byID[ring[i].id] = int32(i)
		}
	}
	s.ring, s.start = ring, 0
}

// Len is how many answers are remembered now (expired ones not yet dropped included).
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.byID)
		s.mu.Unlock()
	}
	return n
}

// labelSetFor returns version's label set for this x-model-labels value, parsing it only when
// the value differs from the one kept (nil when it is not a usable label set).
func (m *Memory) labelSetFor(version, raw string) *labelSet {
	if set := (*m.sets.Load())[version]; set != nil && set.raw == raw {
		return set
	}
	set := parseLabelSet(version, raw)
	if set == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sets := map[string]*labelSet{}
	for v, s := range *m.sets.Load() {
		sets[v] = s
	}
	if _, ok := sets[version]; !ok {
		if len(m.setOrder) == MaxVersions {
			delete(sets, m.setOrder[0])
			m.setOrder = m.setOrder[1:]
		}
		m.setOrder = append(m.setOrder, version)
	}
	sets[version] = set
	m.sets.Store(&sets)
	return set
}

func parseLabelSet(version, raw string) *labelSet {
	if len(raw) > MaxLabelsHeader {
		return nil
	}
	set := &labelSet{version: version, raw: raw, index: map[string]uint8{}}
	for name := range strings.SplitSeq(raw, ",") {
		name = strings.TrimSpace(name)
		if _, dup := set.index[name]; name == "" || dup || len(set.names) == MaxLabels {
			return nil
		}
		set.index[name] = uint8(len(set.names))
		set.names = append(set.names, name)
	}
	return set
}

// encode turns "yes,no" into one byte per instance (false: empty, too many, or not in the set).
func (set *labelSet) encode(preds string) (string, bool) {
	var buf [MaxInstances]byte
	if !strings.Contains(preds, ",") { // one instance: a one-byte string needs no allocation
		i, ok := set.index[strings.TrimSpace(preds)]
		buf[0] = i
		return string(buf[:1]), ok
	}
	n := 0
	for p := range strings.SplitSeq(preds, ",") {
		i, ok := set.index[strings.TrimSpace(p)]
		if !ok || n == MaxInstances {
			return "", false
		}
		buf[n] = i
		n++
	}
	return string(buf[:n]), true
}

// sliceOf interns the answer's slice name: "none" without x-slice, "other" for a value that is
// not a slice name ([a-z0-9][a-z0-9_-]{0,31}) or once maxSlices names have been seen.
func (m *Memory) sliceOf(vv []string) string {
	if len(vv) == 0 {
		return SliceNone
	}
	if len(vv) > 1 {
		return SliceOther
	}
	if name, ok := (*m.slices.Load())[vv[0]]; ok {
		return name
	}
	if !IsSliceName(vv[0]) {
		return SliceOther
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.slices.Load()
	if name, ok := old[vv[0]]; ok {
		return name
	}
	if len(old) >= maxSlices {
		return SliceOther
	}
	name := strings.Clone(vv[0]) // not the header's memory
	slices := map[string]string{name: name}
	for k, v := range old {
		slices[k] = v
	}
	m.slices.Store(&slices)
	return name
}

// IsSliceName: the model server's slice names, [a-z0-9][a-z0-9_-]{0,31}.
func IsSliceName(v string) bool {
	if len(v) == 0 || len(v) > 32 || v[0] == '-' || v[0] == '_' {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Settlement is what one accepted feedback counted.
type Settlement struct {
	Version, Slice     string
	Correct, Incorrect int
}

// UnknownIDError: no answer under that id (never given, given by another router replica,
// pushed out by newer ones, or older than the age bound).
type UnknownIDError struct {
	ID      string
	Expired bool
}

func (e UnknownIDError) Error() string {
	if e.Expired {
		return "requestId " + quoteShort(e.ID) + ": the answer is older than the router keeps answers for feedback"
	}
	return "requestId " + quoteShort(e.ID) + ": no answer with this id is remembered"
}

// DuplicateError: feedback for that answer was already given (each answer counts once).
type DuplicateError struct{ ID, Version string }

func (e DuplicateError) Error() string {
	return "requestId " + quoteShort(e.ID) + ": feedback for this answer (version " + e.Version +
		") was already given; each answer counts once"
}

// CountError: the labels sent do not match the answer's number of instances.
type CountError struct {
	ID        string
	Field     string // "label" or "labels"
	Want, Got int
}

func (e CountError) Error() string {
	if e.Field == "label" {
		return fmt.Sprintf("label: the answer to requestId %s had %d instances; send \"labels\" with %d "+
			"entries, one per instance in order", quoteShort(e.ID), e.Want, e.Want)
	}
	return fmt.Sprintf("labels: expected %d labels, one per instance of the answer to requestId %s, got %d",
		e.Want, quoteShort(e.ID), e.Got)
}

// LabelError: a label that is not in the answering version's label set.
type LabelError struct {
	Field   string // "label" or "labels[i]"
	Label   string
	Version string
	Set     []string
}

func (e LabelError) Error() string {
	return e.Field + ": " + quoteShort(e.Label) + " is not a label of version " + e.Version +
		"; expected one of " + strings.Join(e.Set, ", ")
}

// Settle counts labels (the true label of each instance, in order) against the answer under id
// and marks it as fed back, all under the shard's lock, so two feedbacks for one answer racing
// each other count once. Nothing is marked when the labels are refused. single says the
// client sent "label" (one instance) rather than "labels".
func (m *Memory) Settle(id string, labels []string, single bool) (Settlement, error) {
	s := &m.shards[maphash.String(m.seed, id)&uint64(len(m.shards)-1)]
	s.mu.Lock()
	defer s.mu.Unlock()
	pos, ok := s.byID[id]
	if !ok {
		return Settlement{}, UnknownIDError{ID: id}
	}
	e := &s.ring[pos]
	if m.clock()-e.at > m.maxAge {
		return Settlement{}, UnknownIDError{ID: id, Expired: true}
	}
	if e.fed {
		return Settlement{}, DuplicateError{ID: id, Version: e.set.version}
	}
	field := "labels"
	if single {
		field = "label"
	}
	if len(labels) != len(e.preds) {
		return Settlement{}, CountError{ID: id, Field: field, Want: len(e.preds), Got: len(labels)}
	}
	out := Settlement{Version: e.set.version, Slice: e.slice}
	for i, l := range labels {
		want, ok := e.set.index[l]
		if !ok {
			f := field
			if !single {
				f = "labels[" + strconv.Itoa(i) + "]"
			}
			return Settlement{}, LabelError{Field: f, Label: l, Version: e.set.version, Set: e.set.names}
		}
		if want == e.preds[i] {
			out.Correct++
		} else {
			out.Incorrect++
		}
	}
	e.fed = true
	return out, nil
}
