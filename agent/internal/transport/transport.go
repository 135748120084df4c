// Package transport is the agent's side of the agent protocol: Connect RPC
// over TLS to the control plane. Enroll verifies the server against the CA
// fingerprint the enrollment token pins; every later call is mutual TLS with
// the agent's certificate, verified against the CA the server returned.
package transport

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/edgeward/edgeward/agent/internal/identity"
	"github.com/edgeward/edgeward/proto/enrollment"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
	"github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1/agentv1connect"
)

// CallTimeout bounds one call.
const CallTimeout = 30 * time.Second

// ServerURL checks and normalizes a control plane URL.
func ServerURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("--server must be a URL like https://controlplane.example:8443, not %q", raw)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("--server must use https, not %q", u.Scheme)
	}
	return u.Scheme + "://" + u.Host, nil
}

func newHTTPClient(tlsCfg *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     5 * time.Minute,
		TLSHandshakeTimeout: 15 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}}
}

// PinError means the server's certificate chain does not contain the CA the
// enrollment token pins.
type PinError struct {
	Want, Got []string
}

func (e *PinError) Error() string {
	return fmt.Sprintf("the server's certificate does not chain to the CA this token pins (sha256 %s; the server presented %s): wrong server, or someone in between",
		e.Want[0], strings.Join(e.Got, ", "))
}

// pinnedTLS trusts exactly the CA whose fingerprint the token carries, and
// checks the server's name against it.
func pinnedTLS(serverName string, fp [32]byte) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is verified by VerifyConnection against the pinned CA,
		// since the agent has no CA file yet.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		ServerName:         serverName,
		VerifyConnection: func(cs tls.ConnectionState) error {
			var ca *x509.Certificate
			var seen []string
			for _, c := range cs.PeerCertificates {
				sum := sha256.Sum256(c.Raw)
				seen = append(seen, hex.EncodeToString(sum[:]))
				if sum == fp && c.IsCA {
					ca = c
				}
			}
			if ca == nil {
				return &PinError{Want: []string{hex.EncodeToString(fp[:])}, Got: seen}
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			// serverName, not cs.ServerName: the latter is empty for an IP
			// address, and the address must be checked too.
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: serverName,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if err != nil {
				return fmt.Errorf("the server's certificate chains to the pinned CA but does not verify: %w", err)
			}
			return nil
		},
	}
}

// Enroll sends the enrollment request to the server, trusting only the CA
// the token pins. The token never leaves the agent unless the server proved
// it holds a certificate from that CA.
func Enroll(ctx context.Context, server string, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
	tok, err := enrollment.Parse(req.GetToken())
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(server)
	if err != nil {
		return nil, err
	}
	hc := newHTTPClient(pinnedTLS(u.Hostname(), tok.CAFingerprint))
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	resp, err := agentv1connect.NewEnrollmentServiceClient(hc, server).Enroll(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, explain(err)
	}
	if len(resp.Msg.GetCaCertificatesDer()) == 0 {
		return nil, errors.New("the server returned no CA certificate")
	}
	if sha256.Sum256(resp.Msg.GetCaCertificatesDer()[0]) != tok.CAFingerprint {
		return nil, errors.New("the server returned a CA certificate other than the one the token pins")
	}
	return resp.Msg, nil
}

// Client makes the calls of an enrolled agent over mutual TLS.
type Client struct {
	server string

	mu    sync.Mutex
	id    *identity.Identity
	hc    *http.Client
	agent agentv1connect.AgentServiceClient
}

// NewClient returns a client that authenticates as id.
func NewClient(server string, id *identity.Identity) *Client {
	c := &Client{server: server}
	c.SetIdentity(id)
	return c
}

// SetIdentity switches to another certificate (after a rotation). New
// connections are made, so the server sees the new certificate at once.
func (c *Client) SetIdentity(id *identity.Identity) {
	u, _ := url.Parse(c.server)
	cert := id.TLSCertificate()
	hc := newHTTPClient(&tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      id.CAPool(),
		ServerName:   u.Hostname(),
		Certificates: []tls.Certificate{cert},
	})
	c.mu.Lock()
	old := c.hc
	c.id, c.hc, c.agent = id, hc, agentv1connect.NewAgentServiceClient(hc, c.server)
	c.mu.Unlock()
	if old != nil {
		old.CloseIdleConnections()
	}
}

// Identity is the identity the client uses.
func (c *Client) Identity() *identity.Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

func (c *Client) rpc() agentv1connect.AgentServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agent
}

// Close drops idle connections.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hc.CloseIdleConnections()
}

// Heartbeat delivers reports (and the queue's current figures) and returns
// what the server acknowledged.
func (c *Client) Heartbeat(ctx context.Context, req *agentv1.HeartbeatRequest) (*agentv1.HeartbeatResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	resp, err := c.rpc().Heartbeat(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, explain(err)
	}
	return resp.Msg, nil
}

// RotateCertificate asks for a certificate for a new key.
func (c *Client) RotateCertificate(ctx context.Context, csrDER []byte) (*agentv1.RotateCertificateResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	resp, err := c.rpc().RotateCertificate(ctx, connect.NewRequest(&agentv1.RotateCertificateRequest{CsrDer: csrDER}))
	if err != nil {
		return nil, explain(err)
	}
	return resp.Msg, nil
}

// Refused means the control plane refused the agent's identity or token:
// retrying will not help (revoked, replaced, expired, unknown).
type Refused struct{ Msg string }

func (e *Refused) Error() string { return e.Msg }

// explain turns Connect errors into ones a person can act on.
func explain(err error) error {
	var pin *PinError
	if errors.As(err, &pin) {
		return pin
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied:
		var ce *connect.Error
		if errors.As(err, &ce) {
			return &Refused{Msg: ce.Message()}
		}
		return &Refused{Msg: err.Error()}
	case connect.CodeInvalidArgument:
		var ce *connect.Error
		if errors.As(err, &ce) {
			return errors.New("the control plane rejected the request: " + ce.Message())
		}
	}
	return err
}
