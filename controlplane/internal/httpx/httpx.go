// Package httpx is the HTTP layer every REST request passes through before a
// handler sees it: request ids, the access log, panic recovery, metrics, and
// the gate that enforces specs/openapi.yaml — routing to an operation,
// authentication, the operation's roles, body limits, strict JSON and schema
// validation. A handler therefore never sees a request the spec forbids or a
// caller whose role the spec does not list. The gate also answers retries
// that carry an Idempotency-Key (idempotency.go).
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/jsoncheck"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// DefaultMaxBodyBytes bounds a request body.
const DefaultMaxBodyBytes = 1 << 20

// Authenticator checks a request's credentials and returns a context that
// carries the caller (see package caller), or a 401 problem.
type Authenticator interface {
	Authenticate(r *http.Request) (context.Context, error)
	// RecordDenied audits an authenticated caller refused by role.
	RecordDenied(ctx context.Context, operationID string, r *http.Request) error
}

// AgentAuthenticator checks a request's client certificate for operations
// marked x-edgeward-auth: agent-certificate, returning a context that
// carries the agent, or a 401 problem.
type AgentAuthenticator interface {
	AuthenticateAgent(r *http.Request) (context.Context, error)
}

// Config wires the gate.
type Config struct {
	Index          *api.Index
	Auth           Authenticator
	AgentAuth      AgentAuthenticator
	Logger         *slog.Logger
	Metrics        *Metrics
	MaxBodyBytes   int64
	TrustedProxies []netip.Prefix
	// Pool keeps the Idempotency-Key records (see idempotency.go).
	Pool db.Beginner
	// CursorKeys sign list cursors (the first) and verify them (any); see
	// page.Binding. Without keys, cursors are valid within this process only.
	CursorKeys [][]byte
}

type requestIDKey struct{}
type operationKey struct{}

// RequestID returns the request id of ctx.
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey{}).(string)
	return s
}

// OperationFrom returns the spec operation a request was routed to.
func OperationFrom(ctx context.Context) *api.Operation {
	op, _ := ctx.Value(operationKey{}).(*api.Operation)
	return op
}

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// Handler wraps next, which serves the operations of the spec, in the gate.
func Handler(cfg Config, next http.Handler) http.Handler {
	cfg = cfg.withDefaults()
	return cfg.instrument(func(w *recorder, r *http.Request) { cfg.serve(w, r, next) })
}

// RPCHandler wraps the agent protocol's Connect handlers in the same request
// ids, access log, recovery and metrics; the operation is the procedure.
// Connect does its own validation and the handlers authenticate agents.
func RPCHandler(cfg Config, next http.Handler) http.Handler {
	cfg = cfg.withDefaults()
	return cfg.instrument(func(w *recorder, r *http.Request) {
		w.procedure = r.URL.Path
		next.ServeHTTP(w, r)
		// gRPC carries errors in trailers with HTTP 200.
		if s := w.Header().Get("Grpc-Status"); s != "" && s != "0" {
			w.markFailed()
		}
	})
}

func (cfg Config) withDefaults() Config {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

func (cfg Config) instrument(serve func(*recorder, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID.MatchString(id) {
			id = uuid.Must(uuid.NewV7()).String()
		}
		w.Header().Set("X-Request-Id", id)
		ctx := context.WithValue(r.Context(), requestIDKey{}, id)
		ctx = audit.WithRequest(ctx, audit.Request{ID: id, SourceIP: sourceIP(r, cfg.TrustedProxies)})
		r = r.WithContext(ctx)
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}

		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				cfg.Logger.Error("panic", "request_id", id, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if !rec.wroteHeader {
					problem.Write(rec, r, problem.Internal(), id)
				}
			}
			cfg.finish(rec, r, start)
		}()
		serve(rec, r)
	})
}

