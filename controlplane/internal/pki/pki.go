// Package pki is the control plane's certificate authority. It is created on
// first start in the data directory (ca.crt, ca.key) and issues the server's
// own TLS certificate; agent certificates come from it too.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File names inside the data directory.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

// CA is a loaded certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// LoadOrCreate loads the CA from dir, creating it on first use. The key file
// is 0600 and created exclusively, so two replicas starting at once on a
// shared directory cannot both create one.
func LoadOrCreate(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: create data dir: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		if err := create(certPath, keyPath); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
	}
	// Another process may be writing the certificate right after the key.
	var ca *CA
	var err error
	for i := 0; i < 50; i++ {
		if ca, err = load(certPath, keyPath); err == nil {
			return ca, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}

func create(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("ca: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("ca: encode key: %w", err)
	}
	f, err := os.OpenFile(keyPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("ca: create key file: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		_ = f.Close()
		return fmt.Errorf("ca: write key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca: write key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Edgeward Control Plane CA", Organization: []string{"Edgeward"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("ca: self-sign: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	tmp := certPath + ".tmp"
	if err := os.WriteFile(tmp, pemBytes, 0o644); err != nil {
		return fmt.Errorf("ca: write certificate: %w", err)
	}
	return os.Rename(tmp, certPath)
}

func load(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("ca: read %s: %w", certPath, err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("ca: %s holds no certificate", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: parse %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca: read key: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("ca: %s holds no key", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: parse key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("ca: key cannot sign")
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: signer}, nil
}

// Fingerprint is the hex SHA-256 of the CA certificate (DER), the value an
// enrollment token pins.
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// IssueServer issues a TLS server certificate for hosts (names and IPs).
func (ca *CA) IssueServer(hosts []string, lifetime time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server cert: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"Edgeward"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server cert: sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerCert serves a server certificate from the CA, re-issuing it when a
// third of its lifetime is left, so a long-running server never presents an
// expired certificate.
type ServerCert struct {
	CA       *CA
	Hosts    []string
	Lifetime time.Duration

	mu   sync.Mutex
	cert *tls.Certificate
}

// GetCertificate is a tls.Config hook.
func (s *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert == nil || time.Until(s.cert.Leaf.NotAfter) < s.Lifetime/3 {
		c, err := s.CA.IssueServer(s.Hosts, s.Lifetime)
		if err != nil {
			return nil, err
		}
		s.cert = &c
	}
	return s.cert, nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// AgentURI is the identity an agent certificate carries as its URI SAN.
func AgentURI(tenantID, agentID string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: "edgeward", Path: "/tenant/" + tenantID + "/agent/" + agentID}
}

// ParseAgentURI reads the tenant and agent ids from a certificate's URI SAN.
func ParseAgentURI(cert *x509.Certificate) (tenantID, agentID string, err error) {
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != "edgeward" {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
		if len(parts) == 4 && parts[0] == "tenant" && parts[2] == "agent" && parts[1] != "" && parts[3] != "" {
			return parts[1], parts[3], nil
		}
	}
	return "", "", errors.New("the certificate names no Edgeward agent (URI SAN spiffe://edgeward/tenant/{tenant}/agent/{agent})")
}

// ErrWeakKey means a CSR's key is not ECDSA P-256.
var ErrWeakKey = errors.New("the certificate request must be for an ECDSA P-256 key")

// ParseAgentCSR decodes a DER certificate request, checks its signature and
// requires an ECDSA P-256 key (what the agent generates).
func ParseAgentCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, ErrWeakKey
	}
	return csr, nil
}

// IssueAgent signs a client certificate for an agent's key. Only the public
// key of the request is used: the identity comes from the server.
func (ca *CA) IssueAgent(csr *x509.CertificateRequest, tenantID, agentID string, lifetime time.Duration) (*x509.Certificate, error) {
	now := time.Now()
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	// Backdate a little for clock skew, but never so much that a short
	// lifetime is mostly in the past.
	skew := min(5*time.Minute, lifetime/10)
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: agentID, Organization: []string{"Edgeward agent"}, OrganizationalUnit: []string{tenantID}},
		NotBefore:    now.Add(-skew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{AgentURI(tenantID, agentID)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue agent certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Pool is a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CertFingerprint is the SHA-256 of a certificate's DER bytes.
func CertFingerprint(cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.Raw)
	return sum[:]
}

// SerialHex is a certificate serial number as colon-free lowercase hex.
func SerialHex(cert *x509.Certificate) string {
	return fmt.Sprintf("%x", cert.SerialNumber)
}
