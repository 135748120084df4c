// Package identity keeps the agent's identity in its state directory: the
// private key (generated here, never sent anywhere), the client certificate
// the control plane issued for it, the control plane's CA, and the agent's
// configuration.
//
// Files are written to a temporary name, synced and renamed, so a crash
// never leaves half a file. A certificate rotation writes the new key and
// certificate beside the old ones (agent.key.next, agent.crt.next) and
// promotes them only after the new certificate has worked once; Load picks
// the newest key/certificate pair that belongs together, so a crash at any
// step of a rotation leaves the agent able to connect.
package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// File names in the state directory.
const (
	KeyFile     = "agent.key"
	CertFile    = "agent.crt"
	CAFile      = "ca.crt"
	ConfigFile  = "config.json"
	nextSuffix  = ".next"
	tempSuffix  = ".tmp"
	privateMode = 0o600
)

// ErrNotEnrolled means the state directory holds no identity. The errors
// that wrap it name the directory.
var ErrNotEnrolled = errors.New("this agent is not enrolled")

// Config is what the agent remembers about its enrollment.
type Config struct {
	Server                   string    `json:"server"`
	AgentID                  string    `json:"agent_id"`
	TenantID                 string    `json:"tenant_id"`
	HeartbeatIntervalSeconds int       `json:"heartbeat_interval_seconds"`
	EnrolledAt               time.Time `json:"enrolled_at"`
}

// Identity is a loaded identity.
type Identity struct {
	Dir    string
	Config Config
	Key    *ecdsa.PrivateKey
	Cert   *x509.Certificate
	CA     *x509.Certificate
}

// TLSCertificate is the client certificate for mutual TLS.
func (id *Identity) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
}

// CAPool is a pool holding the control plane's CA.
func (id *Identity) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(id.CA)
	return p
}

// NewKey generates an ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// CSR is a DER certificate request for key. The subject is informative: the
// control plane decides the identity.
func CSR(key *ecdsa.PrivateKey, hostname string) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: hostname}}, key)
}

// Fingerprint is the hex SHA-256 of a certificate.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Exists reports whether dir holds an identity (complete or not).
func Exists(dir string) bool {
	for _, f := range []string{KeyFile, CertFile, ConfigFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}

// BeginEnrollment stores a fresh key as agent.key.next, before it is used
// in a CSR, so the key of any certificate the server issues is on disk. An
// identity already in the directory stays in use until Enrolled promotes
// the new one: a failed enrollment leaves a working agent working.
func BeginEnrollment(dir string) (*Rotation, error) {
	_ = os.Remove(filepath.Join(dir, CertFile+nextSuffix))
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, KeyFile+nextSuffix), key); err != nil {
		return nil, err
	}
	return &Rotation{dir: dir, Key: key}, nil
}

// Enrolled records what Enroll returned and promotes the new identity.
func (r *Rotation) Enrolled(cfg Config, certDER, caDER []byte) (*Identity, error) {
	if _, err := x509.ParseCertificate(caDER); err != nil {
		return nil, fmt.Errorf("the control plane returned an unreadable CA certificate: %w", err)
	}
	if err := r.SaveCertificate(certDER); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(r.dir, CAFile), pemBytes("CERTIFICATE", caDER), 0o644); err != nil {
		return nil, err
	}
	if err := SaveConfig(r.dir, cfg); err != nil {
		return nil, err
	}
	return r.Finish()
}

// SaveConfig writes config.json.
func SaveConfig(dir string, cfg Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, ConfigFile), append(b, '\n'), privateMode)
}

// LoadConfig reads config.json.
func LoadConfig(dir string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		where := dir
		if abs, err := filepath.Abs(dir); err == nil {
			where = abs
		}
		return cfg, fmt.Errorf("%w: the state directory %s holds no %s", ErrNotEnrolled, where, ConfigFile)
	}
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("read %s: %w", ConfigFile, err)
	}
	return cfg, nil
}

// Peek reads the identity without changing the state directory, for
// commands such as status that may run beside a running agent.
func Peek(dir string) (*Identity, error) {
	id, _, _, err := choose(dir)
	return id, err
}

// Load reads the identity. Of the key and certificate files present
// (agent.key, agent.crt and their .next forms from a rotation), it takes the
// newest certificate whose public key matches a key; if that pair was a
// rotation's .next files, it finishes promoting them, and it removes
// leftovers of a rotation that never got a certificate. Only the process
// that owns the state directory (it holds the queue's lock) may call it.
func Load(dir string) (*Identity, error) {
	id, keyPath, certPath, err := choose(dir)
	if err != nil {
		return nil, err
	}
	if err := promote(dir, keyPath, certPath); err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(dir, KeyFile+nextSuffix))
	_ = os.Remove(filepath.Join(dir, CertFile+nextSuffix))
	return id, nil
}