func (cfg Config) serve(w *recorder, r *http.Request, next http.Handler) {
	id := RequestID(r.Context())
	fail := func(p *problem.Problem) { problem.Write(w, r, p, id) }

	op, params, allowed := cfg.Index.Match(r.Method, r.URL.EscapedPath())
	if op == nil {
		if len(allowed) > 0 {
			fail(problem.Newf(http.StatusMethodNotAllowed, problem.CodeMethodNotAllowed, "%s is not allowed here; allowed: %s", r.Method, strings.Join(allowed, ", ")).
				With("Allow", strings.Join(allowed, ", ")))
			return
		}
		fail(problem.New(http.StatusNotFound, problem.CodeNotFound, "no such API path"))
		return
	}
	w.operation = op
	ctx := context.WithValue(r.Context(), operationKey{}, op)
	r = r.WithContext(ctx)

	switch {
	case op.AgentAuth:
		if cfg.AgentAuth == nil {
			fail(problem.New(http.StatusNotImplemented, "not_implemented", "agent authentication is not configured"))
			return
		}
		agentCtx, err := cfg.AgentAuth.AuthenticateAgent(r)
		if err != nil {
			cfg.writeError(w, r, err)
			return
		}
		r = r.WithContext(agentCtx)
	case !op.Public:
		authCtx, err := cfg.Auth.Authenticate(r)
		if err != nil {
			cfg.writeError(w, r, err)
			return
		}
		r = r.WithContext(authCtx)
		c, _ := caller.From(authCtx)
		w.caller = c
		if !op.Allows(c.Role) {
			if err := cfg.Auth.RecordDenied(authCtx, op.ID, r); err != nil {
				cfg.Logger.Error("record denied call", "request_id", id, "error", err)
			}
			fail(problem.Newf(http.StatusForbidden, problem.CodeForbidden, "the %s role may not call %s", c.Role, op.ID))
			return
		}
		if c.Role == caller.RoleAuditor {
			// Auditors only read; PostgreSQL enforces it for every query.
			r = r.WithContext(db.WithReadOnly(r.Context()))
		}
	}

	if p := checkParams(r, params); p != nil {
		fail(p)
		return
	}
	r = r.WithContext(page.WithBinding(r.Context(), cfg.CursorKeys, op.ID, params, r.URL.Query()))
	body, p := cfg.readBody(r, op)
	if p != nil {
		fail(p)
		return
	}
	key, hasKey, p := idempotencyKey(r)
	if p != nil && op.Idempotent {
		fail(p)
		return
	}
	if p := validate(r, op, cfg.Index.Doc, params, body); p != nil {
		fail(p)
		return
	}
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if hasKey && op.Idempotent {
		cfg.serveIdempotent(w, r, op, key, body, next)
		return
	}
	next.ServeHTTP(w, r)
}

// readBody enforces the content type, the size limit and JSON syntax.
func (cfg Config) readBody(r *http.Request, op *api.Operation) ([]byte, *problem.Problem) {
	if !op.HasBody {
		if r.ContentLength == 0 || r.Body == nil {
			return nil, nil
		}
		var one [1]byte
		if n, _ := io.ReadFull(r.Body, one[:]); n > 0 {
			return nil, problem.New(http.StatusBadRequest, "unexpected_body", "this operation takes no request body")
		}
		return nil, nil
	}
	if r.ContentLength > cfg.MaxBodyBytes {
		return nil, tooLarge(cfg.MaxBodyBytes)
	}
	if !op.BodyRequired && (r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody) {
		return nil, nil
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil, problem.New(http.StatusBadRequest, problem.CodeMalformedJSON, "a JSON body is required: send one as application/json")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, problem.New(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia, "send the request body as application/json").
			With("Accept", "application/json")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, problem.New(http.StatusBadRequest, problem.CodeMalformedJSON, "the request body could not be read")
	}
	if int64(len(body)) > cfg.MaxBodyBytes {
		return nil, tooLarge(cfg.MaxBodyBytes)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, problem.New(http.StatusBadRequest, problem.CodeMalformedJSON, "a JSON body is required: the request body is empty")
	}
	if p := checkJSON(body); p != nil {
		return nil, p
	}
	return body, nil
}

func tooLarge(limit int64) *problem.Problem {
	return problem.Newf(http.StatusRequestEntityTooLarge, problem.CodeBodyTooLarge, "the request body exceeds %d bytes", limit)
}

// checkJSON refuses bodies that are not exactly one JSON value the API is
// willing to decode (see package jsoncheck: nesting depth, repeated keys,
// text that is not valid Unicode or holds NUL).
func checkJSON(body []byte) *problem.Problem {
	err := jsoncheck.Check(body, jsoncheck.MaxDepth)
	if err == nil {
		return nil
	}
	code := problem.CodeMalformedJSON
	switch err.Kind {
	case jsoncheck.KindTooDeep:
		code = problem.CodeJSONTooDeep
	case jsoncheck.KindInvalidText:
		code = problem.CodeInvalidText
	}
	detail := "in the request body, " + err.Detail
	if rest, ok := strings.CutPrefix(err.Detail, "the body "); ok {
		detail = "the request body " + rest
	}
	p := problem.New(http.StatusBadRequest, code, detail)
	if err.Pointer != "" {
		p.Errors = []problem.Field{{Pointer: err.Pointer, Detail: err.Detail}}
	}
	return p
}

