// What the router accepts from a client before any backend is involved: the paths it
// forwards, and the request body, read whole within size, memory and time bounds.
package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"modelrollout.dev/traffic-router/internal/metrics"
)

// repositoryPrefix is KServe's model-repository API (load, unload, index). No client of a
// rollout needs it, and one unload request takes a version down while it still reports ready.
const repositoryPrefix = "/v2/repository"

// refusePath says why a request path is not forwarded (message and status), or code 0 to
// forward it. The checks run on the decoded path: dot segments and empty segments are refused
// because a backend may resolve them (after decoding %2F or %2E) to a path the prefix check
// did not see. Messages quote the path as the client sent it.
func refusePath(u *url.URL) (msg string, code int) {
	path, sent := u.Path, u.EscapedPath()
	if !strings.HasPrefix(path, "/") {
		return fmt.Sprintf("request path %q: expected an absolute path such as /v2/models/<name>/infer", sent),
			http.StatusBadRequest
	}
	if path == "/" {
		return "", 0
	}
	for seg := range strings.SplitSeq(strings.TrimSuffix(path[1:], "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Sprintf("request path %q: empty, '.' or '..' segments are not forwarded; "+
				"send the plain path such as /v2/models/<name>/infer", sent), http.StatusBadRequest
		}
	}
	if lower := strings.ToLower(path); lower == repositoryPrefix || strings.HasPrefix(lower, repositoryPrefix+"/") {
		return fmt.Sprintf("request path %q: the model-repository API (%s/...) is not served through the router; "+
			"it forwards inference, metadata and health requests (/v1/models/..., /v2/models/..., /v2/health/...)",
			sent, repositoryPrefix), http.StatusNotFound
	}
	return "", 0
}

type tooLargeError struct{ limit int64 }

func (e tooLargeError) Error() string {
	return fmt.Sprintf("request body larger than %d bytes (limit --max-request-bytes=%d); "+
		"send shorter audio or split it into several requests", e.limit, e.limit)
}

type bufferFullError struct{ limit int64 }

func (e bufferFullError) Error() string {
	return fmt.Sprintf("router overloaded: request bodies being read or forwarded already hold %d bytes "+
		"(limit --max-buffered-request-bytes=%d); retry later", e.limit, e.limit)
}

// bodyChunk is the first allocation for a body and the step it grows by at least: a body is
// held in memory as it arrives, never sized up front from a Content-Length a client declared.
const bodyChunk = 64 << 10

// readBody reads the whole body within --body-read-timeout, refusing more than
// --max-request-bytes. Every byte of buffer is taken from the shared --max-buffered-request-bytes
// budget before it is allocated; held is what the caller must give back.
func (r *Router) readBody(rc *http.ResponseController, req *http.Request) (body []byte, held int64, err error) {
	limit := r.cfg.MaxRequestBytes
	if req.ContentLength > limit {
		return nil, 0, tooLargeError{limit}
	}
	if req.ContentLength == 0 || req.Body == nil || req.Body == http.NoBody {
		return nil, 0, nil
	}
	// ErrNotSupported (e.g. in tests without a server) leaves the server's ReadTimeout in force.
	_ = rc.SetReadDeadline(time.Now().Add(r.cfg.BodyReadTimeout))
	ceiling := limit + 1 // unknown length: one byte past the limit shows the body is too large
	if req.ContentLength > 0 {
		ceiling = req.ContentLength // the server never lets more than Content-Length through
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= ceiling {
				break
			}
			grow := min(max(int64(cap(buf)), bodyChunk), ceiling-int64(cap(buf)))
			if !r.bodies.TryTake(grow) {
				return nil, held, bufferFullError{r.bodies.Limit()}
			}
			held += grow
			buf = append(make([]byte, 0, int64(cap(buf))+grow), buf...)
		}
		n, rerr := req.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, held, rerr
		}
	}
	if int64(len(buf)) > limit {
		return nil, held, tooLargeError{limit}
	}
	return buf, held, nil
}

// rejectBody answers a body that could not be taken: 413 too large, 503 memory budget
// spent, 408 too slow, 400 malformed (bad chunked encoding, short body).
func (r *Router) rejectBody(w http.ResponseWriter, req *http.Request, err error) {
	var tl tooLargeError
	var bf bufferFullError
	switch {
	case errors.As(err, &tl):
		r.metrics.Reject(metrics.TooLarge)
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
	case errors.As(err, &bf):
		r.metrics.Reject(metrics.BufferFull)
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, os.ErrDeadlineExceeded):
		r.metrics.Reject(metrics.BodyTimeout)
		writeError(w, http.StatusRequestTimeout, fmt.Sprintf("request body not received within "+
			"--body-read-timeout=%s; send it faster or in smaller requests", r.cfg.BodyReadTimeout))
	default:
		// Also when the client went away: one that only half-closed its side still reads, and
		// an unanswered handler would give it an empty 200.
		r.metrics.Reject(metrics.BadRequest)
		writeError(w, http.StatusBadRequest, fmt.Sprintf("could not read the request body: %v", err))
	}
}
