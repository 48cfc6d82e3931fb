package proxy

// Regression tests for hostile and careless clients and backends (issue 12): slow uploads,
// memory bounds, duplicate delivery, hop-by-hop headers, framing, paths, slow readers.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"modelrollout.dev/traffic-router/internal/settings"
	"modelrollout.dev/traffic-router/internal/split"
)

// frontServer serves the router on loopback with the production server settings.
func frontServer(t *testing.T, r *Router) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(r)
	ts.Config = NewServer(r.cfg, r)
	ts.Start()
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

// rawConn sends raw bytes to addr and returns the connection for reading the answer.
func rawConn(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c
}

func readAnswer(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound for a hung test, not an assertion
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the router's answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// waitFor polls cond; the bound only stops a hung test (conditions are events, not timings).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
	}
}

const slowHead = "POST /v1/models/m:predict HTTP/1.1\r\nHost: speech\r\nContent-Length: 100\r\n\r\n0123456789"

func TestSlowUploadsDoNotHoldConcurrencySlots(t *testing.T) {
	// Before: the slot was taken before the body was read; 3 uploads stuck after 10 of 100
	// bytes held both slots of --max-concurrency=2 and the next request got 503.
	r, _ := newTestRouter(t, func(s *settings.Settings) { s.MaxConcurrency = 2 })
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	front := frontServer(t, r)
	for range 3 {
		rawConn(t, front, slowHead)
	}
	waitFor(t, "3 bodies being read", func() bool { return r.bodies.InUse() == 300 })
	resp, err := http.Post("http://"+front+"/v1/models/m:predict", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(r.slots) != 0 || hits.Load() != 1 {
		t.Fatalf("while 3 uploads are pending: status %d, slots held %d, backend hits %d", resp.StatusCode,
			len(r.slots), hits.Load())
	}
}

func TestBodyNotReceivedInTimeIs408(t *testing.T) {
	r, m := newTestRouter(t, func(s *settings.Settings) { s.BodyReadTimeout = 50 * time.Millisecond })
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	resp, body := readAnswer(t, rawConn(t, frontServer(t, r), slowHead))
	if resp.StatusCode != 408 || !strings.Contains(body, "--body-read-timeout=50ms") || hits.Load() != 0 {
		t.Fatalf("status %d body %s hits %d", resp.StatusCode, body, hits.Load())
	}
	if testutil.ToFloat64(m.Rejected.WithLabelValues("speech", "body_timeout")) != 1 || r.bodies.InUse() != 0 {
		t.Fatalf("not counted, or the budget was not given back (%d)", r.bodies.InUse())
	}
}

func TestBufferedBodiesAreBoundedInBytes(t *testing.T) {
	r, m := newTestRouter(t, func(s *settings.Settings) { s.MaxRequestBytes, s.MaxBufferedBytes = 100, 150 })
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	front := frontServer(t, r)
	rawConn(t, front, slowHead) // holds 100 of 150
	waitFor(t, "the slow body to be held", func() bool { return r.bodies.InUse() == 100 })
	exact := "POST /v1/models/m:predict HTTP/1.1\r\nHost: speech\r\nContent-Length: 50\r\n\r\n" + strings.Repeat("x", 50)
	if resp, body := readAnswer(t, rawConn(t, front, exact)); resp.StatusCode != 200 {
		t.Fatalf("50 more bytes fit the budget exactly: %d %s", resp.StatusCode, body)
	}
	over := "POST /v1/models/m:predict HTTP/1.1\r\nHost: speech\r\nContent-Length: 51\r\n\r\n" + strings.Repeat("x", 51)
	resp, body := readAnswer(t, rawConn(t, front, over))
	if resp.StatusCode != 503 || !strings.Contains(body, "--max-buffered-request-bytes=150") {
		t.Fatalf("51 bytes over the budget: %d %s", resp.StatusCode, body)
	}
	if testutil.ToFloat64(m.Rejected.WithLabelValues("speech", "buffer_full")) != 1 || hits.Load() != 1 {
		t.Fatalf("buffer_full not counted or forwarded anyway (hits %d)", hits.Load())
	}
}

func TestChunkedBodyOverTheLimitIs413(t *testing.T) {
	r, _ := newTestRouter(t, func(s *settings.Settings) { s.MaxRequestBytes = 10 })
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	raw := "POST /v1/models/m:predict HTTP/1.1\r\nHost: speech\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"6\r\n123456\r\n5\r\n78901\r\n0\r\n\r\n"
	resp, body := readAnswer(t, rawConn(t, frontServer(t, r), raw))
	if resp.StatusCode != 413 || !strings.Contains(body, "--max-request-bytes=10") || hits.Load() != 0 {
		t.Fatalf("status %d body %s hits %d", resp.StatusCode, body, hits.Load())
	}
}

// resettingBackend answers the first `answered` requests of each connection and resets the
// connection (RST) after reading the next one in full; seen counts requests read by body.
func resettingBackend(t *testing.T, answered int, seen *sync.Map) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(req.Body)
					n, _ := seen.LoadOrStore(string(b), new(atomic.Int64))
					n.(*atomic.Int64).Add(1)
					if i >= answered {
						_ = c.(*net.TCPConn).SetLinger(0) // close with RST, as a crashing server does
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRequestThatMayHaveBeenSentIsNotRetriedNorEjected(t *testing.T) {
	// Before: any error retried on the other endpoint (two backends ran the POST, both were
	// ejected); on a reused connection the transport itself replayed it (Idempotency-Key).
	for _, c := range []struct {
		name     string
		answered int // requests answered per connection before the reset
	}{{"fresh connection", 0}, {"reused keep-alive connection", 1}} {
		t.Run(c.name, func(t *testing.T) {
			r, m := newTestRouter(t, nil)
			var seen sync.Map
			a, b := resettingBackend(t, c.answered, &seen), resettingBackend(t, c.answered, &seen)
			r.SetEndpoints("v1", ready(a, b))
			for i := range c.answered * 2 { // warm one keep-alive connection to each backend
				if w := post(r, fmt.Sprintf("warm-%d", i)); w.Code != 200 {
					t.Fatalf("warm-up: %d %s", w.Code, w.Body)
				}
			}
			w := post(r, "the-request")
			n, _ := seen.Load("the-request")
			if w.Code != 502 || n == nil || n.(*atomic.Int64).Load() != 1 {
				t.Fatalf("status %d body %s; deliveries %v, want exactly 1", w.Code, w.Body, n)
			}
			if got := testutil.ToFloat64(m.Retries.WithLabelValues("speech", "v1")); got != 0 {
				t.Fatalf("retries %v", got)
			}
			picked := map[string]bool{}
			for range 4 {
				picked[r.Pools.Pool("v1").Pick(nil, time.Now()).Addr] = true
			}
			if len(picked) != 2 {
				t.Fatalf("an endpoint was ejected after a failure that came after sending: picks %v", picked)
			}
		})
	}
}

func TestHopByHopHeadersStrippedBothWaysAndForwardingHeadersAdded(t *testing.T) {
	var got http.Header
	var gotHost string
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		got, gotHost = req.Header.Clone(), req.Host
		w.Header().Set("Connection", "X-Internal, Keep-Alive")
		w.Header().Set("X-Internal", "backend secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("X-Kept", "yes")
	}))
	t.Cleanup(be.Close)
	r, _ := newTestRouter(t, nil)
	r.SetEndpoints("v1", ready(strings.TrimPrefix(be.URL, "http://")))
	req := httptest.NewRequest("POST", "/v1/models/m:predict", strings.NewReader("{}"))
	req.Header.Set("Connection", "X-Hop, Upgrade")
	req.Header.Set("X-Hop", "client secret")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Proxy-Authorization", "Basic eA==")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Forwarded-Host", "spoofed.example")
	req.Header.Set("Forwarded", "for=198.51.100.1")
	req.Header.Set("X-User-Id", "u1")
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	for _, k := range []string{"Connection", "X-Hop", "Upgrade", "Proxy-Authorization", "Forwarded"} {
		if v := got.Values(k); len(v) > 0 {
			t.Errorf("backend got %s: %v", k, v)
		}
	}
	if got.Get("X-Forwarded-For") != "203.0.113.9, 192.0.2.1" || got.Get("X-Forwarded-Host") != "example.com" ||
		got.Get("X-Forwarded-Proto") != "http" || got.Get("X-User-Id") != "u1" || gotHost != "example.com" {
		t.Errorf("forwarding headers or end-to-end headers wrong: host %q %v", gotHost, got)
	}
	for _, k := range []string{"Connection", "X-Internal", "Keep-Alive", "Proxy-Authenticate"} {
		if v := w.Header().Values(k); len(v) > 0 {
			t.Errorf("client got %s: %v", k, v)
		}
	}
	if w.Code != 200 || w.Header().Get("X-Kept") != "yes" {
		t.Errorf("status %d, end-to-end response header lost: %v", w.Code, w.Header())
	}
}

