package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

const (
	// DefaultTimeout bounds one attempt, from dialling to reading the body,
	// when Sender.Timeout is zero.
	DefaultTimeout = 15 * time.Second
	// MaxResponseBody is how much of a receiver's answer is kept for the
	// attempt record: enough to show an error message, not enough to turn
	// the control plane into storage for someone else's data.
	MaxResponseBody = 4096
	// MaxRetryAfter caps a receiver's Retry-After so a typo cannot park a
	// delivery for years.
	MaxRetryAfter = 24 * time.Hour
	// UserAgent identifies our requests to receivers.
	UserAgent = "Edgeward-Webhooks/1"

	// drainLimit is how much of an over-long response body is read and
	// discarded so the connection can be reused; beyond it, the connection
	// is closed instead.
	drainLimit = 64 << 10
	// maxErrorLen bounds Result.Error, which is stored with every attempt.
	maxErrorLen = 512
)

// Error classes of a failed attempt (Result.ErrorClass). They are stable
// strings: they are stored and shown through the API.
const (
	ClassBlockedAddress = "blocked_address"
	ClassDNS            = "dns"
	ClassConnection     = "connection"
	ClassTimeout        = "timeout"
	ClassTLS            = "tls"
	ClassRedirect       = "redirect"
	ClassHTTPStatus     = "http_status"
	ClassInvalidRequest = "invalid_request"
)

// Sender posts signed webhooks. Its zero value is ready to use. A Sender
// keeps one HTTP transport (and its keep-alive connections) across Sends;
// when Guard, RootCAs or Resolver change, the next Send replaces the
// transport so no connection opened under the old rules is reused. The
// fields must not be changed while a Send is running.
type Sender struct {
	// Guard decides which addresses may be dialled.
	Guard Guard
	// Timeout bounds a whole attempt including reading the response body;
	// DefaultTimeout when zero.
	Timeout time.Duration
	// RootCAs verifies receivers' certificates; nil means the system roots.
	RootCAs *x509.CertPool
	// Resolver resolves receivers' host names; nil means the default.
	Resolver *net.Resolver

	mu     sync.Mutex
	client *http.Client
	built  transportConfig
}

// Message is one webhook to deliver.
type Message struct {
	// URL is the destination, an https URL already accepted by CheckURL.
	URL string
	// ID is the webhook-id header, stable across retries so receivers can
	// deduplicate.
	ID string
	// Timestamp is the webhook-timestamp header: the attempt's time, so
	// receivers' replay windows accept retries. Zero means now.
	Timestamp time.Time
	// Body is the JSON payload.
	Body []byte
	// Secrets are the signing secrets, current first; two during a
	// rotation window.
	Secrets []string
	// AuthHeaderName and AuthHeaderValue are an optional extra header
	// (e.g. Authorization) for receivers that want a static credential too.
	AuthHeaderName, AuthHeaderValue string
}

// Result is what one attempt did, in the shape the attempt record stores.
type Result struct {
	Started, Ended time.Time
	// StatusCode is the receiver's HTTP status; 0 when there was no response.
	StatusCode int
	// Body is at most MaxResponseBody bytes of the response body, as valid
	// UTF-8 without NUL bytes (PostgreSQL text refuses NUL).
	Body []byte
	// Truncated reports that the response body was longer than Body.
	Truncated bool
	// RetryAfter is the receiver's Retry-After (delta seconds or HTTP-date)
	// on 429 and 503 answers, capped at MaxRetryAfter; 0 otherwise.
	RetryAfter time.Duration
	// ErrorClass is "" when the receiver answered 2xx, otherwise one of the
	// Class constants.
	ErrorClass string
	// Error is a short human message for the attempt record. It never
	// contains the URL's path or query string, the auth header value or a
	// signing secret.
	Error string
}

// Succeeded reports whether the receiver accepted the webhook (answered 2xx).
func (r Result) Succeeded() bool {
	return r.ErrorClass == "" && r.StatusCode >= 200 && r.StatusCode < 300
}

