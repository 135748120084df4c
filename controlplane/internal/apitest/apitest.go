// Package apitest runs a real control plane for tests — TLS listener, the
// whole HTTP layer, a fresh PostgreSQL database — and gives them a client
// that validates every response it receives against specs/openapi.yaml, so
// no test can see a shape the spec does not describe.
//
// When EDGEWARD_API_COVERAGE_DIR is set, the client records each operation it
// exercised there; `make test` then fails if any operation of the spec was
// never called by any test (see TestEveryOperationIsExercised).
//
// When EDGEWARD_API_RESPONSES_DIR is set, every response that Validate
// checks is also recorded there, whole (status, headers, body); `make test`
// then runs a second OpenAPI validator, independent of kin-openapi, over all
// of them (see TestRecordedResponsesPassASecondValidator). One validator's
// leniency must not be the contract.
package apitest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/app"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/auth"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
	"github.com/edgeward/edgeward/controlplane/internal/tenants"
)

// CoverageDirEnv names the directory where exercised operations are recorded.
const CoverageDirEnv = "EDGEWARD_API_COVERAGE_DIR"

// ResponsesDirEnv names the directory where every validated response is
// recorded for the second validator.
const ResponsesDirEnv = "EDGEWARD_API_RESPONSES_DIR"

// Env is a running control plane with a bootstrapped tenant.
type Env struct {
	DB     *dbtest.DB
	Server *app.Server
	Index  *api.Index
	// Tenant and AdminToken are the first tenant and its tenant_admin token.
	Tenant     tenants.Tenant
	AdminToken string
	// Logs holds everything the server logged.
	Logs *SyncBuffer
	// Transcript holds every response's headers and body, for tests that
	// prove something never appears in any answer.
	Transcript *SyncBuffer
	// Config is the server's configuration (StartReplica reuses it).
	Config app.ServeConfig

	http *http.Client
}

// Start runs a control plane for t on a fresh database.
func Start(t testing.TB) *Env {
	t.Helper()
	return StartWith(t, nil)
}

// StartWith is Start with the server configuration adjusted by configure.
func StartWith(t testing.TB, configure func(*app.ServeConfig)) *Env {
	t.Helper()
	index, err := api.Spec()
	if err != nil {
		t.Fatal(err)
	}
	d := dbtest.New(t)
	logs := &SyncBuffer{}
	ctx := context.Background()
	cfg := app.ServeConfig{
		DatabaseURL: d.AppURL,
		Listen:      "127.0.0.1:0",
		DataDir:     t.TempDir(),
		Logger:      slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if configure != nil {
		configure(&cfg)
	}
	s, err := app.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CA.CertPEM)
	e := &Env{
		DB: d, Server: s, Index: index, Logs: logs, Transcript: &SyncBuffer{}, Config: cfg,
		http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	e.Tenant, e.AdminToken = e.NewTenant(t, "acme")
	return e
}

// StartReplica starts another control plane on the same database and CA,
// as a second replica behind a load balancer would be, and returns an Env
// whose clients talk to it.
func (e *Env) StartReplica(t testing.TB) *Env {
	t.Helper()
	cfg := e.Config
	cfg.Listen = "127.0.0.1:0"
	s, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start replica: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown replica: %v", err)
		}
	})
	r := *e
	r.Server = s
	return &r
}

// OperatorContext is a context whose audit actor is a test operator.
func OperatorContext() context.Context {
	return audit.WithActor(context.Background(), audit.Actor{Type: audit.ActorOperator, Name: "test-operator"})
}

// NewTenant bootstraps another tenant and returns it with its admin token.
func (e *Env) NewTenant(t testing.TB, name string) (tenants.Tenant, string) {
	t.Helper()
	b, err := tenants.Bootstrap(OperatorContext(), e.DB.Owner, name, auth.DefaultTokenTTL)
	if err != nil {
		t.Fatalf("bootstrap tenant %s: %v", name, err)
	}
	return b.Tenant, b.Token.Secret
}