func TestMirrorCopyCarriesTheCleanedHeaders(t *testing.T) {
	mirrored := make(chan http.Header, 1)
	cand := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mirrored <- req.Header.Clone()
	}))
	t.Cleanup(cand.Close)
	var hits atomic.Int64
	r, _ := newTestRouter(t, nil)
	r.SetSplit(split.Split{Stable: split.Target{Version: "v1", Weight: 100}, Mirror: &split.Mirror{Version: "v2", Percent: 100}})
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	r.SetEndpoints("v2", ready(strings.TrimPrefix(cand.URL, "http://")))
	req := httptest.NewRequest("POST", "/v1/models/m:predict", strings.NewReader("{}"))
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "client secret")
	r.ServeHTTP(httptest.NewRecorder(), req)
	select {
	case h := <-mirrored:
		if h.Get("X-Hop") != "" || h.Get("Connection") != "" || h.Get("X-Forwarded-For") == "" {
			t.Fatalf("shadow copy headers: %v", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no shadow copy arrived")
	}
}

func TestFramingTricksReachTheBackendAsOneCleanRequest(t *testing.T) {
	type seenReq struct {
		path, body, te string
		cl             int64
	}
	seen := make(chan seenReq, 8)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		seen <- seenReq{req.URL.Path, string(b), strings.Join(req.TransferEncoding, ","), req.ContentLength}
	}))
	t.Cleanup(be.Close)
	r, _ := newTestRouter(t, nil)
	r.SetEndpoints("v1", ready(strings.TrimPrefix(be.URL, "http://")))
	front := frontServer(t, r)
	// Content-Length and Transfer-Encoding together: the chunked framing wins (RFC 9112 §6.3)
	// and the backend gets the decoded body with its own exact Content-Length, so the
	// "smuggled" bytes a CL-reading hop would see as a second request never reach it as one.
	raw := "POST /v1/models/m:predict HTTP/1.1\r\nHost: speech\r\nContent-Length: 3\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	if resp, body := readAnswer(t, rawConn(t, front, raw)); resp.StatusCode != 200 {
		t.Fatalf("CL+TE: %d %s", resp.StatusCode, body)
	}
	if got := <-seen; got != (seenReq{"/v1/models/m:predict", "hello", "", 5}) {
		t.Fatalf("backend saw %+v", got)
	}
	for name, raw := range map[string]string{
		"two Content-Lengths":       "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
		"gzip then chunked":         "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"space before colon":        "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
		"signed Content-Length":     "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nContent-Length: +5\r\n\r\nhello",
		"bad chunk size":            "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
		"short body then close":     "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhel",
		"bare LF in chunk trailer":  "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
		"absolute-form other host":  "POST http://elsewhere.example/v1/models/m:predict HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n",
		"header with a NUL byte":    "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
		"obsolete line folding":     "POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 without any Host": "POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
	} {
		c := rawConn(t, front, raw)
		if name == "short body then close" {
			c.(*net.TCPConn).CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		code := 0
		if err == nil {
			code = resp.StatusCode
		}
		switch {
		case name == "absolute-form other host" || name == "obsolete line folding":
			// Forwarded as an ordinary request for the model: the host part is not a target,
			// and a folded header arrives unfolded (one line, RFC 9112 §5.2).
			if code != 200 {
				t.Errorf("%s: status %d", name, code)
			}
			<-seen
		case code != 0 && code < 400:
			t.Errorf("%s: accepted with %d", name, code)
		}
	}
	select {
	case got := <-seen:
		t.Fatalf("a malformed request reached the backend: %+v", got)
	default:
	}
}

