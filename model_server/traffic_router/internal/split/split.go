// Package split is the router's pure core: the desired traffic split parsed from a
// ModelRollout's status.traffic (weights, mirror, sticky header), and the per-request choice.
package split

import (
	"fmt"
	"hash/fnv"
	"math"
	"strings"
)

// Role is which side of a rollout a request goes to.
type Role string

const (
	Stable    Role = "stable"
	Candidate Role = "candidate"
)

// Target is one weighted version.
type Target struct {
	Version string `json:"version"`
	Weight  int    `json:"weight"`
}

// Mirror names the version that receives copies of Percent % of the stable requests.
type Mirror struct {
	Version string `json:"version"`
	Percent int    `json:"percent"`
}

// Split is what the router applies. Candidate and Mirror are nil when absent.
type Split struct {
	Stable       Target
	Candidate    *Target
	Mirror       *Mirror
	StickyHeader string // empty: not sticky
	Source       string // "status", "static" or "safe-default": why the router uses this split
}

// SafeDefault is all traffic to one version: used when the status cannot be read.
func SafeDefault(version, stickyHeader string) Split {
	return Split{Stable: Target{Version: version, Weight: 100}, StickyHeader: stickyHeader, Source: "safe-default"}
}

// Equal reports whether two splits route identically (Source is informational).
func (s Split) Equal(o Split) bool {
	return s.Stable == o.Stable && s.StickyHeader == o.StickyHeader &&
		ptrEqual(s.Candidate, o.Candidate) && ptrEqual(s.Mirror, o.Mirror)
}

func ptrEqual[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// CandidateWeight is 0 when there is no candidate.
func (s Split) CandidateWeight() int {
	if s.Candidate == nil {
		return 0
	}
	return s.Candidate.Weight
}

// DecideRole picks the role for a request. bucket is in [0, 100): a hash of the sticky key
// (ComputeStickyBucket) or a uniform random number. Candidate iff bucket < candidate weight,
// so raising the weight only moves keys from stable to candidate, never back.
func DecideRole(s Split, bucket int) (Role, string) {
	if s.Candidate != nil && bucket < s.Candidate.Weight {
		return Candidate, s.Candidate.Version
	}
	return Stable, s.Stable.Version
}

// IsMirrored says whether a stable request with this bucket (in [0, 100)) is copied.
func IsMirrored(s Split, role Role, bucket int) bool {
	return role == Stable && s.Mirror != nil && s.Mirror.Version != s.Stable.Version &&
		bucket < s.Mirror.Percent
}

// ComputeStickyBucket maps a sticky key to [0, 100). The candidate version salts the hash so
// each rollout samples a different cohort of users instead of always the same first 10%.
func ComputeStickyBucket(s Split, key string) int {
	h := fnv.New64a()
	if s.Candidate != nil {
		h.Write([]byte(s.Candidate.Version))
	}
	h.Write([]byte{0})
	h.Write([]byte(key))
	return int(h.Sum64() % 100)
}

// ParseRollout reads the split from a ModelRollout object (as decoded JSON). Errors name the
// field and what was expected.
func ParseRollout(obj map[string]any) (Split, error) {
	traffic, ok := dig(obj, "status", "traffic").(map[string]any)
	if !ok {
		return Split{}, fmt.Errorf("status.traffic: missing (the operator has not published a split yet)")
	}
	// The operator decides the sticky header with the split it belongs to: status.traffic
	// carries both, so one status write switches them together (the spec is not read).
	sticky, err := ParseHeaderName(traffic["stickyHeader"], "status.traffic.stickyHeader")
	if err != nil {
		return Split{}, err
	}
	sp, err := ParseTraffic(traffic, "status.traffic")
	sp.StickyHeader = sticky
	sp.Source = "status"
	return sp, err
}

// ParseStableVersion extracts only status.traffic.stable.version, for the safe default
// when the rest of the split is unusable.
func ParseStableVersion(obj map[string]any) string {
	v, _ := dig(obj, "status", "traffic", "stable", "version").(string)
	return v
}

// ParseHeaderName validates an optional header name (nil -> "").
func ParseHeaderName(raw any, path string) (string, error) {
	if raw == nil {
		return "", nil
	}
	h, ok := raw.(string)
	if !ok || !isToken(h) {
		return "", fmt.Errorf("%s: expected an HTTP header name such as x-user-id, got %v", path, raw)
	}
	return h, nil
}

// ParseTraffic validates a traffic block {stable, candidate?, mirror?}; path prefixes errors.
func ParseTraffic(t map[string]any, path string) (Split, error) {
	var sp Split
	stable, err := parseTarget(t["stable"], path+".stable", true)
	if err != nil {
		return sp, err
	}
	sp.Stable = *stable
	if sp.Candidate, err = parseTarget(t["candidate"], path+".candidate", false); err != nil {
		return sp, err
	}
	sum := sp.Stable.Weight + sp.CandidateWeight()
	if sum != 100 {
		return sp, fmt.Errorf("%s: stable.weight + candidate.weight must be 100, got %d", path, sum)
	}
	if sp.Candidate != nil && sp.Candidate.Version == sp.Stable.Version {
		return sp, fmt.Errorf("%s.candidate.version: must differ from stable.version %q", path, sp.Stable.Version)
	}
	sp.Mirror, err = parseMirror(t["mirror"], path+".mirror")
	return sp, err
}

func parseTarget(raw any, path string, required bool) (*Target, error) {
	if raw == nil {
		if required {
			return nil, fmt.Errorf("%s: missing; expected {version: <name>, weight: 0..100}", path)
		}
		return nil, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: expected an object {version, weight}, got %v", path, raw)
	}
	version, err := parseVersion(m["version"], path+".version")
	if err != nil {
		return nil, err
	}
	weight, err := parsePercent(m["weight"], path+".weight")
	if err != nil {
		return nil, err
	}
	return &Target{Version: version, Weight: weight}, nil
}

func parseMirror(raw any, path string) (*Mirror, error) {
	if raw == nil {
		return nil, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: expected an object {version, percent}, got %v", path, raw)
	}
	version, err := parseVersion(m["version"], path+".version")
	if err != nil {
		return nil, err
	}
	percent, err := parsePercent(m["percent"], path+".percent")
	if err != nil {
		return nil, err
	}
	return &Mirror{Version: version, Percent: percent}, nil
}

func parseVersion(raw any, path string) (string, error) {
	v, ok := raw.(string)
	if !ok || v == "" {
		return "", fmt.Errorf("%s: expected a non-empty version name, got %v", path, raw)
	}
	return v, nil
}

// parsePercent accepts the integer forms JSON decoders produce (int64, float64 without fraction).
func parsePercent(raw any, path string) (int, error) {
	var f float64
	switch n := raw.(type) {
	case int64:
		f = float64(n)
	case int:
		f = float64(n)
	case float64:
		f = n
	default:
		return 0, fmt.Errorf("%s: expected an integer 0..100, got %v", path, raw)
	}
	if f != math.Trunc(f) || f < 0 || f > 100 {
		return 0, fmt.Errorf("%s: expected an integer 0..100, got %v", path, raw)
	}
	return int(f), nil
}

func dig(obj map[string]any, keys ...string) any {
	var cur any = obj
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// isToken: an RFC 7230 token, the same rule as the CRD's stickyHeader pattern (a header the
// operator accepts must not make the router refuse the whole split).
func isToken(h string) bool {
	if h == "" {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}
