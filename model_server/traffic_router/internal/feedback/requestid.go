// Package feedback attributes delayed ground truth to the version that answered: request ids
// on every answer, a bounded memory of recent answers, and POST /feedback. Reading order:
// requestid.go, memory.go (what an answer leaves behind), handler.go (the endpoint).
package feedback

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// RequestIDHeader carries the id both ways (canonical form, for direct header-map access).
const RequestIDHeader = "X-Request-Id"

// MaxRequestIDLen is the longest id a client may send.
const MaxRequestIDLen = 128

// IsValidRequestID: 1..MaxRequestIDLen characters of [A-Za-z0-9._:-].
func IsValidRequestID(id string) bool {
	if len(id) == 0 || len(id) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// NewRequestID is 128 bits from the operating system's CSPRNG, as 32 hex digits: nobody can
// guess the id of another client's answer and send feedback for it.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b[:])
}

// RequestIDOf is the request's id: the client's (checked), or a new one when it sent none.
// A client that names x-request-id in Connection made it hop-by-hop, so it is not its id.
// The error names the header and the expected form.
func RequestIDOf(h http.Header) (string, error) {
	vv := h[RequestIDHeader]
	if len(vv) == 0 || httpguts.HeaderValuesContainsToken(h["Connection"], RequestIDHeader) {
		return NewRequestID(), nil
	}
	if len(vv) > 1 {
		return "", fmt.Errorf("header x-request-id: sent %d times; expected one value", len(vv))
	}
	if !IsValidRequestID(vv[0]) {
		return "", fmt.Errorf("header x-request-id: expected 1 to %d characters of A-Z, a-z, 0-9, '.', '_', ':' "+
			"or '-' (or no header, and the router makes one), got %s", MaxRequestIDLen, quoteShort(vv[0]))
	}
	return vv[0], nil
}

// quoteShort quotes a client's value for a message, cut to 64 bytes (a header may be 64 KiB).
func quoteShort(v string) string {
	if len(v) > 64 {
		return fmt.Sprintf("%q... (%d bytes)", v[:64], len(v))
	}
	return fmt.Sprintf("%q", v)
}