func TestOversizedHeadersAre431AndSlowHeadersAreCut(t *testing.T) {
	r, _ := newTestRouter(t, func(s *settings.Settings) {
		s.MaxHeaderBytes, s.ReadHeaderTimeout = 4096, 50*time.Millisecond
	})
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	front := frontServer(t, r)
	big := "GET /v2/models/m HTTP/1.1\r\nHost: s\r\nX-User-Id: " + strings.Repeat("k", 8192) + "\r\n\r\n"
	if resp, _ := readAnswer(t, rawConn(t, front, big)); resp.StatusCode != 431 {
		t.Fatalf("8 KiB header with --max-header-bytes=4096: %d", resp.StatusCode)
	}
	c := rawConn(t, front, "GET /v2/models/m HTTP/1.1\r\nHost: s\r\n") // and then nothing (slowloris)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 512)); err != io.EOF && !strings.Contains(fmt.Sprint(err), "reset") {
		t.Fatalf("unfinished headers: want the connection closed by the router, got %v", err)
	}
	if hits.Load() != 0 {
		t.Fatal("backend reached")
	}
}

func TestPathsTheRouterDoesNotForward(t *testing.T) {
	r, m := newTestRouter(t, nil)
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	front := frontServer(t, r)
	for _, c := range []struct {
		target string
		code   int
		want   string
	}{
		{"/v2/repository/models/m/unload", 404, "model-repository API"},
		{"/V2/Repository/index", 404, "model-repository API"},
		{"/v2/repository", 404, "model-repository API"},
		{"/v2/models/../repository/models/m/unload", 400, "'..' segments"},
		{"/v2/models/m/%2E%2E/%2E%2E/repository/models/m/unload", 400, "'..' segments"},
		{"/v2/models/a%2F..%2F..%2Frepository/models/m/unload", 400, "'..' segments"},
		{"//v2/repository/models/m/unload", 400, "empty"},
		{"/v2/models/m/./infer", 400, "'.'"},
	} {
		resp, body := readAnswer(t, rawConn(t, front, "POST "+c.target+" HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n"))
		if resp.StatusCode != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s", c.target, resp.StatusCode, body)
		}
	}
	for _, ok := range []string{"/v1/models/m:predict", "/v2/models/m/infer", "/v2/models/m/", "/v2/health/ready", "/v2"} {
		if resp, body := readAnswer(t, rawConn(t, front, "POST "+ok+" HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n")); resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", ok, resp.StatusCode, body)
		}
	}
	if hits.Load() != 5 || testutil.ToFloat64(m.Rejected.WithLabelValues("speech", "bad_request")) != 8 {
		t.Fatalf("hits %d", hits.Load())
	}
}

