// Package proxy is the router's HTTP front: limits, the per-request version choice, forwarding
// with one retry when a connection could not be made, response headers, metrics, health and
// readiness. Reading order: router.go, request.go (what a client may send), forward.go.
package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	stdlog "log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/budget"
	"modelrollout.dev/traffic-router/internal/feedback"
	"modelrollout.dev/traffic-router/internal/metrics"
	"modelrollout.dev/traffic-router/internal/settings"
	"modelrollout.dev/traffic-router/internal/shadow"
	"modelrollout.dev/traffic-router/internal/split"
)

// Router is the shared state: the current split (nil until known), endpoints, limits.
type Router struct {
	cfg       settings.Settings
	split     atomic.Pointer[split.Split]
	routed    atomic.Pointer[routedMetrics] // the split in force's series, resolved when it is set
	Pools     *backend.Registry
	metrics   *metrics.Metrics
	mirror    *shadow.Mirror
	transport http.RoundTripper // to backends, shared with the mirror; tests may swap in a fake
	rp        *httputil.ReverseProxy
	slots     chan struct{} // bounded concurrency: a token per request in flight
	bodies    *budget.Bytes // request body bytes held by all requests (--max-buffered-request-bytes)
	draining  atomic.Bool
	metricsH  http.Handler
	answers   *feedback.Memory // 2xx user-path answers by request id, for POST /feedback
	feedbackH http.Handler
	log       *slog.Logger
}

// New builds a router; the mirror workers live as long as ctx.
func New(ctx context.Context, cfg settings.Settings, m *metrics.Metrics, log *slog.Logger) *Router {
	r := &Router{cfg: cfg, Pools: &backend.Registry{PanicRouting: cfg.PanicRouting}, metrics: m, log: log,
		transport: NewTransport(cfg), slots: make(chan struct{}, cfg.MaxConcurrency), metricsH: m.Handler(),
		bodies: budget.New(cfg.MaxBufferedBytes), answers: feedback.NewMemory(cfg.FeedbackMaxIDs, cfg.FeedbackMaxAge)}
	r.feedbackH = feedback.NewHandler(r.answers, cfg.FeedbackRate, cfg.FeedbackBurst, m)
	r.rp = r.newReverseProxy()
	r.mirror = shadow.New(ctx, shadow.Limits{Queue: cfg.MirrorQueue, MaxBytes: cfg.MirrorMaxBytes,
		Workers: cfg.MirrorWorkers, Timeout: cfg.MirrorTimeout, MaxAnswer: cfg.MirrorMaxBodyBytes},
		r.Pools, r.transport, m, log)
	m.ObserveBytes("router_buffered_request_bytes", "Request body bytes held now (limit --max-buffered-request-bytes).",
		r.bodies.InUse)
	m.ObserveBytes("router_mirror_queued_bytes", "Bytes held by waiting and running shadow copies (limit --mirror-max-queued-bytes).",
		r.mirror.QueuedBytes)
	return r
}

// newStdLogger routes ReverseProxy's own messages (e.g. a failed copy to the client) into slog.
func newStdLogger(log *slog.Logger) *stdlog.Logger {
	return slog.NewLogLogger(log.Handler(), slog.LevelWarn)
}

// NewTransport is a keep-alive pool sized for many requests per endpoint. Compression is off
// so bodies and Accept-Encoding pass through unchanged.
func NewTransport(cfg settings.Settings) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: cfg.MaxIdleConnsPerEP,
		// Below the backends' keep-alive timeout, so the router closes an idle connection before
		// the backend does: a POST on a connection the backend is closing is not retried.
		IdleConnTimeout:        cfg.UpstreamIdleTimeout,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
		ResponseHeaderTimeout:  0, // the per-request context carries the timeout, body included
		MaxResponseHeaderBytes: 64 << 10,
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         32 << 10,
	}
}

// NewServer is the client-facing HTTP server with the router's client limits: headers within
// --read-header-timeout and --max-header-bytes (431 above), the body within
// --body-read-timeout (set per request by readBody; ReadTimeout is the backstop for requests
// the router answers itself, e.g. a body sent to /metrics).
func NewServer(cfg settings.Settings, h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout: cfg.ReadHeaderTimeout + cfg.BodyReadTimeout, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: cfg.MaxHeaderBytes, ErrorLog: newStdLogger(slog.Default())}
}

// LimitConnections bounds the client connections held open at once (--max-connections): past
// it, new ones wait in the kernel's accept queue instead of each costing a goroutine and its
// buffers (about 20 KiB) without bound, idle keep-alive connections included.
func LimitConnections(ln net.Listener, cfg settings.Settings) net.Listener {
	return netutil.LimitListener(ln, cfg.MaxConnections)
}

