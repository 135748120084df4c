package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhooktest"
)

var (
	testSecret = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	oldSecret  = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	loopback   = Guard{AllowNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
)

// testServer is an httptest TLS server that counts the connections it
// accepts and the requests it handles, so tests can prove a refused attempt
// never reached it.
type testServer struct {
	*httptest.Server
	conns    atomic.Int32
	requests atomic.Int32
}

func newTestServer(t *testing.T, h http.HandlerFunc) *testServer {
	t.Helper()
	ts := &testServer{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.requests.Add(1)
		h(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ts.conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ts.Server = srv
	return ts
}

func (ts *testServer) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ts.Certificate())
	return p
}

func (ts *testServer) port() string {
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	return port
}

func newSender(t *testing.T, g Guard, pool *x509.CertPool) *Sender {
	s := &Sender{Guard: g, RootCAs: pool}
	t.Cleanup(s.CloseIdleConnections)
	return s
}

func message(url string) Message {
	return Message{
		URL:       url,
		ID:        "msg_2YdFqz",
		Timestamp: time.Now(),
		Body:      []byte(`{"type":"alert.raised","data":{"alert_id":"0190"}}`),
		Secrets:   []string{testSecret},
	}
}

func status(code int, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
	}
}

// hang never answers. It reads the request body first: only then does the
// server watch the connection, and so notice the client giving up.
func hang(_ http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-time.After(30 * time.Second):
	}
}

func TestSendPostsSignedStandardWebhook(t *testing.T) {
	var (
		mu   sync.Mutex
		got  *http.Request
		body []byte
	)
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, body = r, b
		mu.Unlock()
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	m := message(srv.URL + "/hooks/edgeward?tenant=acme")
	m.Secrets = []string{testSecret, oldSecret}
	m.AuthHeaderName, m.AuthHeaderValue = "Authorization", "Bearer receiver-token"

	res := newSender(t, loopback, srv.pool()).Send(context.Background(), m)

	require.True(t, res.Succeeded(), "%+v", res)
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Empty(t, res.ErrorClass)
	assert.Empty(t, res.Error)
	assert.Equal(t, `{"ok":true}`, string(res.Body))
	assert.False(t, res.Truncated)
	assert.False(t, res.Ended.Before(res.Started))

	mu.Lock()
	defer mu.Unlock()
	require.NotNil(t, got)
	assert.Equal(t, http.MethodPost, got.Method)
	assert.Equal(t, "/hooks/edgeward", got.URL.Path)
	assert.Equal(t, "tenant=acme", got.URL.RawQuery)
	assert.Equal(t, m.Body, body)
	assert.Equal(t, "application/json", got.Header.Get("Content-Type"))
	assert.Equal(t, "Edgeward-Webhooks/1", got.Header.Get("User-Agent"))
	assert.Equal(t, "msg_2YdFqz", got.Header.Get("webhook-id"))
	assert.Equal(t, strconv.FormatInt(m.Timestamp.Unix(), 10), got.Header.Get("webhook-timestamp"))
	assert.Equal(t, "Bearer receiver-token", got.Header.Get("Authorization"))
	assert.Len(t, strings.Split(got.Header.Get("webhook-signature"), " "), 2)
	assert.True(t, verifyStandardWebhook(testSecret, got.Header, body), "current secret")
	assert.True(t, verifyStandardWebhook(oldSecret, got.Header, body), "previous secret during rotation")
}

func TestSendVerifiedByIndependentReceiver(t *testing.T) {
	rcv := webhooktest.New(t, oldSecret) // a receiver not yet rotated
	m := message(rcv.URL() + "/hook")
	m.Secrets = []string{testSecret, oldSecret}

	res := newSender(t, loopback, rcv.CertPool()).Send(context.Background(), m)

	require.True(t, res.Succeeded(), "%+v", res)
	reqs := rcv.Requests()
	require.Len(t, reqs, 1)
	assert.True(t, reqs[0].SignatureValid)
	assert.Equal(t, map[string]int{"msg_2YdFqz": 1}, rcv.Succeeded())
}

func TestSendToLoopbackIsBlockedByDefault(t *testing.T) {
	srv := newTestServer(t, status(http.StatusNoContent))

	res := newSender(t, Guard{}, srv.pool()).Send(context.Background(), message(srv.URL+"/hook"))

	assert.Equal(t, ClassBlockedAddress, res.ErrorClass)
	assert.Contains(t, res.Error, "127.0.0.1")
	assert.Zero(t, res.StatusCode)
	assert.False(t, res.Succeeded())
	assert.Zero(t, srv.conns.Load(), "the server saw no connection")
	assert.Zero(t, srv.requests.Load())
}