func TestBackendThatStallsMidAnswerFreesTheSlot(t *testing.T) {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		io.WriteString(w, `{"predictions":`)
		w.(http.Flusher).Flush()
		<-release // and never the rest
	}))
	t.Cleanup(be.Close)
	t.Cleanup(func() { close(release) }) // runs first: the handler must return for be.Close
	r, _ := newTestRouter(t, func(s *settings.Settings) { s.RequestTimeout = 100 * time.Millisecond })
	r.SetEndpoints("v1", ready(strings.TrimPrefix(be.URL, "http://")))
	resp, err := http.Post("http://"+frontServer(t, r)+"/v1/models/m:predict", "application/json", strings.NewReader("{}"))
	if err == nil {
		_, err = io.ReadAll(resp.Body)
	}
	if err == nil {
		t.Fatal("a truncated answer must end in an error for the client, not look complete")
	}
	waitFor(t, "the slot to be given back", func() bool { return len(r.slots) == 0 })
}

func TestClientThatNeverReadsTheAnswerFreesTheSlot(t *testing.T) {
	// Before: once the socket buffers were full the copy to the client blocked in Write with
	// no deadline, holding the slot for as long as the client kept the connection open (still
	// held 4 s after the 1 s request timeout). The answer is larger than loopback's buffers.
	big := strings.Repeat("x", 64<<20)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, big)
	}))
	t.Cleanup(be.Close)
	r, _ := newTestRouter(t, func(s *settings.Settings) { s.RequestTimeout = time.Second })
	r.SetEndpoints("v1", ready(strings.TrimPrefix(be.URL, "http://")))
	front := frontServer(t, r)
	rawConn(t, front, "GET /v2/models/m HTTP/1.1\r\nHost: s\r\n\r\n") // never read
	waitFor(t, "the request to start", func() bool { return len(r.slots) == 1 })
	waitFor(t, "the slot to be given back", func() bool { return len(r.slots) == 0 })
}