// Send makes one attempt to deliver m: a POST with Content-Type
// application/json, User-Agent Edgeward-Webhooks/1, the Standard Webhooks
// headers webhook-id, webhook-timestamp (unix seconds) and webhook-signature,
// and the extra auth header when set.
//
// Redirects are never followed (a 3xx is class "redirect"): following one
// would let a receiver point us anywhere. No proxy is taken from the
// environment, because a proxy would dial on our behalf past the address
// check. That check runs on every connection at connect time, on the address
// actually dialled, so a name that resolved to a public address when the
// destination was saved and to a private one now (DNS rebinding) is still
// refused. A URL host listed in Guard.AllowHosts skips the check.
//
// Send never returns an error: every failure is described in the Result.
func (s *Sender) Send(ctx context.Context, m Message) Result {
	res := Result{Started: time.Now()}
	done := func(class, msg string) Result {
		res.Ended = time.Now()
		res.ErrorClass = class
		if class != "" {
			res.Error = scrub(msg, m)
		}
		return res
	}

	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, msg := buildRequest(actx, m, res.Started)
	if req == nil {
		return done(ClassInvalidRequest, msg)
	}

	resp, err := s.httpClient().Do(req)
	if err != nil {
		class, msg := classify(err, actx)
		return done(class, msg)
	}
	defer resp.Body.Close()

	res.StatusCode = resp.StatusCode
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	// A body that stalls or breaks after the status line does not change
	// the outcome: the receiver has already said whether it took the
	// webhook. What arrived is kept.
	// The body is kept for the attempt record, which auditors read: a
	// receiver that echoes the request (debug endpoints, some error pages)
	// must not put the auth header or a secret there. Redaction runs before
	// truncation, over enough extra bytes that no secret is cut in half.
	limit := int64(MaxResponseBody + bodyRedactMargin)
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	more := int64(len(raw)) > limit
	if more {
		raw = raw[:limit]
		_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	}
	raw = []byte(redact(string(raw), sensitiveValues(m)))
	if len(raw) > MaxResponseBody || more {
		raw = raw[:min(len(raw), MaxResponseBody)]
		res.Truncated = true
	}
	res.Body = cleanBody(raw, res.Truncated)

	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return done("", "")
	case code >= 300 && code < 400:
		return done(ClassRedirect, fmt.Sprintf("receiver answered %d %s; redirects are not followed", code, http.StatusText(code)))
	default:
		return done(ClassHTTPStatus, strings.TrimSpace(fmt.Sprintf("receiver answered %d %s", code, http.StatusText(code))))
	}
}

// CloseIdleConnections closes the keep-alive connections the Sender holds,
// for shutdown and tests.
func (s *Sender) CloseIdleConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
}

