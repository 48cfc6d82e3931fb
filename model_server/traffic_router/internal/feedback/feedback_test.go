package feedback

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"modelrollout.dev/traffic-router/internal/metrics"
	"modelrollout.dev/traffic-router/internal/settings"
)

const labels = "yes,no,up,down,unknown,silence"

// answerHeader is what a model server sets on a successful answer (contract, section 1).
func answerHeader(slice, preds string) http.Header {
	h := http.Header{}
	if slice != "" {
		h.Set("X-Slice", slice)
	}
	h.Set("X-Predictions", preds)
	h.Set("X-Model-Labels", labels)
	return h
}

// fakeClock lets a test move a Memory's time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Duration
}

func (c *fakeClock) read() time.Duration { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	c.mu.Unlock()
}

func newMemory(maxIDs int, maxAge time.Duration) (*Memory, *fakeClock) {
	m := NewMemory(maxIDs, maxAge)
	c := &fakeClock{}
	m.clock = c.read
	return m, c
}

type recorder struct {
	mu       sync.Mutex
	counted  map[string]int // version/slice/result -> instances
	rejected map[string]int
}

func newRecorder() *recorder { return &recorder{counted: map[string]int{}, rejected: map[string]int{}} }

func (r *recorder) FeedbackCounted(version, slice string, correct, incorrect int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counted[version+"/"+slice+"/correct"] += correct
	r.counted[version+"/"+slice+"/incorrect"] += incorrect
}

func (r *recorder) FeedbackRejected(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejected[reason]++
}

func send(h http.Handler, method, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, "/feedback", strings.NewReader(body)))
	return w
}

// expect checks the status and that the error message contains each of want.
func expect(t *testing.T, w *httptest.ResponseRecorder, code int, want ...string) {
	t.Helper()
	if w.Code != code {
		t.Fatalf("status %d, want %d: %s", w.Code, code, w.Body)
	}
	if code == 200 {
		return
	}
	var e struct{ Error string }
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not {\"error\": \"...\"}", w.Body)
	}
	for _, s := range want {
		if !strings.Contains(e.Error, s) {
			t.Fatalf("error %q does not contain %q", e.Error, s)
		}
	}
}

func TestFeedbackCountsCorrectAndIncorrectPerVersionAndSlice(t *testing.T) {
	m, _ := newMemory(100, time.Minute)
	rec := newRecorder()
	h := NewHandler(m, 1000, 1000, rec)
	if !m.Remember("a1", "v1", answerHeader("young", "yes")) || !m.Remember("a2", "v2", answerHeader("", "up,down,no")) {
		t.Fatal("answers not remembered")
	}
	w := send(h, "POST", `{"requestId": "a1", "label": "yes"}`)
	expect(t, w, 200)
	var got Answer
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got != (Answer{RequestID: "a1", Version: "v1", Slice: "young", Correct: 1}) {
		t.Fatalf("answer %+v", got)
	}
	w = send(h, "POST", `{"requestId": "a2", "labels": ["up", "up", "no"]}`)
	expect(t, w, 200)
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got != (Answer{RequestID: "a2", Version: "v2", Slice: SliceNone, Correct: 2, Incorrect: 1}) {
		t.Fatalf("answer %+v", got)
	}
	want := map[string]int{"v1/young/correct": 1, "v1/young/incorrect": 0, "v2/none/correct": 2, "v2/none/incorrect": 1}
	if fmt.Sprint(rec.counted) != fmt.Sprint(want) || len(rec.rejected) != 0 {
		t.Fatalf("counted %v rejected %v", rec.counted, rec.rejected)
	}
}

