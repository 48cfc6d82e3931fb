// POST /feedback: a client reports the true label(s) of an earlier answer by its request id;
// the router counts them correct or incorrect for the version and slice that answered.
package feedback

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"golang.org/x/time/rate"
)

// MaxBodyBytes bounds a feedback body (413 above).
const MaxBodyBytes = 8 << 10

// Reasons a feedback is refused (router_feedback_rejected_total{reason}).
const (
	Malformed   = "malformed"    // 400 (and 405: not a POST)
	UnknownID   = "unknown_id"   // 404
	Duplicate   = "duplicate"    // 409
	BadLabel    = "bad_label"    // 422
	TooLarge    = "too_large"    // 413
	RateLimited = "rate_limited" // 429
)

// Counter is where the handler counts (internal/metrics implements it).
type Counter interface {
	FeedbackCounted(version, slice string, correct, incorrect int)
	FeedbackRejected(reason string)
}

// Handler serves POST /feedback against a Memory, within a token bucket.
type Handler struct {
	mem     *Memory
	limiter *rate.Limiter
	count   Counter
	limits  string // the rate flags, for the 429 message
}

// NewHandler admits perSecond feedbacks on average, burst at once (--feedback-rate, --feedback-burst).
func NewHandler(mem *Memory, perSecond float64, burst int, count Counter) *Handler {
	return &Handler{mem: mem, limiter: rate.NewLimiter(rate.Limit(perSecond), burst), count: count,
		limits: fmt.Sprintf("--feedback-rate=%g per second, --feedback-burst=%d", perSecond, burst)}
}

// Answer is the 200 body.
type Answer struct {
	RequestID string `json:"requestId"`
	Version   string `json:"version"`
	Slice     string `json:"slice"`
	Correct   int    `json:"correct"`
	Incorrect int    `json:"incorrect"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.refuse(w, http.StatusMethodNotAllowed, Malformed, fmt.Sprintf("method %s: /feedback takes POST "+
			`with a JSON body {"requestId": "...", "label": "..."}`, req.Method))
		return
	}
	// The bucket is spent before the body is read, so a flood costs the router no parsing.
	if !h.limiter.Allow() {
		w.Header().Set("Retry-After", "1")
		h.refuse(w, http.StatusTooManyRequests, RateLimited, "feedback over the router's rate limit ("+h.limits+"); retry later")
		return
	}
	if req.ContentLength > MaxBodyBytes {
		h.tooLarge(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxBodyBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		h.tooLarge(w)
		return
	case err != nil:
		h.refuse(w, http.StatusBadRequest, Malformed, fmt.Sprintf("could not read the feedback body: %v", err))
		return
	}
	fb, err := ParseBody(body)
	if err != nil {
		h.refuse(w, http.StatusBadRequest, Malformed, err.Error())
		return
	}
	h.settle(w, fb)
}

func (h *Handler) settle(w http.ResponseWriter, fb Body) {
	got, err := h.mem.Settle(fb.RequestID, fb.Labels, fb.Single)
	var unknown UnknownIDError
	var dup DuplicateError
	var count CountError
	var label LabelError
	switch {
	case errors.As(err, &unknown):
		msg := fmt.Sprintf("%v (the router keeps the last --feedback-max-ids=%d answers, each for "+
			"--feedback-max-age=%s; only the router replica that answered knows the id)", err, h.mem.maxIDs, h.mem.maxAge)
		h.refuse(w, http.StatusNotFound, UnknownID, msg)
	case errors.As(err, &dup):
		h.refuse(w, http.StatusConflict, Duplicate, err.Error())
	case errors.As(err, &count):
		h.refuse(w, http.StatusBadRequest, Malformed, err.Error())
	case errors.As(err, &label):
		h.refuse(w, http.StatusUnprocessableEntity, BadLabel, err.Error())
	case err != nil:
		h.refuse(w, http.StatusInternalServerError, Malformed, err.Error()) // not reached: Settle has no other error
	default:
		h.count.FeedbackCounted(got.Version, got.Slice, got.Correct, got.Incorrect)
		writeJSON(w, http.StatusOK, Answer{RequestID: fb.RequestID, Version: got.Version, Slice: got.Slice,
			Correct: got.Correct, Incorrect: got.Incorrect})
	}
}

func (h *Handler) tooLarge(w http.ResponseWriter) {
	h.refuse(w, http.StatusRequestEntityTooLarge, TooLarge, "feedback body larger than "+
		strconv.Itoa(MaxBodyBytes)+" bytes; send one requestId per feedback")
}

func (h *Handler) refuse(w http.ResponseWriter, code int, reason, msg string) {
	h.count.FeedbackRejected(reason)
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
