// Package webhooktest is a webhook receiver for tests: a real local HTTPS
// server that checks every request's Standard Webhooks signature and records
// what it saw. Its verifier is written from the specification
// (https://www.standardwebhooks.com) and deliberately shares no code with the
// sender in package webhook, so a bug there cannot hide behind the same bug
// here.
package webhooktest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tolerance is how far webhook-timestamp may be from the receiver's clock,
// the replay window the specification recommends.
const Tolerance = 5 * time.Minute

// maxBody bounds what the receiver reads of one request.
const maxBody = 32 << 20

// Response is a programmed answer.
type Response struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// Body is written as the response body.
	Body string
	// Echo writes the request's body back after Body, as debug endpoints
	// and some error pages do.
	Echo bool
	// Header holds extra response headers, e.g. Retry-After or Location.
	Header map[string]string
	// Delay is slept before answering; it ends early when the client goes
	// away or the receiver closes.
	Delay time.Duration
}

// Request is one request the receiver saw.
type Request struct {
	// Path is the request path, ID the webhook-id header.
	Path, ID string
	// Timestamp is webhook-timestamp; zero when missing or unreadable.
	Timestamp time.Time
	Body      []byte
	Header    http.Header
	Received  time.Time
	// SignatureValid reports that the request had a webhook-id, a fresh
	// timestamp and a v1 signature matching an accepted secret.
	SignatureValid bool
	// Status is the status we answered; 0 while the answer is pending or
	// when the client went away before it.
	Status int
}

// Receiver is a real local HTTPS server that verifies every request's
// Standard Webhooks signature and records what it saw. A request without a
// webhook-id, with a webhook-timestamp more than Tolerance from now, or
// without a matching signature is answered 401 and recorded with
// SignatureValid false.
type Receiver struct {
	srv     *httptest.Server
	certPEM []byte
	pool    *x509.CertPool
	t       testing.TB

	mu       sync.Mutex
	keys     [][]byte
	scripts  map[string]*script
	requests []Request
}

type script struct {
	rs   []Response
	next int
}

// New starts a receiver on 127.0.0.1 with its own self-signed certificate
// (valid for 127.0.0.1, ::1 and localhost) that accepts signatures made
// with any of secrets. t.Cleanup closes it.
func New(t testing.TB, secrets ...string) *Receiver {
	t.Helper()
	keys, err := decodeSecrets(secrets)
	if err != nil {
		t.Fatalf("webhooktest: %v", err)
	}
	cert, certPEM, err := selfSigned()
	if err != nil {
		t.Fatalf("webhooktest: certificate: %v", err)
	}
	r := &Receiver{t: t, keys: keys, scripts: map[string]*script{}, certPEM: certPEM}
	r.pool = x509.NewCertPool()
	r.pool.AppendCertsFromPEM(certPEM)

	// Handlers derive their context from base, so closing the receiver ends
	// programmed delays instead of waiting them out.
	base, cancel := context.WithCancel(context.Background())
	srv := httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	// Clients that reject our certificate are part of the tests; their
	// handshake errors are not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	r.srv = srv
	t.Cleanup(func() {
		cancel()
		srv.Close()
	})
	return r
}

// URL returns the base URL, e.g. https://127.0.0.1:PORT.
func (r *Receiver) URL() string { return r.srv.URL }

// CertPool returns a pool that trusts the receiver's certificate.
func (r *Receiver) CertPool() *x509.CertPool { return r.pool }

// CAFile writes the receiver's certificate as PEM to a temporary file and
// returns its path, for a real binary's --webhook-ca-file.
func (r *Receiver) CAFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "webhooktest-ca.pem")
	if err := os.WriteFile(path, r.certPEM, 0o600); err != nil {
		t.Fatalf("webhooktest: write CA file: %v", err)
	}
	return path
}

// SetSecrets replaces the accepted secrets. Several are accepted during a
// rotation: a request is valid if any of its v1 signatures matches any of
// them. A malformed secret fails the test.
func (r *Receiver) SetSecrets(secrets ...string) {
	keys, err := decodeSecrets(secrets)
	if err != nil {
		r.t.Errorf("webhooktest: %v", err)
		return
	}
	r.mu.Lock()
	r.keys = keys
	r.mu.Unlock()
}

// Respond programs the answers for path: each validly signed request gets
// the next Response in order, and the last one repeats forever. A path with
// nothing programmed answers 204; Respond with no responses restores that.
// Invalid requests are answered 401 and do not use up a response.
func (r *Receiver) Respond(path string, rs ...Response) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(rs) == 0 {
		delete(r.scripts, path)
		return
	}
	r.scripts[path] = &script{rs: append([]Response(nil), rs...)}
}