// choose finds the newest matching key and certificate.
func choose(dir string) (id *Identity, keyPath, certPath string, err error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, "", "", err
	}
	ca, err := readCert(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, "", "", fmt.Errorf("read %s: %w", CAFile, err)
	}
	var key *ecdsa.PrivateKey
	var cert *x509.Certificate
	for _, kp := range []string{KeyFile, KeyFile + nextSuffix} {
		k, err := readKey(filepath.Join(dir, kp))
		if err != nil {
			continue
		}
		for _, cp := range []string{CertFile, CertFile + nextSuffix} {
			c, err := readCert(filepath.Join(dir, cp))
			if err != nil || !sameKey(c, k) {
				continue
			}
			if cert == nil || c.NotBefore.After(cert.NotBefore) {
				key, cert, keyPath, certPath = k, c, kp, cp
			}
		}
	}
	if cert == nil {
		return nil, "", "", fmt.Errorf("%s and %s do not match (no certificate belongs to a stored key); enroll again with a new token", KeyFile, CertFile)
	}
	return &Identity{Dir: dir, Config: cfg, Key: key, Cert: cert, CA: ca}, keyPath, certPath, nil
}

// promote renames a chosen pair into place: the certificate first; until
// the key follows, choose still finds the pair (agent.key.next with
// agent.crt).
func promote(dir, keyPath, certPath string) error {
	if certPath == CertFile && keyPath == KeyFile {
		return nil
	}
	if certPath != CertFile {
		if err := os.Rename(filepath.Join(dir, certPath), filepath.Join(dir, CertFile)); err != nil {
			return err
		}
	}
	if keyPath != KeyFile {
		if err := os.Rename(filepath.Join(dir, keyPath), filepath.Join(dir, KeyFile)); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// Rotation is a certificate rotation (or a re-enrollment) in progress: a
// new key in agent.key.next and, once issued, its certificate in
// agent.crt.next.
type Rotation struct {
	dir string
	Key *ecdsa.PrivateKey
	// Cert is set when a previous attempt already stored the certificate
	// for Key: the attempt resumes from there instead of starting over
	// (starting over would discard the only key of a certificate the
	// server may already consider current).
	Cert *x509.Certificate
}

// BeginRotation resumes an interrupted rotation whose certificate was
// stored, or makes and stores a new next key.
func BeginRotation(dir string) (*Rotation, error) {
	if k, err := readKey(filepath.Join(dir, KeyFile+nextSuffix)); err == nil {
		if c, err := readCert(filepath.Join(dir, CertFile+nextSuffix)); err == nil && sameKey(c, k) {
			return &Rotation{dir: dir, Key: k, Cert: c}, nil
		}
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, KeyFile+nextSuffix), key); err != nil {
		return nil, err
	}
	return &Rotation{dir: dir, Key: key}, nil
}

// SaveCertificate stores the certificate issued for the next key
// (agent.crt.next).
func (r *Rotation) SaveCertificate(certDER []byte) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("the control plane returned an unreadable certificate: %w", err)
	}
	if !sameKey(cert, r.Key) {
		return errors.New("the control plane returned a certificate for another key")
	}
	if err := writeFile(filepath.Join(r.dir, CertFile+nextSuffix), pemBytes("CERTIFICATE", certDER), 0o644); err != nil {
		return err
	}
	r.Cert = cert
	return nil
}

// Finish promotes the next key and certificate and returns the identity
// that uses them. The server keeps the old certificate valid until the new
// one is first used, so promoting before that use is safe.
func (r *Rotation) Finish() (*Identity, error) {
	if r.Cert == nil {
		return nil, errors.New("finish rotation: no certificate was stored")
	}
	if err := promote(r.dir, KeyFile+nextSuffix, CertFile+nextSuffix); err != nil {
		return nil, err
	}
	return Load(r.dir)
}

// Abandon removes the next key and certificate (the rotation failed before
// the server issued anything).
func (r *Rotation) Abandon() {
	_ = os.Remove(filepath.Join(r.dir, KeyFile+nextSuffix))
	_ = os.Remove(filepath.Join(r.dir, CertFile+nextSuffix))
}

func sameKey(cert *x509.Certificate, key *ecdsa.PrivateKey) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && pub.Equal(&key.PublicKey)
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no certificate", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s is not an ECDSA key", path)
	}
	return ec, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writeFile(path, pemBytes("PRIVATE KEY", der), privateMode)
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeFile replaces path atomically and durably.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + tempSuffix
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
