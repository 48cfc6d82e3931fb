package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"modelrollout.dev/traffic-router/internal/settings"
	"modelrollout.dev/traffic-router/internal/split"
)

// modelBackend is a model server as the contract has it: it answers 200 with x-slice (from the
// request's), x-predictions, x-model-labels and the request id echoed, and records the ids it got.
func modelBackend(t *testing.T, predicted string, ids chan<- string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if ids != nil {
			ids <- r.Header.Get("X-Request-Id")
		}
		if r.Header.Get("X-Fail") != "" {
			w.Header().Set("X-Predictions", predicted)
			w.Header().Set("X-Model-Labels", "yes,no,unknown")
			w.WriteHeader(500)
			return
		}
		w.Header().Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Slice", r.Header.Get("X-Slice"))
		w.Header().Set("X-Predictions", predicted)
		w.Header().Set("X-Model-Labels", "yes,no,unknown")
		io.WriteString(w, `{"predictions":[{"label":"`+predicted+`","confidence":0.9}]}`)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func infer(r *Router, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/v1/models/m:predict", strings.NewReader(`{"instances":[{}]}`))
	for k, vv := range header {
		req.Header[k] = vv
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

func feedbackFor(r *Router, body string) (int, map[string]any) {
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest("POST", "/feedback", strings.NewReader(body)))
	var out map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	return w.Code, out
}

func TestEveryAnswerCarriesARequestIDTheBackendGotToo(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	ids := make(chan string, 4)
	r.SetEndpoints("v1", ready(modelBackend(t, "yes", ids)))
	w := infer(r, nil)
	made := w.Header().Values("X-Request-Id")
	if w.Code != 200 || len(made) != 1 || len(made[0]) != 32 || <-ids != made[0] {
		t.Fatalf("code %d, ids on the answer %v", w.Code, made)
	}
	w = infer(r, http.Header{"X-Request-Id": {"client-7:a.b_c"}})
	if got := w.Header().Values("X-Request-Id"); len(got) != 1 || got[0] != "client-7:a.b_c" || <-ids != "client-7:a.b_c" {
		t.Fatalf("client id: answer %v", got)
	}
	w = infer(r, http.Header{"X-Request-Id": {"has space"}})
	if w.Code != 400 || !strings.Contains(w.Body.String(), "header x-request-id: expected 1 to 128 characters") ||
		len(ids) != 0 {
		t.Fatalf("bad id: %d %s (backend reached: %d)", w.Code, w.Body, len(ids))
	}
	// the router's own answers carry it too: no endpoint for the version -> 503
	r.SetEndpoints("v1", ready())
	w = infer(r, http.Header{"X-Request-Id": {"r-503"}})
	if w.Code != 503 || w.Header().Get("X-Request-Id") != "r-503" {
		t.Fatalf("503 answer: %d %v", w.Code, w.Header())
	}
}

func TestFeedbackIsCountedForTheVersionAndSliceThatAnswered(t *testing.T) {
	r, m := newTestRouter(t, nil)
	r.SetSplit(split.Split{Stable: split.Target{Version: "v1", Weight: 50},
		Candidate: &split.Target{Version: "v2", Weight: 50}, StickyHeader: "X-User"})
	r.SetEndpoints("v1", ready(modelBackend(t, "yes", nil)))
	r.SetEndpoints("v2", ready(modelBackend(t, "no", nil)))
	byVersion := map[string]string{}
	for i := 0; len(byVersion) < 2 && i < 200; i++ {
		w := infer(r, http.Header{"X-Slice": {"young"}, "X-User": {string(rune('a'+i%26)) + "-user"}})
		byVersion[w.Header().Get("X-Model-Version")] = w.Header().Get("X-Request-Id")
	}
	if byVersion["v1"] == "" || byVersion["v2"] == "" {
		t.Fatalf("answers by version: %v", byVersion)
	}
	// The candidate is rolled back: its answers still take feedback, counted for v2.
	r.SetSplit(split.SafeDefault("v1", ""))
	code, out := feedbackFor(r, `{"requestId": "`+byVersion["v2"]+`", "label": "yes"}`)
	if code != 200 || out["version"] != "v2" || out["slice"] != "young" || out["correct"] != 0.0 || out["incorrect"] != 1.0 {
		t.Fatalf("v2 feedback: %d %v", code, out)
	}
	code, out = feedbackFor(r, `{"requestId": "`+byVersion["v1"]+`", "label": "yes"}`)
	if code != 200 || out["version"] != "v1" || out["correct"] != 1.0 {
		t.Fatalf("v1 feedback: %d %v", code, out)
	}
	if got := testutil.ToFloat64(m.Feedback.WithLabelValues("speech", "v2", "young", "incorrect")); got != 1 {
		t.Fatalf("router_feedback_total v2 incorrect = %v", got)
	}
	if got := testutil.ToFloat64(m.Feedback.WithLabelValues("speech", "v1", "young", "correct")); got != 1 {
		t.Fatalf("router_feedback_total v1 correct = %v", got)
	}
	code, _ = feedbackFor(r, `{"requestId": "`+byVersion["v1"]+`", "label": "no"}`)
	if code != 409 || testutil.ToFloat64(m.FbRejected.WithLabelValues("speech", "duplicate")) != 1 {
		t.Fatalf("second feedback: %d", code)
	}
}

func TestOnlySuccessfulUserAnswersAreRemembered(t *testing.T) {
	r, m := newTestRouter(t, nil)
	shadowGot := make(chan string, 1)
	r.SetSplit(split.Split{Stable: split.Target{Version: "v1", Weight: 100}, Mirror: &split.Mirror{Version: "v2", Percent: 100}})
	r.SetEndpoints("v1", ready(modelBackend(t, "yes", nil)))
	r.SetEndpoints("v2", ready(modelBackend(t, "no", shadowGot)))
	w := infer(r, http.Header{"X-Request-Id": {"mirrored"}})
	if w.Code != 200 || <-shadowGot != "mirrored" {
		t.Fatalf("code %d", w.Code)
	}
	waitFor(t, "the shadow comparison", func() bool {
		return testutil.ToFloat64(m.Comparisons.WithLabelValues("speech", "v1", "v2", "disagree")) == 1
	})
	if n := r.answers.Len(); n != 1 {
		t.Fatalf("%d answers remembered for one user request (the shadow's must not be)", n)
	}
	code, out := feedbackFor(r, `{"requestId": "mirrored", "label": "no"}`)
	if code != 200 || out["version"] != "v1" || out["incorrect"] != 1.0 {
		t.Fatalf("feedback: %d %v", code, out)
	}
	w = infer(r, http.Header{"X-Request-Id": {"failed"}, "X-Fail": {"1"}})
	if w.Code != 500 || w.Header().Get("X-Request-Id") != "failed" {
		t.Fatalf("failed answer: %d %v", w.Code, w.Header())
	}
	if code, _ := feedbackFor(r, `{"requestId": "failed", "label": "no"}`); code != 404 {
		t.Fatalf("feedback for a 500 answer: %d", code)
	}
}

func TestTheMemoryBoundsComeFromTheSettings(t *testing.T) {
	r, m := newTestRouter(t, func(s *settings.Settings) { s.FeedbackMaxIDs, s.FeedbackBurst = 3, 2 })
	r.SetEndpoints("v1", ready(modelBackend(t, "yes", nil)))
	for _, id := range []string{"a", "b", "c", "d"} {
		infer(r, http.Header{"X-Request-Id": {id}})
	}
	if code, out := feedbackFor(r, `{"requestId": "a", "label": "yes"}`); code != 404 ||
		!strings.Contains(out["error"].(string), "--feedback-max-ids=3") {
		t.Fatalf("the oldest answer of 4 with --feedback-max-ids=3: %d %v", code, out)
	}
	if code, _ := feedbackFor(r, `{"requestId": "d", "label": "yes"}`); code != 200 {
		t.Fatalf("the newest answer: %d", code)
	}
	if code, _ := feedbackFor(r, `{"requestId": "c", "label": "yes"}`); code != 429 {
		t.Fatalf("third feedback with --feedback-burst=2: %d", code)
	}
	if testutil.ToFloat64(m.FbRejected.WithLabelValues("speech", "rate_limited")) != 1 ||
		testutil.ToFloat64(m.FbRejected.WithLabelValues("speech", "unknown_id")) != 1 {
		t.Fatal("rejections not counted")
	}
}

// An answer without x-predictions/x-model-labels (an older server, a metadata request) still
// gets its id but is not remembered: there is nothing to check feedback against.
func TestAnswersWithoutPredictionsAreNotRemembered(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	w := infer(r, nil)
	if w.Code != 200 || w.Header().Get("X-Request-Id") == "" || r.answers.Len() != 0 {
		t.Fatalf("code %d id %q remembered %d", w.Code, w.Header().Get("X-Request-Id"), r.answers.Len())
	}
}