func TestSendToLoopbackSucceedsWhenOperatorAllowsIt(t *testing.T) {
	srv := newTestServer(t, status(http.StatusNoContent))

	res := newSender(t, loopback, srv.pool()).Send(context.Background(), message(srv.URL+"/hook"))

	assert.True(t, res.Succeeded(), "%+v", res)
	assert.Equal(t, http.StatusNoContent, res.StatusCode)
	assert.Equal(t, int32(1), srv.requests.Load())
}

func TestSendRefusesLocalhostAtConnectTime(t *testing.T) {
	srv := newTestServer(t, status(http.StatusNoContent))

	res := newSender(t, Guard{}, srv.pool()).Send(context.Background(), message("https://localhost:"+srv.port()+"/hook"))

	assert.Equal(t, ClassBlockedAddress, res.ErrorClass, "%+v", res)
	assert.Contains(t, res.Error, "127.0.0.1", "the resolved address is what was refused")
	assert.Zero(t, srv.conns.Load())
}

func TestSendAllowedHostNameSkipsAddressCheck(t *testing.T) {
	rcv := webhooktest.New(t, testSecret) // its certificate names localhost

	u, err := url.Parse(rcv.URL())
	require.NoError(t, err)

	res := newSender(t, Guard{AllowHosts: []string{"localhost"}}, rcv.CertPool()).
		Send(context.Background(), message("https://localhost:"+u.Port()+"/hook"))

	assert.True(t, res.Succeeded(), "%+v", res)
	assert.Len(t, rcv.Requests(), 1)
}

func TestSendChecksTheAddressDialledNotTheOneCheckedAtCreation(t *testing.T) {
	// DNS rebinding: the name is public when the destination is saved and
	// points at the control plane's own network when the webhook is sent.
	srv := newTestServer(t, status(http.StatusNoContent))
	dns := &dnsServer{records: map[string][]netip.Addr{"example.com.": {netip.MustParseAddr("93.184.216.34")}}}
	resolver := dns.resolver(t)
	dest := "https://example.com:" + srv.port() + "/hook" // httptest's certificate names example.com

	require.NoError(t, Guard{}.CheckURL(context.Background(), dest, resolver))
	dns.set("example.com.", netip.MustParseAddr("127.0.0.1"))

	s := newSender(t, Guard{}, srv.pool())
	s.Resolver = resolver
	res := s.Send(context.Background(), message(dest))

	assert.Equal(t, ClassBlockedAddress, res.ErrorClass, "%+v", res)
	assert.Zero(t, srv.conns.Load())

	// The same name and resolver do get through when the operator allows
	// the address, so the refusal above was the guard and nothing else.
	s.Guard = loopback
	res = s.Send(context.Background(), message(dest))
	assert.True(t, res.Succeeded(), "%+v", res)
}

func TestSendReusesConnectionsButNotAcrossGuardChanges(t *testing.T) {
	srv := newTestServer(t, status(http.StatusNoContent))
	s := newSender(t, loopback, srv.pool())

	require.True(t, s.Send(context.Background(), message(srv.URL)).Succeeded())
	require.True(t, s.Send(context.Background(), message(srv.URL)).Succeeded())
	assert.Equal(t, int32(1), srv.conns.Load(), "keep-alive connection reused")

	s.Guard = Guard{}
	res := s.Send(context.Background(), message(srv.URL))

	assert.Equal(t, ClassBlockedAddress, res.ErrorClass, "a pooled connection must not outlive the rules it was checked under")
	assert.Equal(t, int32(2), srv.requests.Load())
}

func TestSendDoesNotFollowRedirects(t *testing.T) {
	target := newTestServer(t, status(http.StatusNoContent))
	srv := newTestServer(t, status(http.StatusFound, "Location", target.URL+"/elsewhere"))
	s := newSender(t, loopback, srv.pool())

	res := s.Send(context.Background(), message(srv.URL+"/hook"))

	assert.Equal(t, ClassRedirect, res.ErrorClass)
	assert.Equal(t, http.StatusFound, res.StatusCode)
	assert.False(t, res.Succeeded())
	assert.Zero(t, target.requests.Load(), "the redirect target never sees a request")
}

func TestSendReportsHTTPStatus(t *testing.T) {
	srv := newTestServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusGone)
		_, _ = io.WriteString(w, "endpoint removed")
	})

	res := newSender(t, loopback, srv.pool()).Send(context.Background(), message(srv.URL))

	assert.Equal(t, http.StatusGone, res.StatusCode)
	assert.Equal(t, ClassHTTPStatus, res.ErrorClass)
	assert.Equal(t, "receiver answered 410 Gone", res.Error)
	assert.Equal(t, "endpoint removed", string(res.Body))
	assert.Zero(t, res.RetryAfter)
	assert.False(t, res.Succeeded())
}

