package split

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzStickyBucket feeds the sticky-header split any candidate version and header value
// (huge, empty, binary): the bucket stays in [0, 100), is a pure function of its inputs, and
// raising the candidate weight only ever moves a key from stable to candidate.
func FuzzStickyBucket(f *testing.F) {
	f.Add("v2", "user-1", uint8(10))
	f.Add("", "", uint8(0))
	f.Add("canary-v1", "\x00\xff\xfe", uint8(99))
	f.Add("v2", string(make([]byte, 65536)), uint8(50))
	f.Fuzz(func(t *testing.T, candidate, key string, weight uint8) {
		w := int(weight % 101)
		s := Split{Stable: Target{"v1", 100 - w}, Candidate: &Target{candidate, w}}
		b := ComputeStickyBucket(s, key)
		if b < 0 || b >= 100 || b != ComputeStickyBucket(s, key) {
			t.Fatalf("bucket %d", b)
		}
		role, _ := DecideRole(s, b)
		for more := w; more <= 100; more += 7 {
			s2 := Split{Stable: Target{"v1", 100 - more}, Candidate: &Target{candidate, more}}
			if r2, _ := DecideRole(s2, ComputeStickyBucket(s2, key)); role == Candidate && r2 != Candidate {
				t.Fatalf("key left the candidate when its weight grew from %d to %d", w, more)
			}
		}
		if w == 0 && role != Stable || w == 100 && role != Candidate {
			t.Fatalf("weight %d sent the key to %s", w, role)
		}
	})
}

// FuzzParseRollout feeds the status parser any JSON object: it never panics, an accepted
// split obeys the rules the router relies on, and a refusal names the field at fault.
func FuzzParseRollout(f *testing.F) {
	f.Add(`{"status":{"traffic":{"stable":{"version":"v1","weight":90},"candidate":{"version":"v2","weight":10},"mirror":{"version":"v2","percent":50},"stickyHeader":"x-user-id"}}}`)
	f.Add(`{"status":{"traffic":{"stable":{"version":"v1","weight":100},"candidate":null,"mirror":null}}}`)
	f.Add(`{"status":{"traffic":{"stable":{"version":"v1","weight":90.5},"candidate":{"version":"v1","weight":9.5}}}}`)
	f.Add(`{"status":{"traffic":{"stable":{"version":"v1","weight":1e300},"candidate":{"version":"v2","weight":-1e300}}}}`)
	f.Add(`{"status":{"traffic":{"stable":{"version":"v1","weight":100},"stickyHeader":"x user\u0000"}}}`)
	f.Fuzz(func(t *testing.T, doc string) {
		var obj map[string]any
		if json.Unmarshal([]byte(doc), &obj) != nil {
			return
		}
		s, err := ParseRollout(obj)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "status.traffic") {
				t.Fatalf("error names no field: %s", msg)
			}
			return
		}
		if s.Stable.Version == "" || s.Stable.Weight+s.CandidateWeight() != 100 || s.Stable.Weight < 0 {
			t.Fatalf("accepted a bad split: %+v", s)
		}
		if c := s.Candidate; c != nil && (c.Version == "" || c.Version == s.Stable.Version || c.Weight < 0 || c.Weight > 100) {
			t.Fatalf("accepted a bad candidate: %+v", *c)
		}
		if m := s.Mirror; m != nil && (m.Version == "" || m.Percent < 0 || m.Percent > 100) {
			t.Fatalf("accepted a bad mirror: %+v", *m)
		}
		if s.StickyHeader != "" && !isToken(s.StickyHeader) {
			t.Fatalf("accepted sticky header %q", s.StickyHeader)
		}
	})
}
