// Forwarding path: read the body once (so it can be retried and mirrored), send it to one
// endpoint of the chosen version, retry once elsewhere only if no HTTP answer came back.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/metrics"
	"modelrollout.dev/traffic-router/internal/shadow"
	"modelrollout.dev/traffic-router/internal/split"
)

var errNoEndpoints = errors.New("no ready endpoints")

// hopHeaders are connection-scoped (RFC 9110 §7.6.1) and must not be forwarded.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// Request bodies are not pooled on purpose: the transport may still be reading one after
// RoundTrip returns (an early answer), so a reused buffer could corrupt a request in flight.
var copyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (r *Router) forward(w http.ResponseWriter, req *http.Request) {
	if !r.tryAcquire(w) {
		return
	}
	defer func() { <-r.slots }()
	r.metrics.InFlight.Inc()
	defer r.metrics.InFlight.Dec()
	start := time.Now()
	body, err := r.readBody(req)
	if err != nil {
		r.rejectBody(w, err)
		return
	}
	s := r.split.Load()
	if s == nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("no traffic split yet for ModelRollout %s/%s: "+
			"waiting for its status.traffic", r.cfg.Namespace, r.cfg.Rollout))
		return
	}
	role, version, mirrored := decideRoute(s, req)
	vm := r.metrics.For(version, string(role))
	vm.RequestBytes.Add(float64(len(body)))
	ctx, cancel := context.WithTimeout(req.Context(), r.cfg.RequestTimeout)
	defer cancel()
	resp, err := r.roundTrip(ctx, req, body, version, vm)
	if err != nil {
		r.answerUpstreamError(w, req, err, version, vm, start)
		return
	}
	defer resp.Body.Close()
	captured := r.writeResponse(w, resp, version, role, vm, mirrored)
	vm.Outcomes[metrics.OutcomeOf(resp.StatusCode)].Inc()
	vm.Duration.Observe(time.Since(start).Seconds())
	if mirrored {
		r.offerMirror(req, body, s, resp.StatusCode, captured)
	}
	if r.cfg.AccessLog {
		r.log.Info("request", "method", req.Method, "path", req.URL.Path, "version", version, "role", role,
			"status", resp.StatusCode, "duration_ms", float64(time.Since(start).Microseconds())/1000)
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

type tooLargeError struct{ limit int64 }

func (e tooLargeError) Error() string {
	return fmt.Sprintf("request body larger than %d bytes (limit --max-request-bytes=%d); "+
		"send shorter audio or split it into several requests", e.limit, e.limit)
}

// readBody reads the whole body, refusing more than the limit.
func (r *Router) readBody(req *http.Request) ([]byte, error) {
	limit := r.cfg.MaxRequestBytes
	if req.ContentLength > limit {
		return nil, tooLargeError{limit}
	}
	size := int64(4 << 10)
	if req.ContentLength >= 0 {
		size = req.ContentLength + 1 // +1 so a correct length ends in one read plus EOF
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if _, err := buf.ReadFrom(io.LimitReader(req.Body, limit+1)); err != nil {
		return nil, fmt.Errorf("could not read the request body: %w", err)
	}
	if int64(buf.Len()) > limit {
		return nil, tooLargeError{limit}
	}
	return buf.Bytes(), nil
}

func (r *Router) rejectBody(w http.ResponseWriter, err error) {
	var tl tooLargeError
	if errors.As(err, &tl) {
		r.metrics.Reject(metrics.TooLarge)
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	writeError(w, http.StatusBadRequest, err.Error())
}

// roundTrip sends to one endpoint; if no HTTP answer comes back (refused, reset) it ejects
// that endpoint and tries once more on another. An HTTP answer, even a 5xx, is final.
func (r *Router) roundTrip(ctx context.Context, in *http.Request, body []byte, version string,
	vm *metrics.VersionMetrics) (*http.Response, error) {
	pool := r.Pools.Pool(version)
	for _, h := range hopHeaders {
		in.Header.Del(h)
	}
	// A nil-valued Idempotency-Key marks the request replayable on a stale keep-alive
	// connection without sending the header (documented net/http behaviour).
	in.Header["Idempotency-Key"] = nil
	var failed *backend.Endpoint
	var lastErr error = errNoEndpoints
	for attempt := 0; attempt < 2; attempt++ {
		ep := pool.Pick(failed, time.Now())
		if ep == nil {
			return nil, lastErr
		}
		if failed != nil {
			vm.Retries.Inc()
		}
		out, err := http.NewRequestWithContext(ctx, in.Method, "http://"+ep.Addr+in.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		out.Header, out.Host = in.Header, in.Host
		resp, err := r.transport.RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		ep.Eject(time.Now(), r.cfg.EjectDuration)
		r.log.Warn("endpoint failed, ejected", "version", version, "endpoint", ep.Addr,
			"eject_for", r.cfg.EjectDuration.String(), "error", err.Error())
		failed, lastErr = ep, err
	}
	return nil, lastErr
}

func (r *Router) answerUpstreamError(w http.ResponseWriter, req *http.Request, err error, version string,
	vm *metrics.VersionMetrics, start time.Time) {
	if req.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	vm.Outcomes[metrics.Unavailable].Inc()
	vm.Duration.Observe(time.Since(start).Seconds())
	service := r.cfg.Rollout + "-" + version
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		r.metrics.Reject(metrics.Timeout)
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("version %s did not answer within "+
			"--request-timeout=%s", version, r.cfg.RequestTimeout))
	case errors.Is(err, errNoEndpoints):
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("no ready endpoints for version %s "+
			"(Service %s has none)%s", version, service, r.panicHint(r.Pools.Pool(version))))
	default:
		writeError(w, http.StatusBadGateway, fmt.Sprintf("could not reach version %s (Service %s): %v",
			version, service, err))
	}
}

// writeResponse copies status, headers and body; returns the body when it must be kept
// for a shadow comparison (mirrored and not larger than --mirror-max-body-bytes).
func (r *Router) writeResponse(w http.ResponseWriter, resp *http.Response, version string, role split.Role,
	vm *metrics.VersionMetrics, capture bool) []byte {
	h := w.Header()
	for k, vv := range resp.Header {
		h[k] = vv
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	if h.Get("X-Model-Version") == "" {
		h.Set("X-Model-Version", version)
	}
	h.Set("X-Modelrollout-Role", string(role))
	w.WriteHeader(resp.StatusCode)
	n, kept := copyBody(w, resp.Body, capture, r.cfg.MirrorMaxBodyBytes)
	vm.ResponseBytes.Add(float64(n))
	return kept
}

// copyBody streams the answer to the client; with capture it also keeps up to limit bytes
// (nil when the body was larger) for the shadow comparison.
func copyBody(w io.Writer, body io.Reader, capture bool, limit int64) (int64, []byte) {
	var kept *bytes.Buffer
	if capture {
		kept = &bytes.Buffer{}
	}
	bufp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bufp)
	var n int64
	for {
		m, err := body.Read(*bufp)
		if m > 0 {
			n += int64(m)
			if _, werr := w.Write((*bufp)[:m]); werr != nil {
				break
			}
			if kept != nil && int64(kept.Len()+m) <= limit {
				kept.Write((*bufp)[:m])
			} else {
				kept = nil
			}
		}
		if err != nil {
			break
		}
	}
	if kept == nil {
		return n, nil
	}
	return n, kept.Bytes()
}

func (r *Router) offerMirror(req *http.Request, body []byte, s *split.Split, status int, stableBody []byte) {
	header := req.Header.Clone()
	r.mirror.Offer(shadow.Job{
		Method: req.Method, URI: req.URL.RequestURI(), Header: header,
		Body: body, StableVersion: s.Stable.Version, StableStatus: status,
		StableBody: stableBody, MirrorVersion: s.Mirror.Version,
	})
}