// SetSplit installs a new split; requests already forwarded keep the version they got.
func (r *Router) SetSplit(s split.Split) {
	old := r.split.Load()
	if old != nil && old.Equal(s) && old.Source == s.Source {
		return
	}
	r.split.Store(&s)
	rm := &routedMetrics{split: r.split.Load(), stable: r.metrics.For(s.Stable.Version, string(split.Stable))}
	if s.Candidate != nil {
		rm.candidate = r.metrics.For(s.Candidate.Version, string(split.Candidate))
	}
	r.routed.Store(rm)
	cand, candW, mir, mirP := "", 0, "", 0
	if s.Candidate != nil {
		cand, candW = s.Candidate.Version, s.Candidate.Weight
	}
	if s.Mirror != nil {
		mir, mirP = s.Mirror.Version, s.Mirror.Percent
	}
	r.metrics.SetSplit(s.Stable.Version, s.Stable.Weight, cand, candW, mir, mirP)
	r.log.Info("traffic split applied", "source", s.Source, "stable", s.Stable.Version,
		"stable_weight", s.Stable.Weight, "candidate", cand, "candidate_weight", candW,
		"mirror", mir, "mirror_percent", mirP, "sticky_header", s.StickyHeader)
}

// routedMetrics are the series of one split's stable and candidate, looked up once per split
// rather than once per request.
type routedMetrics struct {
	split             *split.Split
	stable, candidate *metrics.VersionMetrics
}

// metricsFor returns the series of the version a request was routed to under split s.
func (r *Router) metricsFor(s *split.Split, role split.Role, version string) *metrics.VersionMetrics {
	if rm := r.routed.Load(); rm != nil && rm.split == s {
		switch {
		case role == split.Stable:
			return rm.stable
		case role == split.Candidate && rm.candidate != nil:
			return rm.candidate
		}
	}
	return r.metrics.For(version, string(role)) // a split replaced while this request was admitted
}

// Split returns the split in force, or nil.
func (r *Router) Split() *split.Split { return r.split.Load() }

// SetEndpoints replaces a version's endpoints and reports entering or leaving panic routing.
func (r *Router) SetEndpoints(version string, a backend.Addrs) {
	ch := r.Pools.Set(version, a)
	r.metrics.SetPanicRouting(version, ch.Panic)
	now := r.Pools.Pool(version).Addrs() // normalized: sorted, so logs are deterministic
	if ch.Changed {
		r.log.Info("endpoints updated", "version", version, "endpoints", now.Ready, "not_ready", now.Fallback())
	}
	switch {
	case ch.Panic && !ch.WasPanic:
		r.log.Warn("panic routing: no ready endpoints, routing to not-ready ones (--panic-routing)",
			"version", version, "not_ready", now.Fallback(), "serving", now.Serving)
	case !ch.Panic && ch.WasPanic && len(now.Ready) > 0:
		r.log.Info("panic routing ended: ready endpoints are back", "version", version, "endpoints", now.Ready)
	case !ch.Panic && ch.WasPanic:
		r.log.Warn("panic routing ended: no endpoints left, ready or not", "version", version)
	}
}

// IsReady: a split (or the safe default) is in force and stable has an endpoint to route to:
// a ready one, or with --panic-routing a not-ready one (see docs/router.md, "Panic routing").
func (r *Router) IsReady() (bool, string) {
	if r.draining.Load() {
		return false, "shutting down"
	}
	s := r.split.Load()
	if s == nil {
		return false, "no traffic split yet: waiting for ModelRollout status.traffic (or --stable-version after --initial-sync-timeout)"
	}
	pool := r.Pools.Pool(s.Stable.Version)
	if pool.Len() == 0 {
		return false, "no ready endpoints for stable version " + s.Stable.Version + r.panicHint(pool)
	}
	if pool.IsPanic() {
		return true, fmt.Sprintf("ok, panic routing: stable version %s has no ready endpoints and is served by "+
			"its %d not-ready ones", s.Stable.Version, pool.Len())
	}
	return true, "ok"
}

// panicHint explains, when panic routing is off, why listed not-ready endpoints are not used.
func (r *Router) panicHint(pool *backend.Pool) string {
	if n := len(pool.Addrs().Fallback()); n > 0 && !r.cfg.PanicRouting {
		return fmt.Sprintf("; %d not-ready endpoint(s) listed but unused (--panic-routing=false)", n)
	}
	return ""
}

// Drain makes /readyz fail so the Service stops sending new requests.
func (r *Router) Drain() { r.draining.Store(true) }

// ServeHTTP routes the router's own endpoints (/metrics, /healthz, /readyz, /feedback) and
// forwards everything else.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/metrics":
		r.metricsH.ServeHTTP(w, req)
	case "/feedback":
		r.feedbackH.ServeHTTP(w, req)
	case "/healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case "/readyz":
		ok, why := r.IsReady()
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ready": ok, "reason": why})
	default:
		r.forward(w, req)
	}
}

// decideRoute picks role, version and whether to mirror for one request.
func decideRoute(s *split.Split, req *http.Request) (split.Role, string, bool) {
	bucket := rand.IntN(100)
	if s.StickyHeader != "" {
		if key := req.Header.Get(s.StickyHeader); key != "" {
			bucket = split.ComputeStickyBucket(*s, key)
		}
	}
	role, version := split.DecideRole(*s, bucket)
	mirrored := s.Mirror != nil && split.IsMirrored(*s, role, rand.IntN(100))
	return role, version, mirrored
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with KServe's error shape {"error": "..."}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
