package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/metrics"
	"modelrollout.dev/traffic-router/internal/settings"
	"modelrollout.dev/traffic-router/internal/split"
)

func newTestRouter(t testing.TB, mut func(*settings.Settings)) (*Router, *metrics.Metrics) {
	t.Helper()
	cfg, err := settings.Parse([]string{"--rollout=speech"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if mut != nil {
		mut(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := metrics.New(cfg.Rollout)
	r := New(ctx, cfg, m, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	r.SetSplit(split.SafeDefault("v1", ""))
	return r, m
}

func ready(addrs ...string) backend.Addrs { return backend.Addrs{Ready: addrs} }

func backendAnswering(t *testing.T, code int, hits *atomic.Int64) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(code)
		io.WriteString(w, `{"error":"bad audio"}`)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func post(r *Router, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest("POST", "/v1/models/m:predict", strings.NewReader(body)))
	return w
}

func TestModel4xxIsPassedThroughNotRetried(t *testing.T) {
	r, m := newTestRouter(t, nil)
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 400, &hits), backendAnswering(t, 400, &hits)))
	w := post(r, `{}`)
	if w.Code != 400 || hits.Load() != 1 || !strings.Contains(w.Body.String(), "bad audio") {
		t.Fatalf("code %d hits %d body %s", w.Code, hits.Load(), w.Body)
	}
	if w.Header().Get("X-Model-Version") != "v1" || w.Header().Get("X-Modelrollout-Role") != "stable" {
		t.Fatalf("headers %v", w.Header())
	}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues("speech", "v1", "stable", "client_error")); got != 1 {
		t.Fatalf("client_error count %v", got)
	}
}

func TestConnectFailureRetriedOnceOnAnotherEndpoint(t *testing.T) {
	r, m := newTestRouter(t, nil)
	var hits atomic.Int64
	dead := deadAddr(t)
	r.SetEndpoints("v1", ready(dead, backendAnswering(t, 200, &hits)))
	for range 4 {
		if w := post(r, `{}`); w.Code != 200 {
			t.Fatalf("code %d body %s", w.Code, w.Body)
		}
	}
	if hits.Load() != 4 {
		t.Fatalf("hits %d", hits.Load())
	}
	// The dead endpoint is tried at most once, then ejected.
	if got := testutil.ToFloat64(m.Retries.WithLabelValues("speech", "v1")); got != 1 {
		t.Fatalf("retries %v, want exactly 1 (ejected after the first failure)", got)
	}
}

func TestAllEndpointsDeadIs502Unavailable(t *testing.T) {
	r, m := newTestRouter(t, nil)
	r.SetEndpoints("v1", ready(deadAddr(t)))
	w := post(r, `{}`)
	if w.Code != 502 || !strings.Contains(w.Body.String(), "could not reach version v1 (Service speech-v1)") {
		t.Fatalf("code %d body %s", w.Code, w.Body)
	}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues("speech", "v1", "stable", "unavailable")); got != 1 {
		t.Fatalf("unavailable %v", got)
	}
	r.SetEndpoints("v1", backend.Addrs{})
	if w := post(r, `{}`); w.Code != 503 || !strings.Contains(w.Body.String(), "no ready endpoints for version v1") {
		t.Fatalf("code %d body %s", w.Code, w.Body)
	}
}

func TestLimits(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
	}))
	t.Cleanup(slow.Close)
	r, m := newTestRouter(t, func(s *settings.Settings) {
		s.MaxRequestBytes, s.RequestTimeout = 10, 50*time.Millisecond
	})
	r.SetEndpoints("v1", ready(strings.TrimPrefix(slow.URL, "http://")))
	if w := post(r, strings.Repeat("x", 11)); w.Code != 413 || !strings.Contains(w.Body.String(), "--max-request-bytes=10") {
		t.Fatalf("code %d body %s", w.Code, w.Body)
	}
	if w := post(r, "x"); w.Code != 504 || !strings.Contains(w.Body.String(), "--request-timeout") {
		t.Fatalf("code %d body %s", w.Code, w.Body)
	}
	if testutil.ToFloat64(m.Rejected.WithLabelValues("speech", "too_large")) != 1 ||
		testutil.ToFloat64(m.Rejected.WithLabelValues("speech", "timeout")) != 1 {
		t.Fatal("rejections not counted")
	}
}

func TestOverloadedIs503(t *testing.T) {
	r, m := newTestRouter(t, func(s *settings.Settings) { s.MaxConcurrency = 1 })
	r.slots <- struct{}{} // one request in flight
	w := post(r, `{}`)
	if w.Code != 503 || !strings.Contains(w.Body.String(), "--max-concurrency=1") {
		t.Fatalf("code %d body %s", w.Code, w.Body)
	}
	if testutil.ToFloat64(m.Rejected.WithLabelValues("speech", "overloaded")) != 1 {
		t.Fatal("overload not counted")
	}
}

