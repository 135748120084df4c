// Package problem is the control plane's one error shape: RFC 9457
// application/problem+json documents with a stable machine-readable code.
//
// Handlers return a *Problem as an error; the HTTP layer writes it. Anything
// else that reaches the HTTP layer is an internal error whose detail is logged,
// never sent.
package problem

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// TypePrefix prefixes every problem type URI; the code completes it. The codes
// are listed in docs/api/errors.md.
const TypePrefix = "urn:edgeward:problem:"

// Stable codes shared by every area of the API.
const (
	CodeTokenMissing     = "token_missing"
	CodeTokenMalformed   = "token_malformed"
	CodeTokenInvalid     = "token_invalid"
	CodeTokenExpired     = "token_expired"
	CodeTokenRevoked     = "token_revoked"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeMalformedJSON    = "malformed_json"
	CodeJSONTooDeep      = "json_too_deep"
	CodeInvalidText      = "invalid_text"
	CodeInvalidParameter = "invalid_parameter"
	CodeValidationFailed = "validation_failed"
	CodeBodyTooLarge     = "body_too_large"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeConflict         = "conflict"
	CodeInternal         = "internal"
)

// Codes of the Idempotency-Key header (docs/api/README.md#idempotency).
const (
	// CodeIdempotencyKeyInProgress: a request with the key is still running.
	CodeIdempotencyKeyInProgress = "idempotency_key_in_progress"
	// CodeIdempotencyKeyReused: the key was used for a different request.
	CodeIdempotencyKeyReused = "idempotency_key_reused"
)

// Field names one failing part of a request.
type Field struct {
	Detail    string `json:"detail"`
	Pointer   string `json:"pointer,omitempty"`
	Parameter string `json:"parameter,omitempty"`
}

// Problem is an RFC 9457 problem document. It implements error.
type Problem struct {
	Type      string  `json:"type"`
	Title     string  `json:"title"`
	Status    int     `json:"status"`
	Detail    string  `json:"detail,omitempty"`
	Instance  string  `json:"instance,omitempty"`
	Code      string  `json:"code"`
	RequestID string  `json:"request_id,omitempty"`
	Errors    []Field `json:"errors,omitempty"`

	// Header holds response headers that belong to this problem, such as
	// WWW-Authenticate on a 401 or Allow on a 405.
	Header http.Header `json:"-"`
}

// New returns a problem with the given status, code and detail.
func New(status int, code, detail string) *Problem {
	return &Problem{
		Type:   TypePrefix + code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	}
}

// Newf is New with a formatted detail.
func Newf(status int, code, format string, args ...any) *Problem {
	return New(status, code, fmt.Sprintf(format, args...))
}

// NotFound says that no resource of the kind exists in the caller's tenant.
// It is also the answer for rows of other tenants, which must look absent.
func NotFound(kind string) *Problem {
	return Newf(http.StatusNotFound, CodeNotFound, "no %s with that id in this tenant", kind)
}

// Invalid is a 422 naming the body fields that break a rule.
func Invalid(detail string, fields ...Field) *Problem {
	p := New(http.StatusUnprocessableEntity, CodeValidationFailed, detail)
	p.Errors = fields
	return p
}

// Internal is the problem sent for any unexpected failure; the cause is logged
// by the caller, never sent.
func Internal() *Problem {
	return New(http.StatusInternalServerError, CodeInternal, "the server failed to handle this request; the request id identifies it in the logs")
}

func (p *Problem) Error() string {
	if p.Detail == "" {
		return fmt.Sprintf("%d %s", p.Status, p.Code)
	}
	return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail)
}

// With adds a response header and returns p.
func (p *Problem) With(key, value string) *Problem {
	if p.Header == nil {
		p.Header = http.Header{}
	}
	p.Header.Add(key, value)
	return p
}

// As reports whether err is, or wraps, a *Problem and returns it.
func As(err error) (*Problem, bool) {
	var p *Problem
	if errors.As(err, &p) {
		return p, true
	}
	return nil, false
}

// Write sends p as the response, completing instance and request id.
func Write(w http.ResponseWriter, r *http.Request, p *Problem, requestID string) {
	out := *p
	if out.Instance == "" && r != nil {
		out.Instance = r.URL.Path
	}
	if out.RequestID == "" {
		out.RequestID = requestID
	}
	for k, vs := range p.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(&out)
	body := buf.Bytes()
	if err != nil {
		// A Problem holds only strings and ints; this cannot fail.
		body = []byte(`{"type":"` + TypePrefix + CodeInternal + `","title":"Internal Server Error","status":500,"code":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(out.Status)
	_, _ = w.Write(body)
}
