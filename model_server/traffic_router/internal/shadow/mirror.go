// Mirror worker pool: a queue of shadow jobs bounded by count and by bytes, drained by a fixed
// number of workers, so a slow or dead mirror version can never hold up a user's request nor
// grow the router's memory past --mirror-max-queued-bytes.
package shadow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/budget"
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
	size          int64 // Size(), fixed when offered
}

// Size is what the job holds in memory, as counted against --mirror-max-queued-bytes: the
// request and stable bodies plus the header bytes (keys and values; map overhead ignored).
func (j Job) Size() int64 {
	n := int64(len(j.Body) + len(j.StableBody) + len(j.Method) + len(j.URI))
	for k, vv := range j.Header {
		n += int64(len(k))
		for _, v := range vv {
			n += int64(len(v))
		}
	}
	return n
}

// Mirror owns the queue and the workers.
type Mirror struct {
	queue     chan Job
	bytes     *budget.Bytes // held by queued and running jobs
	maxAnswer int64         // shadow answers larger than this are not compared (--mirror-max-body-bytes)
	pools     *backend.Registry
	transport http.RoundTripper
	metrics   *metrics.Metrics
	timeout   time.Duration
	log       *slog.Logger
}

// Limits bound the mirror: jobs waiting, bytes they hold, concurrency, time and answer size.
type Limits struct {
	Queue     int           // jobs waiting (--mirror-queue)
	MaxBytes  int64         // bytes held by waiting and running jobs (--mirror-max-queued-bytes)
	Workers   int           // concurrent shadow requests (--mirror-workers)
	Timeout   time.Duration // one shadow request, answer included (--mirror-timeout)
	MaxAnswer int64         // largest shadow answer read for comparison (--mirror-max-body-bytes)
}

// New starts lim.Workers goroutines that live until ctx ends.
func New(ctx context.Context, lim Limits, pools *backend.Registry, rt http.RoundTripper, m *metrics.Metrics,
	log *slog.Logger) *Mirror {
	mr := &Mirror{queue: make(chan Job, lim.Queue), bytes: budget.New(lim.MaxBytes), maxAnswer: lim.MaxAnswer,
		pools: pools, transport: rt, metrics: m, timeout: lim.Timeout, log: log}
	for range lim.Workers {
		go mr.work(ctx)
	}
	return mr
}

// Offer enqueues without blocking; a job that would take the queue over its count or its
// bytes is dropped and counted by reason.
func (mr *Mirror) Offer(j Job) bool {
	j.size = j.Size()
	if !mr.bytes.TryTake(j.size) {
		mr.metrics.MirrorDropped[metrics.DropBytes].Inc()
		return false
	}
	select {
	case mr.queue <- j:
		return true
	default:
		mr.bytes.Release(j.size)
		mr.metrics.MirrorDropped[metrics.DropQueueFull].Inc()
		return false
	}
}

// QueuedBytes is what waiting and running jobs hold now (router_mirror_queued_bytes).
func (mr *Mirror) QueuedBytes() int64 { return mr.bytes.InUse() }

func (mr *Mirror) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-mr.queue:
			mr.handle(ctx, j)
			mr.bytes.Release(j.size) // the job's bodies are garbage from here on
		}
	}
}

func (mr *Mirror) handle(ctx context.Context, j Job) {
	status, body, err := mr.send(ctx, j)
	outcome := metrics.Unavailable
	if err == nil {
		outcome = metrics.OutcomeOf(status)
	}
	pair := mr.metrics.Pair(j.StableVersion, j.MirrorVersion)
	pair.MirrorReqs[outcome].Inc()
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
	record(pair, cmp)
}

// record counts one comparison under its (stable, candidate) pair.
func record(pair *metrics.PairMetrics, cmp Comparison) {
	pair.Compared(cmp.Result)
	for _, d := range cmp.Deltas {
		pair.ConfDelta.Observe(d)
	}
	for _, result := range SegmentResults {
		if n := cmp.Segments[result]; n > 0 {
			pair.SegmentsCompared(result, n)
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
	// Bounded like the stable side: a candidate answering megabytes (or without end) costs at
	// most maxAnswer+1 bytes per worker and counts as an unreadable answer.
	body, err := io.ReadAll(io.LimitReader(resp.Body, mr.maxAnswer+1))
	if err == nil && int64(len(body)) > mr.maxAnswer {
		err = fmt.Errorf("shadow answer larger than %d bytes (limit --mirror-max-body-bytes)", mr.maxAnswer)
	}
	return resp.StatusCode, body, err
}
