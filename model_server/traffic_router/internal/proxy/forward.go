// Forwarding path: read the bounded body before taking a concurrency slot, then hand the
// request to httputil.ReverseProxy (hop-by-hop headers, forwarding headers, 1xx, trailers),
// whose transport picks an endpoint of the chosen version and tries a second one only when
// the first attempt provably never left the router.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/budget"
	"modelrollout.dev/traffic-router/internal/feedback"
	"modelrollout.dev/traffic-router/internal/metrics"
	"modelrollout.dev/traffic-router/internal/shadow"
	"modelrollout.dev/traffic-router/internal/split"
)

var errNoEndpoints = errors.New("no ready endpoints")

// answerGrace is how long after --request-timeout the router may still write to the client,
// so that a 504 naming the flag can be sent before the write deadline closes the connection.
const answerGrace = time.Second

// exchange is one forwarded request as the ReverseProxy hooks see it (through the context).
type exchange struct {
	id        []string // x-request-id: the client's, or one the router made (the one value, shared by both headers)
	body      []byte
	version   string
	role      split.Role
	vm        *metrics.VersionMetrics
	clientCtx context.Context // the client's own request context: done = nobody to answer
	capture   bool            // mirrored: keep the outbound header and the stable answer
	status    int             // the backend's status; 0 until an answer came
	header    http.Header     // outbound header (hop-by-hop stripped) for the shadow copy
	answer    answerBody
}

type exchangeKey struct{}

func exchangeOf(req *http.Request) *exchange { return req.Context().Value(exchangeKey{}).(*exchange) }

// newReverseProxy is the one ReverseProxy all requests share; per-request state travels in
// the request context as an *exchange.
func (r *Router) newReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        r.rewrite,
		Transport:      upstream{r},
		ModifyResponse: r.decorateResponse,
		ErrorHandler:   r.answerUpstreamError,
		BufferPool:     bufferPool{},
		ErrorLog:       newStdLogger(r.log),
	}
}

// forward admits a request (path, body, slot, a split in force) and hands it to proxyTo.
func (r *Router) forward(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	if msg, code := refusePath(req.URL); code != 0 {
		r.metrics.Reject(metrics.BadRequest)
		writeError(w, code, msg)
		return
	}
	id, err := feedback.RequestIDOf(req.Header)
	if err != nil {
		r.metrics.Reject(metrics.BadRequest)
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Every answer from here on carries the id, the router's own errors too; the backend's
	// echo is dropped (decorateResponse) so the client gets it once.
	idv := []string{id} // one slice for both headers: neither is appended to in place
	w.Header()[feedback.RequestIDHeader] = idv
	// The body is read before a slot is taken, so slow uploads cost a connection and the
	// bytes they actually sent (bounded by --max-buffered-request-bytes), not capacity.
	rc := http.NewResponseController(w)
	body, held, err := r.readBody(rc, req)
	defer r.bodies.Release(held)
	if err != nil {
		r.rejectBody(w, req, err)
		return
	}
	if !r.tryAcquire(w) {
		return
	}
	defer func() { <-r.slots }()
	r.metrics.InFlight.Inc()
	defer r.metrics.InFlight.Dec()
	s := r.split.Load()
	if s == nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("no traffic split yet for ModelRollout %s/%s: "+
			"waiting for its status.traffic", r.cfg.Namespace, r.cfg.Rollout))
		return
	}
	r.proxyTo(w, rc, req, idv, body, s, start)
}

// proxyTo forwards an admitted request to the version its split picks, then offers the shadow
// copy; start is when the request arrived (router_request_duration_seconds).
func (r *Router) proxyTo(w http.ResponseWriter, rc *http.ResponseController, req *http.Request, id []string,
	body []byte, s *split.Split, start time.Time) {
	role, version, mirrored := decideRoute(s, req)
	ex := &exchange{id: id, body: body, version: version, role: role, vm: r.metricsFor(s, role, version),
		clientCtx: req.Context(), capture: mirrored}
	ex.vm.RequestBytes.Add(float64(len(body)))
	ex.answer.limit, ex.answer.budget = r.cfg.MirrorMaxBodyBytes, r.bodies
	ctx, cancel := context.WithTimeout(context.WithValue(req.Context(), exchangeKey{}, ex), r.cfg.RequestTimeout)
	defer cancel()
	// A client reading the answer slowly must not hold the slot past the deadline either.
	_ = rc.SetWriteDeadline(time.Now().Add(r.cfg.RequestTimeout + answerGrace))
	defer func() { // also when ReverseProxy aborts a half-copied answer (panic ErrAbortHandler)
		r.bodies.Release(ex.answer.held) // the shadow job, if any, is charged to the mirror's own budget
		ex.vm.ResponseBytes.Add(float64(ex.answer.n))
		ex.vm.Duration.Observe(time.Since(start).Seconds())
	}()
	r.rp.ServeHTTP(w, req.WithContext(ctx))
	if ex.status == 0 {
		return // answered by answerUpstreamError
	}
	if mirrored && ex.header != nil {
		r.offerMirror(req, ex, s)
	}
	if r.cfg.AccessLog {
		r.log.Info("request", "method", req.Method, "path", req.URL.Path, "version", version, "role", role,
			"status", ex.status, "duration_ms", float64(time.Since(start).Microseconds())/1000)
	}
}