// Requests returns a copy of every request seen, in arrival order.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Request, len(r.requests))
	for i, q := range r.requests {
		q.Body = append([]byte(nil), q.Body...)
		q.Header = q.Header.Clone()
		out[i] = q
	}
	return out
}

// Succeeded returns, per webhook-id, how many 2xx answers were given.
func (r *Receiver) Succeeded() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, q := range r.requests {
		if q.Status >= 200 && q.Status < 300 {
			out[q.ID]++
		}
	}
	return out
}

// WaitFor polls Requests until cond holds, failing the test after timeout.
func (r *Receiver) WaitFor(t testing.TB, timeout time.Duration, cond func([]Request) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		reqs := r.Requests()
		if cond(reqs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhooktest: condition not met within %s; %d request(s) seen: %s", timeout, len(reqs), summary(reqs))
		}
		<-tick.C
	}
}

func summary(reqs []Request) string {
	var b strings.Builder
	for i, q := range reqs {
		if i == 10 {
			b.WriteString(" ...")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q.Path + " id=" + q.ID + " status=" + strconv.Itoa(q.Status) + " valid=" + strconv.FormatBool(q.SignatureValid))
	}
	return b.String()
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, maxBody))
	now := time.Now()
	q := Request{
		Path:     req.URL.Path,
		ID:       req.Header.Get("webhook-id"),
		Body:     body,
		Header:   req.Header.Clone(),
		Received: now,
	}
	if sec, err := strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64); err == nil {
		q.Timestamp = time.Unix(sec, 0)
	}

	r.mu.Lock()
	q.SignatureValid = verify(r.keys, q.ID, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body, now)
	resp := Response{Status: http.StatusUnauthorized, Body: "invalid webhook signature"}
	if q.SignatureValid {
		resp = r.nextResponse(q.Path)
	}
	idx := len(r.requests)
	r.requests = append(r.requests, q)
	r.mu.Unlock()

	if resp.Delay > 0 {
		timer := time.NewTimer(resp.Delay)
		select {
		case <-timer.C:
		case <-req.Context().Done():
			timer.Stop()
			// Returning normally would send an implicit 200 to a client
			// that may still be there (when the receiver is closing);
			// aborting drops the connection without an answer.
			panic(http.ErrAbortHandler)
		}
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	// Record the answer before writing it, so a client that has its
	// response already finds it in Requests.
	r.mu.Lock()
	r.requests[idx].Status = status
	r.mu.Unlock()
	for k, v := range resp.Header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, resp.Body)
	if resp.Echo {
		_, _ = w.Write(body)
	}
}

// nextResponse returns the programmed answer for path; r.mu is held.
func (r *Receiver) nextResponse(path string) Response {
	s, ok := r.scripts[path]
	if !ok {
		return Response{Status: http.StatusNoContent}
	}
	resp := s.rs[s.next]
	if s.next < len(s.rs)-1 {
		s.next++
	}
	return resp
}

// verify checks a request the way the specification tells receivers to:
// an id, a timestamp within Tolerance of now, and at least one "v1,<sig>"
// entry of the space-separated signature header equal to
// base64(HMAC-SHA256(key, id.timestamp.body)) for some accepted key.
func verify(keys [][]byte, id, timestamp, signatures string, body []byte, now time.Time) bool {
	if id == "" || timestamp == "" || signatures == "" {
		return false
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(sec, 0)); d > Tolerance || d < -Tolerance {
		return false
	}
	content := []byte(id + "." + timestamp + ".")
	content = append(content, body...)
	for _, entry := range strings.Split(signatures, " ") {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		for _, key := range keys {
			mac := hmac.New(sha256.New, key)
			mac.Write(content)
			if hmac.Equal(got, mac.Sum(nil)) {
				return true
			}
		}
	}
	return false
}

// decodeSecrets turns whsec_<base64> secrets into HMAC keys. The prefix is
// optional, as in the specification's reference libraries.
func decodeSecrets(secrets []string) ([][]byte, error) {
	keys := make([][]byte, 0, len(secrets))
	for i, s := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil || len(key) == 0 {
			return nil, &secretError{index: i + 1}
		}
		keys = append(keys, key)
	}
	return keys, nil
}

type secretError struct{ index int }

func (e *secretError) Error() string {
	return "secret " + strconv.Itoa(e.index) + " is not whsec_ followed by standard base64"
}

// selfSigned makes a throwaway certificate that is its own CA, so one PEM is
// all a client needs to trust the receiver.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "webhooktest receiver"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPEM, nil
}