// IssueToken issues a token with role in tenantID, as an operator would.
func (e *Env) IssueToken(t testing.TB, tenantID uuid.UUID, role, name string) auth.IssuedToken {
	t.Helper()
	var issued auth.IssuedToken
	ctx := OperatorContext()
	err := db.InTenant(ctx, e.DB.Owner, tenantID, func(tx pgx.Tx) error {
		var err error
		issued, err = auth.IssueToken(ctx, tx, tenantID, auth.TokenSpec{Name: name, Role: role}, time.Now())
		return err
	})
	if err != nil {
		t.Fatalf("issue %s token: %v", role, err)
	}
	return issued
}

// Client calls the API with a bearer token (none when empty).
func (e *Env) Client(t testing.TB, token string) *Client {
	return &Client{t: t, env: e, token: token, http: e.http}
}

// CertClient calls the API presenting a TLS client certificate (an agent's).
func (e *Env) CertClient(t testing.TB, cert tls.Certificate) *Client {
	tr := e.http.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	t.Cleanup(tr.CloseIdleConnections)
	return &Client{t: t, env: e, http: &http.Client{Timeout: e.http.Timeout, Transport: tr}}
}

// TLSConfig trusts the server's CA, for clients other than Client.
func (e *Env) TLSConfig() *tls.Config {
	return e.http.Transport.(*http.Transport).TLSClientConfig.Clone()
}

// Client is an API client bound to one test.
type Client struct {
	t     testing.TB
	env   *Env
	token string
	http  *http.Client
}

// Option changes one request.
type Option func(*http.Request)

// Header sets a request header.
func Header(key, value string) Option {
	return func(r *http.Request) { r.Header.Set(key, value) }
}

// Raw marks a body to be sent as the given bytes, not JSON-encoded.
type Raw []byte

// Response is a received and spec-validated response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a request and validates the response against the spec. body is
// nil, Raw bytes, or a value to encode as JSON.
func (c *Client) Do(method, path string, body any, opts ...Option) *Response {
	c.t.Helper()
	var reader io.Reader
	var raw []byte
	switch b := body.(type) {
	case nil:
	case Raw:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			c.t.Fatalf("encode body: %v", err)
		}
	}
	if raw != nil {
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.env.Server.URL+path, reader)
	if err != nil {
		c.t.Fatalf("new request: %v", err)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: got}
	fmt.Fprintf(c.env.Transcript, "%s %s -> %d %v\n%s\n", method, path, r.Status, resp.Header, got)
	if err := c.env.validate(req, raw, r); err != nil {
		c.t.Fatalf("%s %s -> %d: response does not match specs/openapi.yaml: %v\nbody: %s", method, path, r.Status, err, got)
	}
	return r
}

// validate checks a response against the spec and records coverage.
func (e *Env) validate(req *http.Request, body []byte, r *Response) error {
	opID, err := Validate(req, body, r.Status, r.Header, r.Body)
	if err == nil {
		err = checkTimestamps(r.Body)
	}
	if err == nil && opID != "" {
		recordCoverage(opID, r.Status)
	}
	return err
}

// Validate checks a response against the operation of specs/openapi.yaml it
// answered and returns that operation's id. A 405 for a method its path
// lacks must be the 405 the path's operations declare (with `Allow`); other
// responses to paths outside the spec (404) must be problem documents; so
// must every error response the operation does not declare as JSON. Every
// response must carry X-Request-Id.
func Validate(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) (string, error) {
	ix, err := api.Spec()
	if err != nil {
		return "", err
	}
	path := req.URL.EscapedPath()
	op, params, allowed := ix.Match(req.Method, path)
	opID := ""
	if op != nil {
		opID = op.ID
	}
	recordResponse(Recorded{
		Operation: opID, Method: req.Method, Path: path, Query: req.URL.RawQuery,
		Status: status, Header: header, Body: body,
	})
	if header.Get("X-Request-Id") == "" {
		return opID, errors.New("no X-Request-Id header")
	}
	if op == nil && status == http.StatusMethodNotAllowed && len(allowed) > 0 {
		// Checked as the path's first operation answering 405; it is not
		// that operation's coverage.
		declaring, params, _ := ix.Match(allowed[0], path)
		vreq := req.Clone(context.Background())
		vreq.Method = allowed[0]
		return "", validateResponse(ix, declaring, params, vreq, nil, status, header, body)
	}
	if op == nil {
		return "", validateSchema(ix.Doc, "Problem", body)
	}
	return op.ID, validateResponse(ix, op, params, req, reqBody, status, header, body)
}