// buildRequest validates m and returns the signed request, or nil and the
// reason it cannot be sent.
func buildRequest(ctx context.Context, m Message, now time.Time) (*http.Request, string) {
	if _, err := parseDestination(m.URL); err != nil {
		return nil, err.Error()
	}
	if m.ID == "" || !validHeaderValue(m.ID) {
		return nil, "the message id is empty or not a valid header value"
	}
	ts := m.Timestamp
	if ts.IsZero() {
		ts = now
	}
	sig, err := Sign(m.Secrets, m.ID, ts, m.Body)
	if err != nil {
		return nil, "cannot sign the message: " + err.Error()
	}
	if m.AuthHeaderName == "" && m.AuthHeaderValue != "" {
		return nil, "an auth header value is set without a header name"
	}
	if m.AuthHeaderName != "" {
		if err := CheckAuthHeader(m.AuthHeaderName, m.AuthHeaderValue); err != nil {
			return nil, err.Error()
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL, bytes.NewReader(m.Body))
	if err != nil {
		// Its text quotes the URL; parseDestination accepted it, so this
		// is not expected.
		return nil, "the URL cannot be requested"
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", UserAgent)
	h.Set("Webhook-Id", m.ID)
	h.Set("Webhook-Timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("Webhook-Signature", sig)
	if m.AuthHeaderName != "" {
		h.Set(m.AuthHeaderName, m.AuthHeaderValue)
	}
	return req, ""
}

// transportConfig is what a transport was built from; a change means the
// transport, and every connection it pools, must go.
type transportConfig struct {
	guard    Guard
	rootCAs  *x509.CertPool
	resolver *net.Resolver
}

func (c transportConfig) equal(o transportConfig) bool {
	return c.rootCAs == o.rootCAs && c.resolver == o.resolver &&
		slices.Equal(c.guard.AllowHosts, o.guard.AllowHosts) &&
		slices.Equal(c.guard.AllowNets, o.guard.AllowNets)
}

// httpClient returns the client for the Sender's current settings, replacing
// it when they changed since it was built.
func (s *Sender) httpClient() *http.Client {
	cfg := transportConfig{
		guard: Guard{
			AllowHosts: slices.Clone(s.Guard.AllowHosts),
			AllowNets:  slices.Clone(s.Guard.AllowNets),
		},
		rootCAs:  s.RootCAs,
		resolver: s.Resolver,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil && s.built.equal(cfg) {
		return s.client
	}
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
	s.client = newClient(cfg)
	s.built = cfg
	return s.client
}

func newClient(cfg transportConfig) *http.Client {
	guard := cfg.guard
	checked := &net.Dialer{
		Resolver:  cfg.resolver,
		KeepAlive: 30 * time.Second,
		// Control runs after the name is resolved and the socket created,
		// before connect: the address here is the one about to be
		// contacted, for every address happy eyeballs tries.
		Control: func(network, address string, _ syscall.RawConn) error {
			return guard.checkDial(network, address)
		},
	}
	trusted := &net.Dialer{Resolver: cfg.resolver, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// Without a proxy, addr is the URL's host and port, so an
			// operator's allowed name is matched against what the tenant
			// configured, not against what it resolved to.
			if host, _, err := net.SplitHostPort(addr); err == nil && guard.allowsHost(host) {
				return trusted.DialContext(ctx, network, addr)
			}
			return checked.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    cfg.rootCAs,
		},
		ForceAttemptHTTP2: true,
		// Many workers may post to one receiver host at once: keep enough
		// idle connections that HTTP/1.1 receivers are not re-handshaken
		// for every few deliveries.
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// checkDial is the connect-time address check.
func (g Guard) checkDial(network, address string) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fmt.Errorf("network %s is not used for webhooks", network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("unexpected dial address %q", address)
	}
	if !g.Allowed(ap.Addr()) {
		return &blockedError{ip: ap.Addr().WithZone("")}
	}
	return nil
}

// classify turns a failed request into an error class and a message built
// from the cause. *url.Error is unwrapped and never printed: its text
// carries the full URL, query string (and perhaps a customer's token)
// included.
func classify(err error, attempt context.Context) (class, msg string) {
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		cause = ue.Err
	}
	if b, ok := isBlocked(cause); ok {
		return ClassBlockedAddress, b.Error()
	}
	if errors.Is(cause, context.DeadlineExceeded) || errors.Is(attempt.Err(), context.DeadlineExceeded) {
		return ClassTimeout, "the receiver did not answer in time"
	}
	if errors.Is(cause, context.Canceled) {
		return ClassConnection, "the attempt was canceled"
	}
	var dnsErr *net.DNSError
	if errors.As(cause, &dnsErr) {
		if dnsErr.IsTimeout {
			return ClassDNS, fmt.Sprintf("resolving %s timed out", dnsErr.Name)
		}
		return ClassDNS, fmt.Sprintf("cannot resolve %s: %s", dnsErr.Name, dnsErr.Err)
	}
	if isTLSError(cause) {
		return ClassTLS, cause.Error()
	}
	var ne net.Error
	if errors.As(cause, &ne) && ne.Timeout() {
		return ClassTimeout, "the receiver did not answer in time"
	}
	if errors.Is(cause, io.EOF) || errors.Is(cause, io.ErrUnexpectedEOF) {
		return ClassConnection, "the receiver closed the connection without an answer"
	}
	return ClassConnection, cause.Error()
}

// isTLSError reports whether err came from establishing TLS.
func isTLSError(err error) bool {
	var (
		recordErr   tls.RecordHeaderError
		verifyErr   *tls.CertificateVerificationError
		alertErr    tls.AlertError
		echErr      *tls.ECHRejectionError
		unknownCA   x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidErr  x509.CertificateInvalidError
		rootsErr    x509.SystemRootsError
		critErr     x509.UnhandledCriticalExtension
		constraint  x509.ConstraintViolationError
		insecureAlg x509.InsecureAlgorithmError
		opErr       *net.OpError
	)
	switch {
	case errors.As(err, &recordErr), errors.As(err, &verifyErr), errors.As(err, &alertErr),
		errors.As(err, &echErr), errors.As(err, &unknownCA), errors.As(err, &hostErr),
		errors.As(err, &invalidErr), errors.As(err, &rootsErr), errors.As(err, &critErr),
		errors.As(err, &constraint), errors.As(err, &insecureAlg),
		errors.Is(err, http.ErrSchemeMismatch):
		return true
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// crypto/tls reports an alert from the peer (handshake failure,
		// protocol version, ...) this way, with an unexported alert type.
		return true
	}
	// The rest of crypto/tls's handshake errors are plain errors.New values;
	// their common prefix is all there is to recognise them by.
	return strings.HasPrefix(err.Error(), "tls: ")
}

// parseRetryAfter reads a Retry-After value, delta seconds or HTTP-date,
// relative to now. Anything unreadable, or a date in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter // too many digits to parse is "very long"
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	// HTTP-dates have whole seconds; rounding up never retries early.
	if r := d.Truncate(time.Second); r != d {
		d = r + time.Second
	}
	return min(d, MaxRetryAfter)
}

// cleanBody makes a response body safe to store as text: NUL bytes removed,
// invalid UTF-8 replaced, a rune cut by truncation dropped, and still at most
// MaxResponseBody bytes.
func cleanBody(b []byte, truncated bool) []byte {
	if truncated {
		b = trimPartialRune(b)
	}
	b = bytes.ReplaceAll(b, []byte{0}, nil)
	b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
	if len(b) > MaxResponseBody {
		// Replacement characters can make the text longer than the input.
		cut := MaxResponseBody
		for cut > 0 && !utf8.RuneStart(b[cut]) {
			cut--
		}
		b = b[:cut]
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

// bodyRedactMargin is read past MaxResponseBody so that a secret straddling
// the cut is still recognised and redacted (auth values are at most 4 KiB).
const bodyRedactMargin = 4096 + 64

// sensitiveValues are the strings of a message that must never be stored:
// the auth header value, the secrets and their keys, and the URL's query
// and path (receivers often carry their own token there).
func sensitiveValues(m Message) []string {
	var sensitive []string
	add := func(s string) {
		if len(s) >= 4 {
			sensitive = append(sensitive, s)
		}
	}
	add(m.AuthHeaderValue)
	for _, s := range m.Secrets {
		add(s)
		add(strings.TrimPrefix(s, secretPrefix))
	}
	if u, err := url.Parse(m.URL); err == nil {
		add(u.RawQuery)
		if q, err := url.QueryUnescape(u.RawQuery); err == nil {
			add(q)
		}
		for _, vs := range u.Query() {
			for _, v := range vs {
				add(v)
			}
		}
		if len(u.Path) > 1 {
			add(u.Path)
			add(u.EscapedPath())
		}
	}
	// Longest first, so a value inside a longer one cannot leave a tail.
	sort.Slice(sensitive, func(i, j int) bool { return len(sensitive[i]) > len(sensitive[j]) })
	return sensitive
}

// redact replaces every sensitive value in text.
func redact(text string, sensitive []string) string {
	for _, s := range sensitive {
		text = strings.ReplaceAll(text, s, "[redacted]")
	}
	return text
}

// trimPartialRune drops an incomplete UTF-8 sequence at the end of b.
func trimPartialRune(b []byte) []byte {
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			break
		}
	}
	return b
}

// scrub removes from msg anything of m that must not reach the attempt
// record: the auth header value, the secrets and their keys, and the URL's
// query string, its values and its path (some services put the token in the
// path). Messages are built from causes that should contain none of these;
// this is the second line of defence, for instance against a receiver that
// echoes our headers into a malformed response quoted by net/http.
func scrub(msg string, m Message) string {
	msg = redact(msg, sensitiveValues(m))
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > maxErrorLen {
		cut := maxErrorLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can be sent as a header value: no
// control characters other than tab, which also rules out header injection.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// reservedHeader reports whether the auth header would replace one Send
// sets itself (any webhook-* name, present or future) or one that frames the
// request.
func reservedHeader(name string) bool {
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "webhook-") {
		return true
	}
	switch lower {
	case "content-type", "content-length", "user-agent", "host", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
		"upgrade", "proxy-connection", "expect":
		return true
	}
	return false
}

// HeaderError says why an extra auth header cannot be sent.
type HeaderError struct {
	// Field is "name" or "value".
	Field, Reason string
}

func (e *HeaderError) Error() string { return e.Reason }

// CheckAuthHeader is the one rule for a destination's extra header, applied
// when a tenant_admin sets it and again before every Send: a valid HTTP
// token for a name the wire format does not own, and a value without
// control characters (which also rules out header injection).
func CheckAuthHeader(name, value string) error {
	if !validHeaderName(name) {
		return &HeaderError{Field: "name", Reason: "the auth header name is not a valid HTTP header name"}
	}
	if reservedHeader(name) {
		return &HeaderError{Field: "name", Reason: fmt.Sprintf("the auth header name %s is reserved: the webhook wire format sets it", http.CanonicalHeaderKey(name))}
	}
	if !validHeaderValue(value) {
		return &HeaderError{Field: "value", Reason: "the auth header value contains control characters"}
	}
	return nil
}