func TestEveryRefusalHasItsCodeReasonAndMessage(t *testing.T) {
	m, clock := newMemory(100, time.Minute)
	rec := newRecorder()
	h := NewHandler(m, 1000, 1000, rec)
	m.Remember("one", "v1", answerHeader("clean", "yes"))
	m.Remember("three", "v1", answerHeader("clean", "yes,no,up"))
	m.Remember("old", "v1", answerHeader("clean", "no"))
	cases := []struct {
		name, method, body string
		code               int
		reason             string
		want               []string
	}{
		{"unknown id", "POST", `{"requestId": "nope", "label": "yes"}`, 404, UnknownID, []string{`"nope"`, "no answer with this id", "--feedback-max-ids=100"}},
		{"label not in the set", "POST", `{"requestId": "one", "label": "maybe"}`, 422, BadLabel, []string{`label: "maybe" is not a label of version v1`, "yes, no, up, down, unknown, silence"}},
		{"a label of several", "POST", `{"requestId": "three", "labels": ["yes", "Yes", "no"]}`, 422, BadLabel, []string{`labels[1]: "Yes"`}},
		{"too few labels", "POST", `{"requestId": "three", "labels": ["yes", "no"]}`, 400, Malformed, []string{"labels: expected 3 labels", "got 2"}},
		{"too many labels", "POST", `{"requestId": "one", "labels": ["yes", "no"]}`, 400, Malformed, []string{"labels: expected 1 labels", "got 2"}},
		{"label for a batch", "POST", `{"requestId": "three", "label": "yes"}`, 400, Malformed, []string{"had 3 instances", `"labels"`}},
		{"not JSON", "POST", `{"requestId": "one", "label": "yes"`, 400, Malformed, []string{"not valid JSON"}},
		{"not an object", "POST", `["one", "yes"]`, 400, Malformed, []string{"body: not a JSON object"}},
		{"empty body", "POST", ``, 400, Malformed, []string{"body: not a JSON object"}},
		{"id of the wrong type", "POST", `{"requestId": 17, "label": "yes"}`, 400, Malformed, []string{"requestId: expected a string, got number"}},
		{"label of the wrong type", "POST", `{"requestId": "one", "label": ["yes"]}`, 400, Malformed, []string{"label: expected a string, got array"}},
		{"labels of the wrong type", "POST", `{"requestId": "three", "labels": "yes,no,up"}`, 400, Malformed, []string{"labels: expected an array of strings, got string"}},
		{"a label number", "POST", `{"requestId": "three", "labels": ["yes", 2, "up"]}`, 400, Malformed, []string{"labels: expected an array of strings, got number"}},
		{"a null label", "POST", `{"requestId": "three", "labels": ["yes", null, "up"]}`, 400, Malformed, []string{"labels[1]: expected a string, got null"}},
		{"null id", "POST", `{"requestId": null, "label": "yes"}`, 400, Malformed, []string{"requestId: expected a string, got null"}},
		{"unknown field", "POST", `{"requestId": "one", "label": "yes", "user": "x"}`, 400, Malformed, []string{`"user": unknown field`}},
		{"field twice", "POST", `{"requestId": "one", "requestId": "three", "label": "yes"}`, 400, Malformed, []string{`"requestId": given twice`}},
		{"both label and labels", "POST", `{"requestId": "one", "label": "yes", "labels": ["yes"]}`, 400, Malformed, []string{"expected exactly one of them"}},
		{"neither", "POST", `{"requestId": "one"}`, 400, Malformed, []string{"expected exactly one of them"}},
		{"empty labels", "POST", `{"requestId": "one", "labels": []}`, 400, Malformed, []string{"labels: empty"}},
		{"no id", "POST", `{"label": "yes"}`, 400, Malformed, []string{"requestId: missing"}},
		{"bad id", "POST", `{"requestId": "a b", "label": "yes"}`, 400, Malformed, []string{"requestId: expected 1 to 128 characters", `"a b"`}},
		{"trailing data", "POST", `{"requestId": "one", "label": "yes"} {}`, 400, Malformed, []string{"data after the JSON object"}},
		{"too large", "POST", `{"requestId": "one", "label": "` + strings.Repeat("y", MaxBodyBytes) + `"}`, 413, TooLarge, []string{"larger than 8192 bytes"}},
		{"GET", "GET", ``, 405, Malformed, []string{"method GET", "POST"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := rec.rejected[c.reason]
			expect(t, send(h, c.method, c.body), c.code, c.want...)
			if rec.rejected[c.reason] != before+1 {
				t.Fatalf("reason %s not counted: %v", c.reason, rec.rejected)
			}
		})
	}
	if len(rec.counted) != 0 {
		t.Fatalf("refused feedback was counted: %v", rec.counted)
	}
	// None of the refusals used up an answer: each can still be given feedback once.
	expect(t, send(h, "POST", `{"requestId": "one", "label": "no"}`), 200)
	expect(t, send(h, "POST", `{"requestId": "three", "labels": ["yes", "no", "up"]}`), 200)
	expect(t, send(h, "POST", `{"requestId": "one", "label": "yes"}`), 409, "already given", "each answer counts once")
	if rec.rejected[Duplicate] != 1 {
		t.Fatalf("duplicate not counted: %v", rec.rejected)
	}
	clock.advance(time.Minute + time.Nanosecond)
	expect(t, send(h, "POST", `{"requestId": "old", "label": "no"}`), 404, "older than the router keeps", "--feedback-max-age=1m0s")
}

