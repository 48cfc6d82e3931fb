package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"modelrollout.dev/traffic-router/internal/feedback"
	"modelrollout.dev/traffic-router/internal/settings"
	"modelrollout.dev/traffic-router/internal/split"
)

// hopByHop are the headers RFC 9110 §7.6.1 makes connection-scoped; none may cross the router.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Trailer", "Transfer-Encoding", "Upgrade"}

// recordingTransport is an in-memory backend: it keeps the outbound request and answers with
// hop-by-hop headers of its own, one of them named by the client's request (a careless echo).
type recordingTransport struct {
	got  *http.Request
	body []byte
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.got, rt.body = req, nil
	if req.Body != nil {
		rt.body, _ = io.ReadAll(req.Body)
	}
	h := http.Header{"Connection": {"X-Backend-Hop"}, "X-Backend-Hop": {"1"}, "Keep-Alive": {"timeout=5"},
		"Content-Type": {"application/json"}}
	if echo := req.Header.Get("X-Echo-Hop"); httpguts.ValidHeaderFieldName(echo) {
		h.Add("Connection", echo)
		h.Set(echo, "from backend")
	}
	return &http.Response{StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Body: io.NopCloser(strings.NewReader(`{"predictions":[]}`)), ContentLength: -1, Request: req}, nil
}

// teeBody records what the router read of the client's body.
type teeBody struct {
	io.Reader
	read bytes.Buffer
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.Reader.Read(p)
	t.read.Write(p[:n])
	return n, err
}
func (t *teeBody) Close() error { return nil }

// FuzzForward feeds the router raw HTTP requests (as the server parses them) and checks its
// forwarding decisions: refused paths never reach a backend; what does reach it carries no
// hop-by-hop header (nor any the client named in Connection), exactly the body the client
// sent with its exact length, and the client's address last in X-Forwarded-For; the answer
// carries none of the backend's hop-by-hop headers; budgets and slots are all given back.
func FuzzForward(f *testing.F) {
	for _, seed := range []string{
		"POST /v1/models/m:predict HTTP/1.1\r\nHost: speech\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v2/models/m/infer HTTP/1.1\r\nHost: speech\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"POST /v2/models/m/infer HTTP/1.1\r\nHost: s\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nX-Echo-Hop: X-Leak\r\nContent-Length: 0\r\n\r\n",
		"GET /v2/models/m HTTP/1.1\r\nHost: s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-User-Id: u-17\r\n\r\n",
		"POST /v2/repository/models/m/unload HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n",
		"POST /v2/models/a%2F..%2Frepository/models/m/unload HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n",
		"POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: X-Forwarded-For\r\nContent-Length: 0\r\n\r\n",
		"POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nTe: trailers, deflate\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\n\r\n",
		"POST /v1/models/m:predict HTTP/1.0\r\nContent-Length: 20\r\n\r\n01234567890123456789",
		"POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nX-Request-Id: c-1\r\nConnection: x-request-id\r\nContent-Length: 0\r\n\r\n",
		"POST /v1/models/m:predict HTTP/1.1\r\nHost: s\r\nX-Request-Id: a b\r\nContent-Length: 0\r\n\r\n",
		"POST /feedback HTTP/1.1\r\nHost: s\r\nContent-Length: 34\r\n\r\n{\"requestId\": \"c-1\", \"label\": \"a\"}",
	} {
		f.Add([]byte(seed))
	}
	r, _ := newTestRouter(f, func(s *settings.Settings) { s.MaxRequestBytes, s.MaxBufferedBytes = 16, 64 })
	r.SetSplit(split.Split{Stable: split.Target{Version: "v1", Weight: 50},
		Candidate: &split.Target{Version: "v2", Weight: 50}, StickyHeader: "X-User-Id"})
	r.SetEndpoints("v1", ready("127.0.0.1:9"))
	r.SetEndpoints("v2", ready("127.0.0.1:9"))
	rt := &recordingTransport{}
	r.transport = rt
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil || !serverAccepts(req) {
			return
		}
		in := req.Header.Clone()
		tee := &teeBody{Reader: req.Body}
		req.Body, req.RemoteAddr = tee, "192.0.2.1:1234"
		rt.got = nil
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if r.bodies.InUse() != 0 || len(r.slots) != 0 {
			t.Fatalf("budget %d / slots %d not given back", r.bodies.InUse(), len(r.slots))
		}
		switch w.Code {
		case 200, 400, 404, 413, 502:
		case 405, 409, 422, 429: // POST /feedback's own answers
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		checkNoHop(t, "client", w.Header(), append([]string{"X-Backend-Hop", in.Get("X-Echo-Hop")}, hopByHop...))
		if rt.got == nil {
			return
		}
		// What was forwarded carries one valid id, the same the client got (its own if it sent one).
		sent, answered := rt.got.Header.Values("X-Request-Id"), w.Header().Values("X-Request-Id")
		if len(sent) != 1 || !feedback.IsValidRequestID(sent[0]) || len(answered) != 1 || answered[0] != sent[0] {
			t.Fatalf("x-request-id to the backend %q, on the answer %q", sent, answered)
		}
		if own := in.Values("X-Request-Id"); len(own) == 1 && sent[0] != own[0] &&
			!httpguts.HeaderValuesContainsToken(in["Connection"], "X-Request-Id") {
			t.Fatalf("the client's x-request-id %q was replaced by %q", own[0], sent[0])
		}
		if _, code := refusePath(req.URL); code != 0 {
			t.Fatalf("refused path %q reached the backend", req.URL.Path)
		}
		named := append([]string{}, hopByHop...)
		for _, v := range in["Connection"] {
			for tok := range strings.SplitSeq(v, ",") {
				// Te is re-added as "trailers" only (checked below), whatever the client named.
				if tok = textproto.TrimString(tok); tok != "" && !isRouterSet(tok) && !strings.EqualFold(tok, "Te") {
					named = append(named, tok)
				}
			}
		}
		checkNoHop(t, "backend", rt.got.Header, named)
		if !bytes.Equal(rt.body, tee.read.Bytes()) || rt.got.ContentLength != int64(len(rt.body)) {
			t.Fatalf("backend got %q (Content-Length %d), client sent %q", rt.body, rt.got.ContentLength, tee.read.Bytes())
		}
		if xff := rt.got.Header.Get("X-Forwarded-For"); !strings.HasSuffix(xff, "192.0.2.1") {
			t.Fatalf("X-Forwarded-For %q", xff)
		}
		if te := rt.got.Header.Values("Te"); len(te) > 0 && (len(te) != 1 || te[0] != "trailers") {
			t.Fatalf("Te %v forwarded", te)
		}
	})
}

// serverAccepts mirrors the checks net/http's server makes beyond http.ReadRequest, which
// a request must pass before any handler sees it.
func serverAccepts(req *http.Request) bool {
	if req.ProtoAtLeast(1, 1) && req.Host == "" && len(req.Header["Host"]) == 0 {
		return false
	}
	if len(req.Header["Host"]) > 1 || !httpguts.ValidHostHeader(req.Host) {
		return false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// isRouterSet: forwarding headers the router writes itself, whatever the client named.
func isRouterSet(name string) bool {
	switch textproto.CanonicalMIMEHeaderKey(name) {
	case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id":
		return true
	}
	return false
}

func checkNoHop(t *testing.T, who string, h http.Header, names []string) {
	t.Helper()
	for _, k := range names {
		if k == "" {
			continue
		}
		if v := h.Values(k); len(v) > 0 {
			t.Fatalf("%s got hop-by-hop header %s: %v (all: %v)", who, k, v, h)
		}
	}
}