func TestSendReadsRetryAfter(t *testing.T) {
	in2m := time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	tests := []struct {
		name     string
		code     int
		value    string
		min, max time.Duration
	}{
		{"429 delta", http.StatusTooManyRequests, "7", 7 * time.Second, 7 * time.Second},
		{"503 delta", http.StatusServiceUnavailable, "120", 2 * time.Minute, 2 * time.Minute},
		{"429 date", http.StatusTooManyRequests, in2m, 118 * time.Second, 121 * time.Second},
		{"capped", http.StatusTooManyRequests, "999999999999999999999999", 24 * time.Hour, 24 * time.Hour},
		{"past date", http.StatusServiceUnavailable, "Sun, 06 Nov 1994 08:49:37 GMT", 0, 0},
		{"garbage", http.StatusTooManyRequests, "soon", 0, 0},
		{"500 ignores it", http.StatusInternalServerError, "7", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, status(tt.code, "Retry-After", tt.value))

			res := newSender(t, loopback, srv.pool()).Send(context.Background(), message(srv.URL))

			assert.Equal(t, tt.code, res.StatusCode)
			assert.Equal(t, ClassHTTPStatus, res.ErrorClass)
			assert.GreaterOrEqual(t, res.RetryAfter, tt.min)
			assert.LessOrEqual(t, res.RetryAfter, tt.max)
		})
	}
}

func TestSendTimesOut(t *testing.T) {
	srv := newTestServer(t, hang)
	s := newSender(t, loopback, srv.pool())
	s.Timeout = 200 * time.Millisecond

	res := s.Send(context.Background(), message(srv.URL))

	assert.Equal(t, ClassTimeout, res.ErrorClass, "%+v", res)
	assert.Zero(t, res.StatusCode)
}

func TestSendTruncatesLongBodies(t *testing.T) {
	srv := newTestServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, strings.Repeat("x", 10<<10))
	})

	res := newSender(t, loopback, srv.pool()).Send(context.Background(), message(srv.URL))

	assert.Equal(t, http.StatusBadRequest, res.StatusCode)
	assert.Len(t, res.Body, 4096)
	assert.True(t, res.Truncated)
}

func TestSendCleansBodyForStorage(t *testing.T) {
	srv := newTestServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("bad\x00 input \xff\xfe!"))
	})

	res := newSender(t, loopback, srv.pool()).Send(context.Background(), message(srv.URL))

	assert.Equal(t, "bad input \uFFFD!", string(res.Body))
	assert.False(t, res.Truncated)
}

func TestCleanBody(t *testing.T) {
	euros := []byte(strings.Repeat("€", 2000)) // 3 bytes each: 4096 cuts one
	got := cleanBody(euros[:4096], true)
	assert.True(t, utf8.Valid(got))
	assert.Len(t, got, 4095, "the cut rune is dropped, not replaced")

	invalid := bytes.Repeat([]byte{0xff}, 4096) // each byte becomes U+FFFD
	got = cleanBody(invalid, false)
	assert.True(t, utf8.Valid(got))
	assert.LessOrEqual(t, len(got), 4096)

	assert.Equal(t, []byte{}, cleanBody(nil, false))
}

func TestSendUntrustedCertificateIsTLS(t *testing.T) {
	srv := newTestServer(t, status(http.StatusNoContent))

	res := newSender(t, loopback, nil).Send(context.Background(), message(srv.URL))

	assert.Equal(t, ClassTLS, res.ErrorClass, "%+v", res)
	assert.Zero(t, srv.requests.Load())
}

func TestSendDNSFailure(t *testing.T) {
	s := newSender(t, Guard{}, nil)
	s.Resolver = noDNS()

	res := s.Send(context.Background(), message("https://receiver.example.invalid/hook"))

	assert.Equal(t, ClassDNS, res.ErrorClass, "%+v", res)
	assert.Contains(t, res.Error, "receiver.example.invalid")
}

func TestSendRefusesInvalidRequests(t *testing.T) {
	srv := newTestServer(t, status(http.StatusNoContent))
	tests := map[string]func(m *Message){
		"http url":           func(m *Message) { m.URL = strings.Replace(m.URL, "https:", "http:", 1) },
		"user info":          func(m *Message) { m.URL = strings.Replace(m.URL, "https://", "https://u:p@", 1) },
		"empty id":           func(m *Message) { m.ID = "" },
		"id with newline":    func(m *Message) { m.ID = "a\r\nX-Injected: 1" },
		"no secrets":         func(m *Message) { m.Secrets = nil },
		"bad secret":         func(m *Message) { m.Secrets = []string{"whsec_***"} },
		"bad header name":    func(m *Message) { m.AuthHeaderName, m.AuthHeaderValue = "X Token", "v" },
		"reserved header":    func(m *Message) { m.AuthHeaderName, m.AuthHeaderValue = "webhook-signature", "v1,forged" },
		"value without name": func(m *Message) { m.AuthHeaderValue = "Bearer x" },
		"header injection":   func(m *Message) { m.AuthHeaderName, m.AuthHeaderValue = "X-Token", "v\r\nX-Other: 1" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			m := message(srv.URL + "/hook")
			mutate(&m)

			res := newSender(t, loopback, srv.pool()).Send(context.Background(), m)

			assert.Equal(t, ClassInvalidRequest, res.ErrorClass)
			assert.NotEmpty(t, res.Error)
			assert.Zero(t, res.StatusCode)
		})
	}
	assert.Zero(t, srv.requests.Load())
}

