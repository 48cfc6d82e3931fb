// Package metrics defines the router half of the metric contract (names and labels are
// pinned by tests) and caches per-version children so the hot path does no label hashing.
package metrics

import (
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Outcomes of a routed request (router_requests_total{outcome}).
const (
	OK          = "ok"
	ClientError = "client_error"
	ServerError = "server_error"
	Unavailable = "unavailable"
)

// Rejection reasons (router_rejected_total{reason}).
const (
	TooLarge    = "too_large"    // 413: body over --max-request-bytes
	Overloaded  = "overloaded"   // 503: --max-concurrency requests in flight
	Timeout     = "timeout"      // 504: no answer within --request-timeout
	BodyTimeout = "body_timeout" // 408: body not received within --body-read-timeout
	BufferFull  = "buffer_full"  // 503: bodies held reached --max-buffered-request-bytes
	BadRequest  = "bad_request"  // 400/404: unreadable body, or a path the router does not forward
)

// Reasons a shadow copy is dropped (router_mirror_dropped_total{reason}).
const (
	DropQueueFull = "queue_full" // --mirror-queue copies already waiting
	DropBytes     = "bytes"      // the copy would take the queue over --mirror-max-queued-bytes
)

// Results of fed-back instances (router_feedback_total{result}).
const (
	Correct   = "correct"
	Incorrect = "incorrect"
)

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
var deltaBuckets = []float64{-1, -.5, -.3, -.2, -.1, -.05, -.02, 0, .02, .05, .1, .2, .3, .5, 1}

// Metrics is every router metric, registered on its own registry.
type Metrics struct {
	Rollout       string
	Registry      *prometheus.Registry
	Requests      *prometheus.CounterVec
	Duration      *prometheus.HistogramVec
	RequestBytes  *prometheus.CounterVec
	ResponseBytes *prometheus.CounterVec
	InFlight      prometheus.Gauge
	Rejected      *prometheus.CounterVec
	Retries       *prometheus.CounterVec
	Weight        *prometheus.GaugeVec
	MirrorPercent *prometheus.GaugeVec
	PanicRouting  *prometheus.GaugeVec
	MirrorReqs    *prometheus.CounterVec
	MirrorDropped map[string]prometheus.Counter // by DropQueueFull / DropBytes
	Comparisons   *prometheus.CounterVec
	SegmentComps  *prometheus.CounterVec
	ConfDelta     *prometheus.HistogramVec
	Feedback      *prometheus.CounterVec
	FbRejected    *prometheus.CounterVec
	fbRejected    map[string]prometheus.Counter // by feedback rejection reason
	children      sync.Map                      // version+"\x00"+role -> *VersionMetrics
	rejected      map[string]prometheus.Counter // by reason, resolved once: Reject does no label hashing
	lastPair      atomic.Pointer[PairMetrics]   // the shadow pair last asked for (see Pair)
}

// VersionMetrics are the pre-resolved series of one (version, role).
type VersionMetrics struct {
	Outcomes      map[string]prometheus.Counter
	Duration      prometheus.Observer
	RequestBytes  prometheus.Counter
	ResponseBytes prometheus.Counter
	Retries       prometheus.Counter
}

// New builds and registers the metrics of one rollout's router.
func New(rollout string) *Metrics {
	c := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		Rollout:       rollout,
		Registry:      prometheus.NewRegistry(),
		Requests:      c("router_requests_total", "Requests routed, by version, role and outcome.", "rollout", "version", "role", "outcome"),
		RequestBytes:  c("router_request_bytes_total", "Request body bytes forwarded.", "rollout", "version"),
		ResponseBytes: c("router_response_bytes_total", "Response body bytes returned.", "rollout", "version"),
		Rejected:      c("router_rejected_total", "Requests the router answered itself: too_large (413), overloaded or buffer_full (503), timeout (504), body_timeout (408), bad_request (400/404).", "rollout", "reason"),
		Retries:       c("router_upstream_retries_total", "Requests retried on another endpoint after a connection failure.", "rollout", "version"),
		MirrorReqs:    c("router_mirror_requests_total", "Shadow copies sent, by outcome.", "rollout", "version", "outcome"),
		Comparisons:   c("router_shadow_comparisons_total", "Shadow answers compared with the stable answer.", "rollout", "stable_version", "candidate_version", "result"),
		SegmentComps: c("router_shadow_segment_comparisons_total",
			"Stable segments compared with the shadow's by time overlap (agree, disagree, missing, error), plus unmatched shadow segments (extra).",
			"rollout", "stable_version", "candidate_version", "result"),
		Feedback: c("router_feedback_total",
			"Fed-back instances (POST /feedback) by the version and slice that answered: result correct or incorrect.",
			"rollout", "version", "slice", "result"),
		FbRejected: c("router_feedback_rejected_total",
			"Feedback refused: malformed (400/405), unknown_id (404), duplicate (409), bad_label (422), too_large (413), rate_limited (429).",
			"rollout", "reason"),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "router_request_duration_seconds", Help: "Time from request read to response written, upstream included.",
			Buckets: latencyBuckets}, []string{"rollout", "version", "role"}),
		ConfDelta: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "router_shadow_confidence_delta", Help: "Candidate confidence minus stable confidence, per prediction.",
			Buckets: deltaBuckets}, []string{"rollout", "stable_version", "candidate_version"}),
		Weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "router_traffic_weight",
			Help: "Percent of traffic the router sends to a version."}, []string{"rollout", "version", "role"}),
		MirrorPercent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "router_mirror_percent",
			Help: "Percent of stable requests copied to the mirror version."}, []string{"rollout", "version"}),
		PanicRouting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "router_panic_routing",
			Help: "1 while a version has no ready endpoint and is served from its not-ready ones, else 0."},
			[]string{"rollout", "version"}),
	}
	inFlight := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "router_in_flight_requests",
		Help: "Requests being served."}, []string{"rollout"})
	dropped := c("router_mirror_dropped_total", "Shadow copies dropped: queue_full (--mirror-queue) or bytes (--mirror-max-queued-bytes).", "rollout", "reason")
	m.InFlight = inFlight.WithLabelValues(rollout)
	m.MirrorDropped = map[string]prometheus.Counter{
		DropQueueFull: dropped.WithLabelValues(rollout, DropQueueFull), DropBytes: dropped.WithLabelValues(rollout, DropBytes)}
	m.Registry.MustRegister(m.Requests, m.Duration, m.RequestBytes, m.ResponseBytes, inFlight, m.Rejected,
		m.Retries, m.Weight, m.MirrorPercent, m.PanicRouting, m.MirrorReqs, dropped, m.Comparisons, m.SegmentComps, m.ConfDelta,
		m.Feedback, m.FbRejected, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.rejected = map[string]prometheus.Counter{}
	for _, reason := range []string{TooLarge, Overloaded, Timeout, BodyTimeout, BufferFull, BadRequest} {
		// export zeros so rate() has a series from the start
		m.rejected[reason] = m.Rejected.WithLabelValues(rollout, reason)
	}
	m.fbRejected = map[string]prometheus.Counter{}
	for _, reason := range FeedbackReasons {
		m.fbRejected[reason] = m.FbRejected.WithLabelValues(rollout, reason)
	}
	return m
}