func TestReadiness(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	if ok, why := r.IsReady(); ok || !strings.Contains(why, "stable version v1") {
		t.Fatalf("ready without endpoints: %v %s", ok, why)
	}
	r.SetEndpoints("v1", ready("127.0.0.1:1"))
	if ok, _ := r.IsReady(); !ok {
		t.Fatal("not ready with split and endpoint")
	}
	r.Drain()
	if ok, _ := r.IsReady(); ok {
		t.Fatal("ready while draining")
	}
}

// logRecords swaps the router's logger for one that keeps its JSON lines.
func logRecords(r *Router) func() []map[string]any {
	var buf bytes.Buffer
	r.log = slog.New(slog.NewJSONHandler(&buf, nil))
	return func() []map[string]any {
		var out []map[string]any
		for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil {
				out = append(out, rec)
			}
		}
		return out
	}
}

func countMsg(recs []map[string]any, prefix string) int {
	n := 0
	for _, rec := range recs {
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, prefix) && rec["version"] == "v1" {
			n++
		}
	}
	return n
}

func TestPanicRoutingServesNotReadyUntilOneIsReady(t *testing.T) {
	r, m := newTestRouter(t, nil)
	logs := logRecords(r)
	gauge := func() float64 { return testutil.ToFloat64(m.PanicRouting.WithLabelValues("speech", "v1")) }
	var slow, fresh atomic.Int64
	slowAddr := backendAnswering(t, 200, &slow)
	r.SetEndpoints("v1", backend.Addrs{NotServing: []string{slowAddr}})
	for range 3 {
		if w := post(r, `{}`); w.Code != 200 {
			t.Fatalf("panic mode: code %d body %s", w.Code, w.Body)
		}
	}
	if slow.Load() != 3 || gauge() != 1 {
		t.Fatalf("hits %d gauge %v", slow.Load(), gauge())
	}
	if ok, why := r.IsReady(); !ok || !strings.Contains(why, "panic routing") {
		t.Fatalf("readiness in panic mode: %v %s", ok, why)
	}
	r.SetEndpoints("v1", backend.Addrs{NotServing: []string{slowAddr}}) // same again: no second log line
	r.SetEndpoints("v1", backend.Addrs{Ready: []string{backendAnswering(t, 200, &fresh)}, NotServing: []string{slowAddr}})
	for range 4 {
		post(r, `{}`)
	}
	if fresh.Load() != 4 || slow.Load() != 3 || gauge() != 0 {
		t.Fatalf("after a ready endpoint appeared: fresh %d slow %d gauge %v", fresh.Load(), slow.Load(), gauge())
	}
	if ok, why := r.IsReady(); !ok || why != "ok" {
		t.Fatalf("readiness after panic: %v %s", ok, why)
	}
	recs := logs()
	if countMsg(recs, "panic routing: no ready endpoints") != 1 || countMsg(recs, "panic routing ended: ready endpoints are back") != 1 {
		t.Fatalf("want one line entering and one leaving panic mode: %v", recs)
	}
}

func TestPanicRoutingToADeadEndpointGivesTheUsual502(t *testing.T) {
	r, m := newTestRouter(t, nil)
	r.SetEndpoints("v1", backend.Addrs{Serving: []string{deadAddr(t)}, NotServing: []string{deadAddr(t)}})
	w := post(r, `{}`)
	if w.Code != 502 || !strings.Contains(w.Body.String(), "could not reach version v1 (Service speech-v1)") {
		t.Fatalf("code %d body %s", w.Code, w.Body)
	}
	if got := testutil.ToFloat64(m.Retries.WithLabelValues("speech", "v1")); got != 1 {
		t.Fatalf("retries %v, want 1 (the second not-ready endpoint)", got)
	}
	logs := logRecords(r)
	r.SetEndpoints("v1", backend.Addrs{})
	if testutil.ToFloat64(m.PanicRouting.WithLabelValues("speech", "v1")) != 0 ||
		countMsg(logs(), "panic routing ended: no endpoints left") != 1 {
		t.Fatalf("leaving panic mode with nothing left: %v", logs())
	}
	if w := post(r, `{}`); w.Code != 503 || !strings.Contains(w.Body.String(), "no ready endpoints for version v1") {
		t.Fatalf("code %d body %s", w.Code, w.Body)
	}
}

func TestPanicRoutingOffKeepsThe503(t *testing.T) {
	r, m := newTestRouter(t, func(s *settings.Settings) { s.PanicRouting = false })
	var hits atomic.Int64
	r.SetEndpoints("v1", backend.Addrs{Serving: []string{backendAnswering(t, 200, &hits)}})
	w := post(r, `{}`)
	if w.Code != 503 || !strings.Contains(w.Body.String(), "no ready endpoints for version v1") ||
		!strings.Contains(w.Body.String(), "--panic-routing=false") || hits.Load() != 0 {
		t.Fatalf("code %d body %s hits %d", w.Code, w.Body, hits.Load())
	}
	if testutil.ToFloat64(m.PanicRouting.WithLabelValues("speech", "v1")) != 0 {
		t.Fatal("gauge must stay 0 with panic routing off")
	}
	if ok, why := r.IsReady(); ok || !strings.Contains(why, "stable version v1") {
		t.Fatalf("ready without ready endpoints and panic routing off: %s", why)
	}
}