// tryAcquire takes a concurrency slot or answers 503; it never queues, so an overloaded
// router sheds load at once instead of growing latency for everyone.
func (r *Router) tryAcquire(w http.ResponseWriter) bool {
	select {
	case r.slots <- struct{}{}:
		return true
	default:
		r.metrics.Reject(metrics.Overloaded)
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"router overloaded: %d requests already in flight (limit --max-concurrency=%d); retry later",
			cap(r.slots), cap(r.slots)))
		return false
	}
}

// rewrite shapes the outbound request: ReverseProxy has already removed the hop-by-hop
// headers (RFC 9110 §7.6.1, including those named in Connection) and the client's forwarding
// headers; the router adds its own and the buffered body.
func (r *Router) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In)
	// Keep the chain a proxy in front (an ingress) started, unless the client named it
	// hop-by-hop; SetXForwarded appends the peer.
	if !httpguts.HeaderValuesContainsToken(pr.In.Header["Connection"], "X-Forwarded-For") {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	// No protocol upgrades (websocket, h2c): a hijacked connection would escape
	// --request-timeout and the slot, and no KServe endpoint needs one.
	if pr.Out.Header.Get("Upgrade") != "" {
		pr.Out.Header.Del("Upgrade")
		pr.Out.Header.Del("Connection")
	}
	pr.Out.Header[feedback.RequestIDHeader] = ex.id
	pr.Out.URL.Scheme = "http"
	pr.Out.Host = pr.In.Host
	// The body is sent from the buffer with its exact length, whatever framing the client
	// used (chunked, or chunked plus Content-Length), so the backend cannot parse it differently.
	pr.Out.ContentLength = int64(len(ex.body))
	pr.Out.TransferEncoding, pr.Out.Trailer = nil, nil
	pr.Out.Body, pr.Out.GetBody = nil, nil
}

// upstream is the ReverseProxy's transport: endpoint choice, ejection and the one retry.
type upstream struct{ r *Router }

// RoundTrip sends to one endpoint of the exchange's version. Only when that attempt failed to
// dial (refused, connect timeout) is the endpoint ejected and another one tried: a dial error
// is the last thing that happened to the attempt, so nothing of this request was written to
// any connection (the transport replays a request on a fresh dial only when nothing had
// been written, or the client allowed it with Idempotency-Key). Once a connection was written
// to, its bytes may have reached the backend, and a POST must not run twice. Failures after that are neither retried nor
// ejected, so a request that makes backends drop the connection cannot eject them all. An
// HTTP answer, even a 5xx, is final.
func (u upstream) RoundTrip(out *http.Request) (*http.Response, error) {
	ex := exchangeOf(out)
	if ex.capture {
		ex.header = out.Header.Clone()
	}
	pool := u.r.Pools.Pool(ex.version)
	var failed *backend.Endpoint
	var lastErr error = errNoEndpoints
	for attempt := 0; attempt < 2; attempt++ {
		ep := pool.Pick(failed, time.Now())
		if ep == nil {
			return nil, lastErr
		}
		if failed != nil {
			ex.vm.Retries.Inc()
		}
		resp, err := u.r.transport.RoundTrip(attemptRequest(out, ep.Addr, ex.body))
		if err == nil {
			return resp, nil
		}
		if out.Context().Err() != nil {
			return nil, out.Context().Err()
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) || opErr.Op != "dial" {
			// Sent (or possibly sent), or refused before dialing (e.g. a header the transport
			// rejects): the endpoint is not to blame and another would fare no better.
			u.r.log.Warn("request to endpoint failed; not retried", "version", ex.version,
				"endpoint", ep.Addr, "error", err.Error())
			return nil, err
		}
		ep.Eject(time.Now(), u.r.cfg.EjectDuration)
		u.r.log.Warn("endpoint failed, ejected", "version", ex.version, "endpoint", ep.Addr,
			"eject_for", u.r.cfg.EjectDuration.String(), "error", err.Error())
		failed, lastErr = ep, err
	}
	return nil, lastErr
}

