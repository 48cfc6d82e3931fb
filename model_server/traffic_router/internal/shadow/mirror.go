// Mirror worker pool: a bounded queue of shadow jobs, drained by a fixed number of workers,
// so a slow or dead mirror version can never hold up a user's request.
package shadow

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/metrics"
)

// Job is one mirrored request plus the stable answer the user received.
type Job struct {
	Method        string
	URI           string // path and query, as received
	Header        http.Header
	Body          []byte // the request body (never reused, so safe to read later)
	StableVersion string
	StableStatus  int
	StableBody    []byte // nil when the stable answer was too large to compare
	MirrorVersion string
}

// Mirror owns the queue and the workers.
type Mirror struct {
	queue     chan Job
	pools     *backend.Registry
	transport http.RoundTripper
	metrics   *metrics.Metrics
	timeout   time.Duration
	log       *slog.Logger
}

// New starts `workers` goroutines that live until ctx ends.
func New(ctx context.Context, queue, workers int, timeout time.Duration, pools *backend.Registry,
	rt http.RoundTripper, m *metrics.Metrics, log *slog.Logger) *Mirror {
	mr := &Mirror{queue: make(chan Job, queue), pools: pools, transport: rt, metrics: m, timeout: timeout, log: log}
	for range workers {
		go mr.work(ctx)
	}
	return mr
}

// Offer enqueues without blocking; a full queue drops the job and counts it.
func (mr *Mirror) Offer(j Job) bool {
	select {
	case mr.queue <- j:
		return true
	default:
		mr.metrics.MirrorDropped.Inc()
		return false
	}
}

func (mr *Mirror) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-mr.queue:
			mr.handle(ctx, j)
		}
	}
}

func (mr *Mirror) handle(ctx context.Context, j Job) {
	status, body, err := mr.send(ctx, j)
	outcome := metrics.Unavailable
	if err == nil {
		outcome = metrics.OutcomeOf(status)
	}
	mr.metrics.MirrorReqs.WithLabelValues(mr.metrics.Rollout, j.MirrorVersion, outcome).Inc()
	if j.StableStatus != http.StatusOK || j.StableBody == nil {
		return // nothing trustworthy to compare against
	}
	var cmp Comparison
	if err == nil && status == http.StatusOK {
		var cmpErr error
		cmp, cmpErr = EvaluateAgreement(j.StableBody, body)
		if errors.Is(cmpErr, ErrStableUnusable) {
			return
		}
		if cmpErr != nil {
			mr.log.Debug("shadow answer unreadable", "version", j.MirrorVersion, "error", cmpErr.Error())
		}
	} else {
		cmp = EvaluateFailedShadow(j.StableBody)
	}
	if cmp.SegmentsErr != nil {
		mr.log.Debug("shadow segments unreadable", "version", j.MirrorVersion, "error", cmp.SegmentsErr.Error())
	}
	mr.record(j, cmp)
}

// record counts one comparison under its (stable, candidate) pair.
func (mr *Mirror) record(j Job, cmp Comparison) {
	labels := []string{mr.metrics.Rollout, j.StableVersion, j.MirrorVersion}
	mr.metrics.Comparisons.WithLabelValues(append(labels, cmp.Result)...).Inc()
	hist := mr.metrics.ConfDelta.WithLabelValues(labels...)
	for _, d := range cmp.Deltas {
		hist.Observe(d)
	}
	for _, result := range SegmentResults {
		if n := cmp.Segments[result]; n > 0 {
			mr.metrics.SegmentComps.WithLabelValues(append(labels, result)...).Add(float64(n))
		}
	}
}

// send delivers the copy to one endpoint of the mirror version (no retry: shadow traffic is
// a sample, and a retry would double the load a struggling candidate sees).
func (mr *Mirror) send(ctx context.Context, j Job) (int, []byte, error) {
	ep := mr.pools.Pool(j.MirrorVersion).Pick(nil, time.Now())
	if ep == nil {
		return 0, nil, errors.New("no endpoints for mirror version " + j.MirrorVersion)
	}
	ctx, cancel := context.WithTimeout(ctx, mr.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, j.Method, "http://"+ep.Addr+j.URI, bytes.NewReader(j.Body))
	if err != nil {
		return 0, nil, err
	}
	req.Header = j.Header
	resp, err := mr.transport.RoundTrip(req)
	if err != nil {
		mr.log.Debug("mirror request failed", "version", j.MirrorVersion, "endpoint", ep.Addr, "error", err.Error())
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, body, err
}