func TestStableAnswerKeptForTheShadowIsChargedToTheRequestBudget(t *testing.T) {
	answer := `{"predictions":[{"label":"yes","confidence":0.9}]}`
	n := int64(len(answer))
	stable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, answer)
	}))
	t.Cleanup(stable.Close)
	cand := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, answer)
	}))
	t.Cleanup(cand.Close)
	for _, c := range []struct {
		budget   int64
		compared float64
	}{{2 + n, 1}, {2 + n - 1, 0}} { // the 2-byte body plus the answer: exactly at, and one byte under
		r, m := newTestRouter(t, func(s *settings.Settings) { s.MaxRequestBytes, s.MaxBufferedBytes = 2, c.budget })
		r.SetSplit(split.Split{Stable: split.Target{Version: "v1", Weight: 100}, Mirror: &split.Mirror{Version: "v2", Percent: 100}})
		r.SetEndpoints("v1", ready(strings.TrimPrefix(stable.URL, "http://")))
		r.SetEndpoints("v2", ready(strings.TrimPrefix(cand.URL, "http://")))
		if w := post(r, "{}"); w.Code != 200 || w.Body.String() != answer {
			t.Fatalf("budget %d: the user's answer must not depend on the shadow: %d %s", c.budget, w.Code, w.Body)
		}
		mirrored := m.MirrorReqs.WithLabelValues("speech", "v2", "ok")
		waitFor(t, "the shadow copy", func() bool { return testutil.ToFloat64(mirrored) == 1 })
		agree := m.Comparisons.WithLabelValues("speech", "v1", "v2", "agree")
		if c.compared == 1 {
			waitFor(t, "the comparison", func() bool { return testutil.ToFloat64(agree) == 1 })
		} else if got := testutil.ToFloat64(agree); got != 0 {
			t.Fatalf("budget %d: compared although the answer did not fit", c.budget)
		}
		if r.bodies.InUse() != 0 {
			t.Fatalf("budget %d: %d bytes not given back", c.budget, r.bodies.InUse())
		}
	}
}

func TestConnectionsBeyondTheLimitWaitToBeAccepted(t *testing.T) {
	// Before: every connection was accepted, each costing a goroutine and its buffers, so
	// enough idle or slow connections could take the router's memory (no test could hold it).
	r, _ := newTestRouter(t, func(s *settings.Settings) { s.MaxConnections = 2 })
	var hits atomic.Int64
	r.SetEndpoints("v1", ready(backendAnswering(t, 200, &hits)))
	var open atomic.Int64
	ts := httptest.NewUnstartedServer(r)
	ts.Config = NewServer(r.cfg, r)
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	ts.Listener = LimitConnections(ts.Listener, r.cfg)
	ts.Start()
	t.Cleanup(ts.Close)
	addr := strings.TrimPrefix(ts.URL, "http://")
	first := rawConn(t, addr, "")
	rawConn(t, addr, "")
	waitFor(t, "two connections accepted", func() bool { return open.Load() == 2 })
	third := rawConn(t, addr, "GET /v2/models/m HTTP/1.1\r\nHost: s\r\n\r\n")
	// While two are held the third waits to be accepted, so nothing answers it. (A short read
	// deadline can only make this check pass wrongly on a slow machine, never fail wrongly.)
	_ = third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := third.Read(make([]byte, 64)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) || open.Load() != 2 {
		t.Fatalf("third connection served past --max-connections=2: %d bytes, %v, %d open", n, err, open.Load())
	}
	first.Close()
	if resp, body := readAnswer(t, third); resp.StatusCode != 200 {
		t.Fatalf("once a connection closed the waiting one must be served: %d %s", resp.StatusCode, body)
	}
}