// attemptRequest is the outbound request aimed at one endpoint, with a fresh body reader.
// GetBody lets the transport itself replay the body when it found a pooled connection dead
// before writing anything (its own, equally safe, retry).
func attemptRequest(out *http.Request, addr string, body []byte) *http.Request {
	req := *out // shallow: the header and context are shared, the URL and body are this attempt's
	u := *out.URL
	u.Host = addr
	req.URL = &u
	if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return &req
}

// decorateResponse adds the version headers and counts (and, when mirrored, keeps) the body
// as ReverseProxy copies it to the client.
func (r *Router) decorateResponse(resp *http.Response) error {
	ex := exchangeOf(resp.Request)
	ex.status = resp.StatusCode
	ex.vm.Outcomes[metrics.OutcomeOf(resp.StatusCode)].Inc()
	h := resp.Header
	if h.Get("X-Model-Version") == "" {
		h.Set("X-Model-Version", ex.version)
	}
	h.Set("X-Modelrollout-Role", string(ex.role))
	delete(h, feedback.RequestIDHeader) // the client already has the router's (set by forward)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		r.answers.Remember(ex.id[0], ex.version, h) // the shadow's answers never come through here
	}
	ex.answer.rc, ex.answer.capture = resp.Body, ex.capture
	resp.Body = &ex.answer
	return nil
}

// answerBody counts the answer's bytes and, with capture, keeps up to limit of them for the
// shadow comparison (kept is nil once the answer is larger, or when the bytes kept would take
// the shared request budget over its bound: the copy is then not compared).
type answerBody struct {
	rc      io.ReadCloser
	capture bool
	limit   int64
	budget  *budget.Bytes // --max-buffered-request-bytes, shared with request bodies
	held    int64         // taken from budget; the caller gives it back
	n       int64
	kept    []byte
	over    bool
}

func (a *answerBody) Read(p []byte) (int, error) {
	m, err := a.rc.Read(p)
	a.n += int64(m)
	if a.capture && !a.over && m > 0 {
		if int64(len(a.kept)+m) > a.limit || !a.budget.TryTake(int64(m)) {
			a.over, a.kept = true, nil
		} else {
			a.held += int64(m) // len, not capacity: append's slack is at most the same again
			a.kept = append(a.kept, p[:m]...)
		}
	}
	return m, err
}

func (a *answerBody) Close() error { return a.rc.Close() }

// answerUpstreamError answers when no HTTP answer came back: 504 on --request-timeout, 503
// without endpoints, 502 otherwise.
func (r *Router) answerUpstreamError(w http.ResponseWriter, out *http.Request, err error) {
	ex := exchangeOf(out)
	ex.status = 0
	service := r.cfg.Rollout + "-" + ex.version
	if ex.clientCtx.Err() != nil {
		// The client closed its side: not the backend's failure, so not counted. Still
		// answered, as a client that only half-closed reads on and would get an empty 200.
		writeError(w, http.StatusBadGateway, fmt.Sprintf("request to version %s canceled: the client "+
			"closed its connection before the answer", ex.version))
		return
	}
	ex.vm.Outcomes[metrics.Unavailable].Inc()
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		r.metrics.Reject(metrics.Timeout)
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("version %s did not answer within "+
			"--request-timeout=%s", ex.version, r.cfg.RequestTimeout))
	case errors.Is(err, errNoEndpoints):
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("no ready endpoints for version %s "+
			"(Service %s has none)%s", ex.version, service, r.panicHint(r.Pools.Pool(ex.version))))
	default:
		writeError(w, http.StatusBadGateway, fmt.Sprintf("could not reach version %s (Service %s): %v",
			ex.version, service, err))
	}
}

func (r *Router) offerMirror(req *http.Request, ex *exchange, s *split.Split) {
	var stableBody []byte
	if !ex.answer.over {
		stableBody = ex.answer.kept
		if stableBody == nil {
			stableBody = []byte{}
		}
	}
	r.mirror.Offer(shadow.Job{
		Method: req.Method, URI: req.URL.RequestURI(), Header: ex.header,
		Body: ex.body, StableVersion: s.Stable.Version, StableStatus: ex.status,
		StableBody: stableBody, MirrorVersion: s.Mirror.Version,
	})
}

// bufferPool lends ReverseProxy its copy buffers (32 KiB, like the transport's).
type bufferPool struct{}

var copyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyPool.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyPool.Put(&b) }
