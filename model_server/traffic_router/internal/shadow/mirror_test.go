package shadow

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/metrics"
)

func newTestMirror(t *testing.T, lim Limits, candidate http.Handler) (*Mirror, *metrics.Metrics) {
	t.Helper()
	srv := httptest.NewServer(candidate)
	t.Cleanup(srv.Close)
	pools := &backend.Registry{}
	pools.Set("v2", backend.Addrs{Ready: []string{strings.TrimPrefix(srv.URL, "http://")}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := metrics.New("speech")
	return New(ctx, lim, pools, http.DefaultTransport, m, slog.New(slog.NewJSONHandler(io.Discard, nil))), m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) { // a bound for a hung test, not an assertion
			t.Fatalf("never happened: %s", what)
		}
	}
}

func TestMirrorMemoryIsBoundedInBytes(t *testing.T) {
	// Before: only --mirror-queue (256) bounded the queue, so 4 MiB bodies to a stalled shadow
	// held 1 GiB. Now 64 MiB holds exactly 16 of them (the one being sent included).
	release, started := make(chan struct{}), make(chan struct{}, 1)
	mr, m := newTestMirror(t, Limits{Queue: 256, MaxBytes: 64 << 20, Workers: 1, Timeout: time.Minute, MaxAnswer: 1 << 20},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			select {
			case started <- struct{}{}:
			default:
			}
			<-release
		}))
	job := func() Job { // Size() is exactly 4 MiB: no method, URI or header bytes
		return Job{Header: http.Header{}, Body: make([]byte, 4<<20), MirrorVersion: "v2", StableVersion: "v1"}
	}
	accepted := 0
	for range 100 {
		if mr.Offer(job()) {
			accepted++
		}
	}
	<-started
	if accepted != 16 || mr.QueuedBytes() != 64<<20 {
		t.Fatalf("accepted %d jobs of 4 MiB, %d bytes held; want 16 and 64 MiB", accepted, mr.QueuedBytes())
	}
	if got := testutil.ToFloat64(m.MirrorDropped[metrics.DropBytes]); got != 84 {
		t.Fatalf("dropped for bytes %v, want 84", got)
	}
	close(release)
	waitFor(t, "the queue to drain", func() bool { return mr.QueuedBytes() == 0 })
	if !mr.Offer(job()) {
		t.Fatal("a drained queue must take a job again")
	}
}

func TestMirrorCountBoundStillApplies(t *testing.T) {
	release := make(chan struct{})
	mr, m := newTestMirror(t, Limits{Queue: 2, MaxBytes: 1 << 30, Workers: 1, Timeout: time.Minute, MaxAnswer: 1 << 20},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(func() { close(release) })
	accepted := 0
	for range 10 {
		if mr.Offer(Job{Header: http.Header{}, Body: []byte("x"), MirrorVersion: "v2"}) {
			accepted++
		}
	}
	// 2 queued plus at most the 1 a worker already took.
	if accepted < 2 || accepted > 3 || testutil.ToFloat64(m.MirrorDropped[metrics.DropQueueFull]) != float64(10-accepted) {
		t.Fatalf("accepted %d", accepted)
	}
	if mr.QueuedBytes() != int64(accepted) {
		t.Fatalf("a job refused for its count must give its bytes back: %d held", mr.QueuedBytes())
	}
}

func TestShadowAnswerLargerThanTheLimitIsAnError(t *testing.T) {
	// Before: up to 4 MiB of the shadow's answer was read and compared whatever
	// --mirror-max-body-bytes said; an answer of 2 KiB agreed here.
	stable := `{"predictions":[{"label":"yes","confidence":0.9}]}`
	padded := `{"predictions":[{"label":"yes","confidence":0.9}],"pad":"` + strings.Repeat("x", 2048) + `"}`
	mr, m := newTestMirror(t, Limits{Queue: 4, MaxBytes: 1 << 20, Workers: 1, Timeout: time.Minute, MaxAnswer: 1024},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, padded) }))
	mr.Offer(Job{Method: "POST", URI: "/v1/models/m:predict", Header: http.Header{}, Body: []byte("{}"),
		StableVersion: "v1", StableStatus: 200, StableBody: []byte(stable), MirrorVersion: "v2"})
	errors := m.Comparisons.WithLabelValues("speech", "v1", "v2", Error)
	waitFor(t, "the comparison", func() bool { return testutil.ToFloat64(errors) == 1 })
	if testutil.ToFloat64(m.Comparisons.WithLabelValues("speech", "v1", "v2", Agree)) != 0 {
		t.Fatal("an over-limit answer was compared")
	}
}
