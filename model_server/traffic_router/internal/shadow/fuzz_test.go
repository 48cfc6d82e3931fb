package shadow

import (
	"errors"
	"testing"
)

// FuzzEvaluateAgreement feeds the comparison arbitrary stable and shadow answers (what a
// backend may send back). It must never panic, only report the documented results, and an
// answer compared with itself must agree at clip and segment level with zero deltas.
func FuzzEvaluateAgreement(f *testing.F) {
	v1 := `{"predictions":[{"label":"yes","confidence":0.9,"segments":[{"start_s":0,"end_s":0.5,"label":"yes","confidence":0.9}]}]}`
	v2 := `{"outputs":[{"name":"label","data":["go","no"]},{"name":"confidence","data":[0.7,0.2]},` +
		`{"name":"segments","data":["[{\"start_s\":0,\"end_s\":1,\"label\":\"go\"}]",null]}]}`
	for _, seed := range [][2]string{
		{v1, v1}, {v2, v2}, {v1, v2},
		{v1, `{"predictions":[{"label":"no","confidence":0.1}]}`},
		{`{"predictions":[{"label":"a","segments":[{"start_s":1,"end_s":1,"label":"a"},{"start_s":1,"end_s":1,"label":"b"}]}]}`, `{}`},
		{`{"predictions":[{"label":"a","segments":"not a list"}]}`, `[]`},
		{`{"outputs":[{"name":"label","data":[1]}]}`, `null`},
		{`{"predictions":[]}`, `{"predictions":null}`},
		{`{"predictions":[{"label":"x","confidence":1e308}]}`, `{"predictions":[{"label":"x","confidence":-1e308}]}`},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, stable, cand []byte) {
		c, err := EvaluateAgreement(stable, cand)
		if errors.Is(err, ErrStableUnusable) {
			return
		}
		if c.Result != Agree && c.Result != Disagree && c.Result != Error {
			t.Fatalf("result %q", c.Result)
		}
		for k, n := range c.Segments {
			if n < 0 || !isSegmentResult(k) {
				t.Fatalf("segment count %s=%d", k, n)
			}
		}
		_ = EvaluateFailedShadow(stable)
		self, err := EvaluateAgreement(stable, stable)
		if err != nil || self.Result != Agree {
			t.Fatalf("an answer compared with itself: %s %v", self.Result, err)
		}
		for _, d := range self.Deltas {
			if d != 0 {
				t.Fatalf("self delta %v", d)
			}
		}
		for _, k := range []string{Disagree, Missing, Extra, Error} {
			if self.Segments[k] != 0 {
				t.Fatalf("an answer compared with itself has %d %s segments: %v", self.Segments[k], k, self.Segments)
			}
		}
	})
}

func isSegmentResult(k string) bool {
	for _, r := range SegmentResults {
		if r == k {
			return true
		}
	}
	return false
}