func validateResponse(ix *api.Index, op *api.Operation, params map[string]string, req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: op.Route(ix.Doc)},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return err
	}
	declared := op.Spec.Responses.Status(status)
	isDeclaredJSON := declared != nil && declared.Value != nil && declared.Value.Content.Get("application/json") != nil
	if status >= 400 && !isDeclaredJSON && !strings.HasPrefix(header.Get("Content-Type"), "application/problem+json") {
		return fmt.Errorf("error response with content type %q, not application/problem+json", header.Get("Content-Type"))
	}
	return nil
}

func validateSchema(doc *openapi3.T, name string, body []byte) error {
	ref, ok := doc.Components.Schemas[name]
	if !ok {
		return fmt.Errorf("no schema %s", name)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	return ref.Value.VisitJSON(v, openapi3.MultiErrors())
}

var coverageMu sync.Mutex

func recordCoverage(opID string, status int) {
	dir := os.Getenv(CoverageDirEnv)
	if dir == "" {
		return
	}
	coverageMu.Lock()
	defer coverageMu.Unlock()
	_ = os.MkdirAll(dir, 0o755)
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%d.txt", os.Getpid())), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer func() { _ = f.Close() }()
	_, _ = fmt.Fprintf(f, "%s %d\n", opID, status)
}

// Recorded is one response as a test received it, kept for the second
// validator.
type Recorded struct {
	// Binary is the test binary that received it (e.g. deliveries.test).
	Binary string `json:"binary"`
	// Operation is the operation id the request matched; empty outside the
	// spec (an unknown path, or a known path with another method).
	Operation string `json:"operation,omitempty"`
	Method    string `json:"method"`
	// Path is the escaped request path, Query the raw query.
	Path   string      `json:"path"`
	Query  string      `json:"query,omitempty"`
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

var responsesMu sync.Mutex

// recordResponse appends r as one JSON line to this process's file in
// ResponsesDirEnv, when that is set. Test binaries run in parallel, so each
// writes its own file.
func recordResponse(r Recorded) {
	dir := os.Getenv(ResponsesDirEnv)
	if dir == "" {
		return
	}
	r.Binary = filepath.Base(os.Args[0])
	line, err := json.Marshal(r)
	if err != nil {
		return
	}
	line = append(line, '\n')
	responsesMu.Lock()
	defer responsesMu.Unlock()
	_ = os.MkdirAll(dir, 0o755)
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%d.jsonl", os.Getpid())), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer func() { _ = f.Close() }()
	_, _ = f.Write(line)
}

// ReadRecorded returns every response recorded in dir.
func ReadRecorded(dir string) ([]Recorded, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	var all []Recorded
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(f)
		for {
			var r Recorded
			if err := dec.Decode(&r); err == io.EOF {
				break
			} else if err != nil {
				_ = f.Close()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			all = append(all, r)
		}
		_ = f.Close()
	}
	return all, nil
}

// JSON decodes the body into v.
func (r *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Problem is a decoded problem document.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Instance  string `json:"instance"`
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
	Errors    []struct {
		Detail    string `json:"detail"`
		Pointer   string `json:"pointer"`
		Parameter string `json:"parameter"`
	} `json:"errors"`
}

// Problem decodes a problem response, failing t unless status matches.
func (r *Response) Problem(t testing.TB, status int) Problem {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body: %s", r.Status, status, r.Body)
	}
	var p Problem
	r.JSON(t, &p)
	return p
}

// SyncBuffer is a bytes.Buffer safe for a logger and a test at once.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
