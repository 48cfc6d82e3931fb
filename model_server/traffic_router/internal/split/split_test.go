package split

import (
	"encoding/json"
	"strings"
	"testing"
)

func obj(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseRolloutFull(t *testing.T) {
	sp, err := ParseRollout(obj(t, `{"status":{"traffic":{"stable":{"version":"v1","weight":90},
		"candidate":{"version":"v2","weight":10},"mirror":{"version":"v3","percent":50},"stickyHeader":"x-user-id"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Split{Stable: Target{"v1", 90}, Candidate: &Target{"v2", 10}, Mirror: &Mirror{"v3", 50}, StickyHeader: "x-user-id"}
	if !sp.Equal(want) || sp.Source != "status" {
		t.Fatalf("got %+v", sp)
	}
}

func TestParseRolloutErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		`{"status":{}}`: "status.traffic: missing",
		`{"status":{"traffic":{"stable":{"version":"v1","weight":"x"}}}}`:                                         "status.traffic.stable.weight: expected an integer 0..100",
		`{"status":{"traffic":{"stable":{"version":"v1","weight":90.5}}}}`:                                        "status.traffic.stable.weight",
		`{"status":{"traffic":{"stable":{"version":"v1","weight":90}}}}`:                                          "must be 100, got 90",
		`{"status":{"traffic":{"stable":{"weight":100}}}}`:                                                        "status.traffic.stable.version: expected a non-empty version name",
		`{"status":{"traffic":{"stable":{"version":"v1","weight":60},"candidate":{"version":"v2","weight":41}}}}`: "must be 100, got 101",
		`{"status":{"traffic":{"stable":{"version":"v1","weight":50},"candidate":{"version":"v1","weight":50}}}}`: "candidate.version: must differ",
		`{"status":{"traffic":{"stable":{"version":"v1","weight":100},"mirror":{"version":"v2","percent":101}}}}`: "status.traffic.mirror.percent",
		`{"status":{"traffic":{"stable":{"version":"v1","weight":100},"stickyHeader":"bad header"}}}`:             "status.traffic.stickyHeader",
	}
	for in, want := range cases {
		_, err := ParseRollout(obj(t, in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want error containing %q", in, err, want)
		}
	}
}

// The operator decides the sticky header and writes it with the split; a header in the spec
// the status does not carry (yet) must not make the router sticky on its own.
func TestParseRolloutStickyHeaderOnlyFromStatus(t *testing.T) {
	sp, err := ParseRollout(obj(t, `{"spec":{"trafficRouting":{"router":{"stickyHeader":"x-user-id"}}},
		"status":{"traffic":{"stable":{"version":"v1","weight":100},"stickyHeader":null}}}`))
	if err != nil || sp.StickyHeader != "" {
		t.Fatalf("got %+v, %v; want no sticky header", sp, err)
	}
}

// Every RFC 7230 token the CRD and the operator accept is a header the router can be sticky on.
func TestParseHeaderNameAcceptsEveryRFC7230Token(t *testing.T) {
	for _, h := range []string{"x-user-id", "X.User.Id", "x_user~1", "!#$%&'*+-.^_`|~09azAZ"} {
		if got, err := ParseHeaderName(h, "h"); err != nil || got != h {
			t.Errorf("%q: got %q, %v", h, got, err)
		}
	}
	for _, h := range []any{"", "bad header", "x:y", "x\r\ny", "é", 7} {
		if _, err := ParseHeaderName(h, "h"); err == nil {
			t.Errorf("%q: accepted", h)
		}
	}
}

func TestDecideRoleBoundaries(t *testing.T) {
	sp := Split{Stable: Target{"v1", 90}, Candidate: &Target{"v2", 10}}
	counts := map[Role]int{}
	for b := range 100 {
		r, v := DecideRole(sp, b)
		counts[r]++
		if (r == Candidate) != (v == "v2") {
			t.Fatalf("bucket %d: role %s version %s", b, r, v)
		}
	}
	if counts[Candidate] != 10 || counts[Stable] != 90 {
		t.Fatalf("buckets per role: %v", counts)
	}
	if r, _ := DecideRole(Split{Stable: Target{"v1", 100}}, 0); r != Stable {
		t.Fatal("no candidate must mean stable")
	}
}

func TestStickyBucketIsStableAndMonotone(t *testing.T) {
	s10 := Split{Stable: Target{"v1", 90}, Candidate: &Target{"v2", 10}}
	s50 := Split{Stable: Target{"v1", 50}, Candidate: &Target{"v2", 50}}
	onCandidate := 0
	for i := range 1000 {
		key := "user-" + string(rune('a'+i%26)) + strings.Repeat("x", i%7) + string(rune(i))
		b := ComputeStickyBucket(s10, key)
		if b != ComputeStickyBucket(s10, key) || b < 0 || b >= 100 {
			t.Fatalf("bucket not deterministic or out of range: %d", b)
		}
		r10, _ := DecideRole(s10, b)
		r50, _ := DecideRole(s50, ComputeStickyBucket(s50, key))
		if r10 == Candidate {
			onCandidate++
			if r50 != Candidate {
				t.Fatalf("key %q left the candidate when its weight grew", key)
			}
		}
	}
	if onCandidate < 50 || onCandidate > 160 { // 10% of 1000, far outside 5 sigma (9.5) is a broken hash
		t.Fatalf("%d of 1000 keys on a 10%% candidate", onCandidate)
	}
}

func TestIsMirroredOnlyStable(t *testing.T) {
	sp := Split{Stable: Target{"v1", 100}, Mirror: &Mirror{"v2", 30}}
	if !IsMirrored(sp, Stable, 29) || IsMirrored(sp, Stable, 30) || IsMirrored(sp, Candidate, 0) {
		t.Fatal("mirror selection wrong")
	}
	same := Split{Stable: Target{"v1", 100}, Mirror: &Mirror{"v1", 100}}
	if IsMirrored(same, Stable, 0) {
		t.Fatal("mirroring stable onto itself compares nothing")
	}
}
