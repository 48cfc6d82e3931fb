package feedback

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzFeedbackBody sends any body to POST /feedback against a memory holding a one-instance
// and a three-instance answer: the answer is always one of the contract's codes with an
// {"error"} message (or the 200 shape), every refusal is counted, a 200 counts exactly the
// instances of the answer it names, and a body ParseBody accepts round-trips through JSON.
func FuzzFeedbackBody(f *testing.F) {
	for _, seed := range []string{
		`{"requestId": "one", "label": "yes"}`,
		`{"requestId": "three", "labels": ["yes", "no", "up"]}`,
		`{"requestId": "three", "labels": ["yes", null, 3]}`,
		`{"requestId": "one", "label": "yes", "label": "no"}`,
		`{"requestId": "one", "label": "\u0079es"}`,
		`{"requestId": 1e400, "label": {}}`,
		`{"requestId": "one", "labels": [], "x": 1} trailing`,
		`[]`, `null`, `"one"`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, _ := newMemory(10, time.Hour)
		m.Remember("one", "v1", answerHeader("clean", "yes"))
		m.Remember("three", "v2", answerHeader("young", "yes,no,up"))
		rec := newRecorder()
		h := NewHandler(m, 1e9, 1e6, rec)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/feedback", strings.NewReader(string(body))))
		refused := 0
		for _, n := range rec.rejected {
			refused += n
		}
		switch w.Code {
		case 200:
			var a Answer
			if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil || refused != 0 {
				t.Fatalf("200 %q (%v), refusals %v", w.Body, err, rec.rejected)
			}
			want := map[string]int{"one": 1, "three": 3}[a.RequestID]
			if want == 0 || a.Correct+a.Incorrect != want ||
				rec.counted[a.Version+"/"+a.Slice+"/correct"]+rec.counted[a.Version+"/"+a.Slice+"/incorrect"] != want {
				t.Fatalf("200 %+v counted %v", a, rec.counted)
			}
		case 400, 404, 409, 413, 422:
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" || refused != 1 || len(rec.counted) != 0 {
				t.Fatalf("%d %q: refusals %v counted %v", w.Code, w.Body, rec.rejected, rec.counted)
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		fb, err := ParseBody(body)
		if err != nil {
			return
		}
		if !IsValidRequestID(fb.RequestID) || len(fb.Labels) == 0 || (fb.Single && len(fb.Labels) != 1) {
			t.Fatalf("accepted %+v from %q", fb, body)
		}
		field := map[bool]string{true: "label", false: "labels"}[fb.Single]
		var value any = fb.Labels
		if fb.Single {
			value = fb.Labels[0]
		}
		again, _ := json.Marshal(map[string]any{"requestId": fb.RequestID, field: value})
		if fb2, err := ParseBody(again); err != nil || fb2.RequestID != fb.RequestID || strings.Join(fb2.Labels, "\x00") != strings.Join(fb.Labels, "\x00") {
			t.Fatalf("%q parsed as %+v, re-encoded %s parsed as %+v (%v)", body, fb, again, fb2, err)
		}
	})
}