// checkParams refuses query and path parameters that are not valid text:
// undecodable percent-escapes, bytes that are not UTF-8, and NUL, which no
// filter can mean and PostgreSQL cannot compare.
func checkParams(r *http.Request, params map[string]string) *problem.Problem {
	bad := func(name, detail string) *problem.Problem {
		p := problem.Newf(http.StatusBadRequest, problem.CodeInvalidParameter, "the parameter %q is not valid text: %s", name, detail)
		p.Errors = []problem.Field{{Parameter: name, Detail: detail}}
		return p
	}
	text := func(name, v string) *problem.Problem {
		switch {
		case !utf8.ValidString(v):
			return bad(name, "it is not UTF-8")
		case strings.IndexByte(v, 0) >= 0:
			return bad(name, "it contains NUL")
		}
		return nil
	}
	for name, v := range params {
		if p := text(name, v); p != nil {
			return p
		}
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		p := problem.New(http.StatusBadRequest, problem.CodeInvalidParameter, "the query string is not valid: "+err.Error())
		return p
	}
	for name, values := range query {
		if p := text("query", name); p != nil {
			return p
		}
		for _, v := range values {
			if p := text(name, v); p != nil {
				return p
			}
		}
	}
	return nil
}

// validate checks parameters and body against the operation's schema.
func validate(r *http.Request, op *api.Operation, doc *openapi3.T, params map[string]string, body []byte) *problem.Problem {
	vr := r.Clone(r.Context())
	if body != nil {
		vr.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		vr.Body = http.NoBody
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    vr,
		PathParams: params,
		Route:      op.Route(doc),
		Options: &openapi3filter.Options{
			AuthenticationFunc:                openapi3filter.NoopAuthenticationFunc,
			MultiError:                        true,
			RejectWhenRequestBodyNotSpecified: true,
		},
	}
	err := openapi3filter.ValidateRequest(r.Context(), in)
	if err == nil {
		return nil
	}
	return validationProblem(err)
}

// validationProblem turns kin-openapi's errors into a problem naming each
// failing parameter or body field.
func validationProblem(err error) *problem.Problem {
	var fields []problem.Field
	bodyFailed := false
	var walk func(error)
	walk = func(err error) {
		// Check the outer type first: a RequestError unwraps to its inner
		// MultiError, and errors.As would lose which parameter failed.
		switch e := err.(type) {
		case openapi3.MultiError:
			for _, inner := range e {
				walk(inner)
			}
			return
		case *openapi3filter.RequestError:
			if e.Parameter != nil {
				fields = append(fields, problem.Field{Parameter: e.Parameter.Name, Detail: paramDetail(e)})
				return
			}
			if e.RequestBody != nil {
				bodyFailed = true
				switch e.Err.(type) {
				case openapi3.MultiError, *openapi3.SchemaError:
					walk(e.Err)
					return
				}
				fields = append(fields, problem.Field{Pointer: "#", Detail: e.Reason})
				return
			}
		case *openapi3.SchemaError:
			bodyFailed = true
			fields = append(fields, schemaField(e))
			return
		}
		fields = append(fields, problem.Field{Detail: err.Error()})
	}
	walk(err)
	if bodyFailed {
		return problem.Invalid("the request body does not match the schema", fields...)
	}
	p := problem.New(http.StatusBadRequest, problem.CodeInvalidParameter, "a request parameter is invalid")
	p.Errors = fields
	return p
}

func paramDetail(e *openapi3filter.RequestError) string {
	var schemaErr *openapi3.SchemaError
	if errors.As(e.Err, &schemaErr) {
		return friendlyReason(schemaErr.Reason, schemaErr.Schema)
	}
	if e.Err != nil {
		return e.Err.Error()
	}
	return e.Reason
}

var unsupportedProperty = regexp.MustCompile(`^property "(.+)" is unsupported$`)

func schemaField(e *openapi3.SchemaError) problem.Field {
	path := e.JSONPointer()
	reason := e.Reason
	if m := unsupportedProperty.FindStringSubmatch(reason); m != nil {
		path = append(path, m[1])
		reason = "unknown field"
	}
	if e.SchemaField == "required" {
		reason = "required field is missing"
	}
	var b strings.Builder
	b.WriteString("#")
	for _, s := range path {
		b.WriteString("/" + jsoncheck.EscapePointer(s))
	}
	return problem.Field{Pointer: b.String(), Detail: friendlyReason(reason, e.Schema)}
}