func TestTooLargeIsRefusedOnContentLengthBeforeReading(t *testing.T) {
	m, _ := newMemory(10, time.Minute)
	rec := newRecorder()
	h := NewHandler(m, 1000, 1000, rec)
	req := httptest.NewRequest("POST", "/feedback", strings.NewReader(`{}`))
	req.ContentLength = MaxBodyBytes + 1
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	expect(t, w, 413, "larger than 8192 bytes")
	// exactly at the bound is read (and here refused for what it says, not for its size)
	body := `{"requestId": "x", "label": "` + strings.Repeat("y", MaxBodyBytes-31) + `"}`
	if len(body) != MaxBodyBytes {
		t.Fatalf("body of %d bytes", len(body))
	}
	expect(t, send(h, "POST", body), 404)
}

func TestAFloodIsCutAtTheBucketAndRefusedBeforeItsBodyIsRead(t *testing.T) {
	m, _ := newMemory(10_000, time.Minute)
	rec := newRecorder()
	h := NewHandler(m, 0.001, 50, rec) // 50 at once, then (practically) none
	for i := range 60 {
		m.Remember(fmt.Sprintf("id-%d", i), "v1", answerHeader("clean", "yes"))
	}
	codes := map[int]int{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := send(h, "POST", fmt.Sprintf(`{"requestId": "id-%d", "label": "yes"}`, i))
			mu.Lock()
			codes[w.Code]++
			mu.Unlock()
			if w.Code == 429 && (w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), "--feedback-rate=0.001")) {
				t.Errorf("429 answer %v %s", w.Header(), w.Body)
			}
		}()
	}
	wg.Wait()
	if codes[200] != 50 || codes[429] != 10 || rec.rejected[RateLimited] != 10 || rec.counted["v1/clean/correct"] != 50 {
		t.Fatalf("codes %v rejected %v counted %v", codes, rec.rejected, rec.counted)
	}
	// a refused feedback costs no parsing: even a malformed one is a 429, not a 400
	expect(t, send(h, "POST", `not json`), 429, "rate limit")
}

func TestConcurrentFeedbackForOneAnswerCountsOnce(t *testing.T) {
	m, _ := newMemory(10, time.Minute)
	rec := newRecorder()
	h := NewHandler(m, 1e6, 1000, rec)
	m.Remember("once", "v2", answerHeader("noisy", "no"))
	codes := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := send(h, "POST", `{"requestId": "once", "label": "no"}`).Code
			mu.Lock()
			codes[c]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[200] != 1 || codes[409] != 31 || rec.counted["v2/noisy/correct"] != 1 {
		t.Fatalf("codes %v counted %v", codes, rec.counted)
	}
}