// FeedbackReasons are router_feedback_rejected_total's reasons (internal/feedback names them).
var FeedbackReasons = []string{"malformed", "unknown_id", "duplicate", "bad_label", "too_large", "rate_limited"}

// FeedbackCounted adds one accepted feedback's instances; both results get a series, so a
// ratio of the two has data from the first feedback on.
func (m *Metrics) FeedbackCounted(version, slice string, correct, incorrect int) {
	m.Feedback.WithLabelValues(m.Rollout, version, slice, Correct).Add(float64(correct))
	m.Feedback.WithLabelValues(m.Rollout, version, slice, Incorrect).Add(float64(incorrect))
}

// FeedbackRejected counts one refused feedback.
func (m *Metrics) FeedbackRejected(reason string) {
	if c, ok := m.fbRejected[reason]; ok {
		c.Inc()
		return
	}
	m.FbRejected.WithLabelValues(m.Rollout, reason).Inc()
}

// ObserveBytes exports a gauge read from fn at scrape time (the memory budgets in use).
func (m *Metrics) ObserveBytes(name, help string, fn func() int64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help,
		ConstLabels: prometheus.Labels{"rollout": m.Rollout}}, func() float64 { return float64(fn()) }))
}

// For returns the cached series of (version, role).
func (m *Metrics) For(version, role string) *VersionMetrics {
	key := version + "\x00" + role
	if v, ok := m.children.Load(key); ok {
		return v.(*VersionMetrics)
	}
	vm := &VersionMetrics{
		Outcomes:      map[string]prometheus.Counter{},
		Duration:      m.Duration.WithLabelValues(m.Rollout, version, role),
		RequestBytes:  m.RequestBytes.WithLabelValues(m.Rollout, version),
		ResponseBytes: m.ResponseBytes.WithLabelValues(m.Rollout, version),
		Retries:       m.Retries.WithLabelValues(m.Rollout, version),
	}
	for _, o := range []string{OK, ClientError, ServerError, Unavailable} {
		vm.Outcomes[o] = m.Requests.WithLabelValues(m.Rollout, version, role, o)
	}
	v, _ := m.children.LoadOrStore(key, vm)
	return v.(*VersionMetrics)
}