func TestSendErrorsNeverLeakCredentials(t *testing.T) {
	const (
		token     = "TOKEN-q8Zr2"
		authValue = "Bearer AUTH-v9Kx4"
		pathToken = "T000/B000/PATH-x7Kd2"
	)
	suffix := "/services/" + pathToken + "?token=" + token

	slow := newTestServer(t, hang)
	redirect := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://elsewhere.example/?"+r.URL.RawQuery)
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	failing := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "no")
	})
	// A receiver echoing our request into a malformed answer: net/http
	// quotes the bad line in its error.
	echo := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nbroken " + r.Header.Get("Authorization") + " " + r.URL.RawQuery + " " + r.URL.Path + "\r\n\r\n")
		_ = buf.Flush()
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedURL := "https://" + closed.Addr().String()
	require.NoError(t, closed.Close())

	tests := []struct {
		name   string
		url    string
		sender *Sender
		class  string
	}{
		{"blocked", slow.URL, newSender(t, Guard{}, slow.pool()), ClassBlockedAddress},
		{"dns", "https://receiver.example.invalid", &Sender{Resolver: noDNS()}, ClassDNS},
		{"refused", closedURL, newSender(t, loopback, nil), ClassConnection},
		{"timeout", slow.URL, &Sender{Guard: loopback, RootCAs: slow.pool(), Timeout: 200 * time.Millisecond}, ClassTimeout},
		{"tls", slow.URL, newSender(t, loopback, nil), ClassTLS},
		{"redirect", redirect.URL, newSender(t, loopback, redirect.pool()), ClassRedirect},
		{"status", failing.URL, newSender(t, loopback, failing.pool()), ClassHTTPStatus},
		{"echo", echo.URL, newSender(t, loopback, echo.pool()), ClassConnection},
		{"invalid", slow.URL, newSender(t, loopback, slow.pool()), ClassInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message(tt.url + suffix)
			m.AuthHeaderName, m.AuthHeaderValue = "Authorization", authValue
			if tt.class == ClassInvalidRequest {
				m.ID = ""
			}

			res := tt.sender.Send(context.Background(), m)
			tt.sender.CloseIdleConnections()

			require.Equal(t, tt.class, res.ErrorClass, "%+v", res)
			require.NotEmpty(t, res.Error)
			for _, secret := range []string{token, "AUTH-v9Kx4", "PATH-x7Kd2", testSecret, strings.TrimPrefix(testSecret, "whsec_")} {
				assert.NotContains(t, res.Error, secret)
			}
			t.Logf("%s: %s", res.ErrorClass, res.Error)
		})
	}
}

func TestParseRetryAfterRoundsDatesUp(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 400_000_000, time.UTC)
	date := now.Add(10 * time.Second).Truncate(time.Second).Format(http.TimeFormat) // 9.6 s away

	assert.Equal(t, 10*time.Second, parseRetryAfter(date, now))
	assert.Equal(t, time.Duration(0), parseRetryAfter("", now))
	assert.Equal(t, 86400*time.Second, parseRetryAfter("86400", now))
	assert.Equal(t, MaxRetryAfter, parseRetryAfter("86401", now))
	assert.Equal(t, time.Duration(0), parseRetryAfter("-5", now))
}

// TestEchoedCredentialsAreRedactedFromTheStoredBody: a receiver that echoes
// the request back must not put the auth value or the secret in the attempt
// record, even when the echo is longer than the kept 4 KiB.
func TestEchoedCredentialsAreRedactedFromTheStoredBody(t *testing.T) {
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, strings.Repeat("x", MaxResponseBody-30)+" Authorization: "+r.Header.Get("Authorization")+" "+strings.Repeat("y", 100))
	})
	m := message(srv.URL + "/hook")
	m.AuthHeaderName, m.AuthHeaderValue = "Authorization", "Bearer ECHOED-credential-77"
	res := newSender(t, loopback, srv.pool()).Send(context.Background(), m)
	assert.Equal(t, http.StatusBadRequest, res.StatusCode)
	assert.True(t, res.Truncated)
	assert.LessOrEqual(t, len(res.Body), MaxResponseBody)
	assert.NotContains(t, string(res.Body), "ECHOED")
	assert.NotContains(t, string(res.Body), "Bearer ECH")
}