func TestMemoryKeepsTheNewestWithinItsCount(t *testing.T) {
	for _, maxIDs := range []int{1, 5, 2048, 5000} {
		m, _ := newMemory(maxIDs, time.Hour)
		total := maxIDs*3 + 7
		for i := range total {
			if !m.Remember(fmt.Sprintf("r%d", i), "v1", answerHeader("clean", "yes")) {
				t.Fatal("not remembered")
			}
			if m.Len() > maxIDs {
				t.Fatalf("max %d: %d remembered after %d answers", maxIDs, m.Len(), i+1)
			}
		}
		if len(m.shards) == 1 { // one shard: exactly the newest maxIDs are kept, oldest went first
			for i := range total {
				_, err := m.Settle(fmt.Sprintf("r%d", i), []string{"yes"}, true)
				if kept := i >= total-maxIDs; kept != (err == nil) {
					t.Fatalf("max %d: answer %d of %d: %v", maxIDs, i, total, err)
				}
			}
			continue
		}
		// several shards: each keeps its share, and the newest answer is always there
		if n := m.Len(); n < maxIDs*9/10 {
			t.Fatalf("max %d: only %d kept", maxIDs, n)
		}
		if _, err := m.Settle(fmt.Sprintf("r%d", total-1), []string{"yes"}, true); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExpiredAnswersAreDroppedAsNewOnesArrive(t *testing.T) {
	m, clock := newMemory(100, time.Minute)
	for i := range 50 {
		m.Remember(fmt.Sprintf("early%d", i), "v1", answerHeader("clean", "yes"))
	}
	clock.advance(2 * time.Minute)
	m.Remember("late", "v1", answerHeader("clean", "yes"))
	if m.Len() != 1 {
		t.Fatalf("%d remembered: expired answers were not dropped", m.Len())
	}
	if _, err := m.Settle("early3", []string{"yes"}, true); err == nil {
		t.Fatal("an expired answer took feedback")
	}
}

func TestAnIDRememberedAgainNamesTheNewerAnswer(t *testing.T) {
	m, _ := newMemory(3, time.Hour)
	m.Remember("same", "v1", answerHeader("clean", "yes"))
	m.Remember("same", "v2", answerHeader("young", "no"))
	got, err := m.Settle("same", []string{"no"}, true)
	if err != nil || got != (Settlement{Version: "v2", Slice: "young", Correct: 1}) {
		t.Fatalf("%+v %v", got, err)
	}
	// the first answer's slot is a tombstone: pushing it out must not forget the newer one
	m.Remember("x", "v1", answerHeader("clean", "yes"))
	m.Remember("y", "v1", answerHeader("clean", "yes"))
	if _, err := m.Settle("same", []string{"no"}, true); !errorIs[DuplicateError](err) {
		t.Fatalf("the newer answer was forgotten: %v", err)
	}
}

func errorIs[T error](err error) bool { _, ok := err.(T); return ok }

func TestAnswersThatCannotBeCheckedAreNotRemembered(t *testing.T) {
	m, _ := newMemory(100, time.Hour)
	noLabels := http.Header{"X-Predictions": {"yes"}}
	noPreds := http.Header{"X-Model-Labels": {labels}}
	cases := map[string]http.Header{
		"no labels header":        noLabels,
		"no predictions header":   noPreds,
		"prediction not in set":   answerHeader("clean", "maybe"),
		"empty predictions":       answerHeader("clean", ""),
		"too many predictions":    answerHeader("clean", strings.TrimSuffix(strings.Repeat("yes,", MaxInstances+1), ",")),
		"label set with a repeat": {"X-Predictions": {"yes"}, "X-Model-Labels": {"yes,no,yes"}},
		"label set too long":      {"X-Predictions": {"yes"}, "X-Model-Labels": {"yes," + strings.Repeat("n", MaxLabelsHeader)}},
	}
	for name, h := range cases {
		if m.Remember("id-"+name, "v1", h) {
			t.Errorf("%s: remembered", name)
		}
	}
	if m.Remember("full", "v1", answerHeader("clean", strings.TrimSuffix(strings.Repeat("no,", MaxInstances), ","))) != true {
		t.Fatal("an answer of MaxInstances predictions was not remembered")
	}
}

func TestSlicesAreBoundedNamesFromTheAnswer(t *testing.T) {
	m, _ := newMemory(1000, time.Hour)
	for name, want := range map[string]string{"young": "young", "": SliceNone, "Young": SliceOther,
		"a b": SliceOther, strings.Repeat("s", 33): SliceOther, "other_mic": "other_mic", "-x": SliceOther} {
		m.Remember("s-"+name, "v1", answerHeader(name, "yes"))
		if got, _ := m.Settle("s-"+name, []string{"yes"}, true); got.Slice != want {
			t.Errorf("x-slice %q: slice %q, want %q", name, got.Slice, want)
		}
	}
	for i := range maxSlices + 10 {
		m.Remember(fmt.Sprintf("n%d", i), "v1", answerHeader(fmt.Sprintf("s%d", i), "yes"))
	}
	m.Remember("late", "v1", answerHeader("brand-new", "yes"))
	if got, _ := m.Settle("late", []string{"yes"}, true); got.Slice != SliceOther {
		t.Fatalf("slice names are not bounded: got %q after %d names", got.Slice, maxSlices+10)
	}
}

func TestAnAnswerKeepsItsLabelSetAfterTheVersionIsForgotten(t *testing.T) {
	m, _ := newMemory(1000, time.Hour)
	m.Remember("rolled-back", "v9", http.Header{"X-Predictions": {"b"}, "X-Model-Labels": {"a,b"}})
	for i := range MaxVersions + 2 { // newer versions push v9's label set out
		m.Remember(fmt.Sprintf("v%d-answer", i), fmt.Sprintf("w%d", i), answerHeader("clean", "yes"))
	}
	if _, ok := (*m.sets.Load())["v9"]; ok || len(*m.sets.Load()) != MaxVersions {
		t.Fatalf("label sets kept: %v", m.setOrder)
	}
	got, err := m.Settle("rolled-back", []string{"a"}, true)
	if err != nil || got != (Settlement{Version: "v9", Slice: SliceNone, Incorrect: 1}) {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestRequestIDs(t *testing.T) {
	made := map[string]bool{}
	for range 1000 {
		id, err := RequestIDOf(http.Header{})
		if err != nil || len(id) != 32 || !IsValidRequestID(id) || made[id] || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("made id %q (%v)", id, err)
		}
		made[id] = true
	}
	ok := []string{"a", "req-1.2:3_X", strings.Repeat("z", 128)}
	for _, id := range ok {
		if got, err := RequestIDOf(http.Header{"X-Request-Id": {id}}); err != nil || got != id {
			t.Errorf("%q: %q %v", id, got, err)
		}
	}
	for _, id := range []string{"", "a b", "ä", strings.Repeat("z", 129), "a/b", "a,b"} {
		_, err := RequestIDOf(http.Header{"X-Request-Id": {id}})
		if err == nil || !strings.Contains(err.Error(), "header x-request-id: expected 1 to 128 characters") {
			t.Errorf("%q: %v", id, err)
		}
	}
	if _, err := RequestIDOf(http.Header{"X-Request-Id": {"a", "b"}}); err == nil || !strings.Contains(err.Error(), "sent 2 times") {
		t.Errorf("two ids: %v", err)
	}
	// named hop-by-hop by the client: not its id, so the router makes one
	id, err := RequestIDOf(http.Header{"X-Request-Id": {"mine"}, "Connection": {"x-request-id"}})
	if err != nil || id == "mine" || len(id) != 32 {
		t.Errorf("hop-by-hop id: %q %v", id, err)
	}
}

func TestTheBoundsAreTheOnesTheSettingsAndMetricsUse(t *testing.T) {
	if EntryBytes != settings.FeedbackEntryBytes {
		t.Fatalf("feedback.EntryBytes %d, settings.FeedbackEntryBytes %d", EntryBytes, settings.FeedbackEntryBytes)
	}
	mine := []string{Malformed, UnknownID, Duplicate, BadLabel, TooLarge, RateLimited}
	if !slices.Equal(mine, metrics.FeedbackReasons) {
		t.Fatalf("reasons %v, metrics export %v", mine, metrics.FeedbackReasons)
	}
}

// The worst case per answer that MemoryBound counts: the longest id a client may send and the
// most predictions an answer may have, measured on the heap of a full memory.
func TestAFullMemoryHoldsAtMostEntryBytesPerAnswer(t *testing.T) {
	const n = 20_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m, _ := newMemory(n, time.Hour)
	preds := strings.TrimSuffix(strings.Repeat("silence,", MaxInstances), ",")
	for i := range 3 * n { // three rounds, so every slot has been pushed out and reused
		id := fmt.Sprintf("%0128d", i)
		h := http.Header{"X-Predictions": {strings.Clone(preds)}, "X-Model-Labels": {labels}, "X-Slice": {"young"}}
		if !m.Remember(id, "v1", h) {
			t.Fatal("not remembered")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per remembered answer (bound %d)", per, EntryBytes)
	if per > EntryBytes {
		t.Fatalf("%.0f bytes per remembered answer, more than EntryBytes=%d", per, EntryBytes)
	}
	runtime.KeepAlive(m)
}

// BenchmarkRemember is what the hot path adds per 2xx answer: go test -bench Remember -benchmem
func BenchmarkRemember(b *testing.B) {
	m := NewMemory(100_000, 15*time.Minute)
	h := answerHeader("young", "yes")
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = NewRequestID()
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Remember(ids[i%len(ids)], "v1", h)
			i++
		}
	})
}

func BenchmarkNewRequestID(b *testing.B) {
	for b.Loop() {
		_ = NewRequestID()
	}
}