// Reject counts a request the router answered itself.
func (m *Metrics) Reject(reason string) {
	if c, ok := m.rejected[reason]; ok {
		c.Inc()
		return
	}
	m.Rejected.WithLabelValues(m.Rollout, reason).Inc()
}

// PairMetrics are the pre-resolved shadow series of one (stable, mirror) version pair.
type PairMetrics struct {
	Stable, Mirror string
	MirrorReqs     map[string]prometheus.Counter // by outcome (OK, ClientError, ServerError, Unavailable)
	ConfDelta      prometheus.Observer
	m              *Metrics
	mu             sync.Mutex                    // guards the two maps below, filled on first use
	comparisons    map[string]prometheus.Counter // by comparison result
	segments       map[string]prometheus.Counter // by segment result
}

// Pair returns the shadow series of (stable, mirror). The split rarely changes, so the pair
// last asked for is kept and the usual call resolves no labels at all.
func (m *Metrics) Pair(stable, mirror string) *PairMetrics {
	if p := m.lastPair.Load(); p != nil && p.Stable == stable && p.Mirror == mirror {
		return p
	}
	p := &PairMetrics{Stable: stable, Mirror: mirror, MirrorReqs: map[string]prometheus.Counter{},
		ConfDelta: m.ConfDelta.WithLabelValues(m.Rollout, stable, mirror), m: m,
		comparisons: map[string]prometheus.Counter{}, segments: map[string]prometheus.Counter{}}
	for _, o := range []string{OK, ClientError, ServerError, Unavailable} {
		p.MirrorReqs[o] = m.MirrorReqs.WithLabelValues(m.Rollout, mirror, o)
	}
	m.lastPair.Store(p)
	return p
}

// Compared counts one comparison result (router_shadow_comparisons_total).
func (p *PairMetrics) Compared(result string) {
	p.counter(p.comparisons, p.m.Comparisons, result).Inc()
}

// SegmentsCompared adds n segment results (router_shadow_segment_comparisons_total).
func (p *PairMetrics) SegmentsCompared(result string, n int) {
	p.counter(p.segments, p.m.SegmentComps, result).Add(float64(n))
}

func (p *PairMetrics) counter(cache map[string]prometheus.Counter, vec *prometheus.CounterVec,
	result string) prometheus.Counter {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := cache[result]
	if !ok {
		c = vec.WithLabelValues(p.m.Rollout, p.Stable, p.Mirror, result)
		cache[result] = c
	}
	return c
}

// SetSplit publishes the current weights and mirror share, dropping series of old versions.
func (m *Metrics) SetSplit(stable string, stableW int, cand string, candW int, mirror string, mirrorP int) {
	m.Weight.Reset()
	m.Weight.WithLabelValues(m.Rollout, stable, "stable").Set(float64(stableW))
	if cand != "" {
		m.Weight.WithLabelValues(m.Rollout, cand, "candidate").Set(float64(candW))
	}
	m.MirrorPercent.Reset()
	if mirror != "" {
		m.MirrorPercent.WithLabelValues(m.Rollout, mirror).Set(float64(mirrorP))
	}
}

// SetPanicRouting publishes whether a version is served from not-ready endpoints.
func (m *Metrics) SetPanicRouting(version string, on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.PanicRouting.WithLabelValues(m.Rollout, version).Set(v)
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// OutcomeOf classifies an upstream status code.
func OutcomeOf(status int) string {
	switch {
	case status >= 500:
		return ServerError
	case status >= 400:
		return ClientError
	default:
		return OK
	}
}