// friendlyReason replaces kin-openapi's format errors, which quote whole
// regular expressions, with what the client has to send. schema is the
// one that failed (nil when unknown).
func friendlyReason(reason string, schema *openapi3.Schema) string {
	switch {
	case strings.Contains(reason, `format "uuid"`):
		return "must be a UUID"
	case strings.Contains(reason, `format "date-time"`):
		return "must be an RFC 3339 date-time, such as 2026-01-02T15:04:05Z"
	case strings.HasPrefix(reason, "there must be at least") && schema != nil && len(schema.Properties) > 0:
		// minProperties: 1 is how the spec says a PATCH must change something.
		return "send at least one field to change: " + strings.Join(slices.Sorted(maps.Keys(schema.Properties)), ", ")
	}
	return reason
}

// writeError writes err: a problem as itself, anything else as a 500 whose
// cause is logged.
func (cfg Config) writeError(w http.ResponseWriter, r *http.Request, err error) {
	id := RequestID(r.Context())
	if p, ok := problem.As(err); ok {
		problem.Write(w, r, p, id)
		return
	}
	cfg.Logger.Error("request failed", "request_id", id, "error", err.Error())
	problem.Write(w, r, problem.Internal(), id)
}

// ErrorHandler adapts writeError to the generated server's error hooks.
func (cfg Config) ErrorHandler() func(http.ResponseWriter, *http.Request, error) {
	return cfg.writeError
}

// DecodeErrorHandler answers a body the gate let through but the generated
// types cannot hold: a number the schema allows that Go's integer fields do
// not (5.0, 5e0, or past the range of int64). The gate has already refused
// everything else, so these are the client's to fix: 422 naming the field.
func (cfg Config) DecodeErrorHandler() func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			pointer := "#"
			if typeErr.Field != "" {
				for _, part := range strings.Split(typeErr.Field, ".") {
					pointer += "/" + jsoncheck.EscapePointer(part)
				}
			}
			detail := fmt.Sprintf("a JSON %s cannot be stored as %s", typeErr.Value, typeErr.Type)
			if strings.HasPrefix(typeErr.Type.Kind().String(), "int") || strings.HasPrefix(typeErr.Type.Kind().String(), "uint") {
				detail = "must be a whole number written without a fraction or exponent, within the range of a signed 64-bit integer"
			}
			problem.Write(w, r, problem.Invalid("the request body does not match the schema", problem.Field{Pointer: pointer, Detail: detail}), RequestID(r.Context()))
			return
		}
		cfg.writeError(w, r, err)
	}
}

// finish writes the access log line and the metrics of a request. Neither
// ever contains a header value, a query string or a body.
func (cfg Config) finish(rec *recorder, r *http.Request, start time.Time) {
	elapsed := time.Since(start)
	opID := "unmatched"
	switch {
	case rec.operation != nil:
		opID = rec.operation.ID
	case rec.procedure != "":
		opID = rec.procedure
	}
	attrs := []slog.Attr{
		slog.String("request_id", RequestID(r.Context())),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("operation", opID),
		slog.Int("status", rec.status),
		slog.Int64("bytes", rec.bytes),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("remote", audit.RequestFrom(r.Context()).SourceIP),
	}
	if rec.idempotency != "" {
		attrs = append(attrs, slog.String("idempotency", rec.idempotency))
	}
	if rec.caller.TenantID != uuid.Nil {
		attrs = append(attrs,
			slog.String("tenant_id", rec.caller.TenantID.String()),
			slog.String("principal_id", rec.caller.PrincipalID.String()),
			slog.String("token_id", rec.caller.TokenID.String()))
	}
	// Agents call every interval, by the thousand: their successful calls
	// are logged at debug level; failures, and every REST call, at info.
	level := slog.LevelInfo
	if rec.procedure != "" && rec.status < 400 && !rec.failed {
		level = slog.LevelDebug
	}
	cfg.Logger.LogAttrs(r.Context(), level, "http request", attrs...)
	if cfg.Metrics != nil {
		cfg.Metrics.observe(opID, r.Method, rec.status, elapsed)
	}
}

// recorder remembers what was written for the log and metrics.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	operation   *api.Operation
	procedure   string
	failed      bool
	caller      caller.Caller
	// idempotency is what the Idempotency-Key decided (never the key).
	idempotency string
}

// Flush lets streaming responses (gRPC) through.
func (w *recorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// markFailed notes a failed RPC: Connect reports errors with HTTP 200 in
// some protocols (gRPC), so the status alone does not tell.
func (w *recorder) markFailed() { w.failed = true }

func (w *recorder) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sourceIP is the client address: the peer, or, when the peer is a trusted
// proxy, the nearest untrusted address in X-Forwarded-For.
func sourceIP(r *http.Request, trusted []netip.Prefix) string {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	addr := peer.Addr().Unmap()
	if !isTrusted(addr, trusted) {
		return addr.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		a = a.Unmap()
		if !isTrusted(a, trusted) {
			return a.String()
		}
		addr = a
	}
	return addr.String()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
