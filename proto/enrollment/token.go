// Package enrollment is the wire format of an enrollment token, shared by
// the agent (which reads the CA fingerprint out of it) and the control plane
// (which issues and checks it).
//
// A token is "ewe_" followed by the lowercase, unpadded base32 encoding of
// 32 random bytes, the 16-byte tenant id, the 32-byte SHA-256 fingerprint of
// the control plane's CA certificate, and a CRC-32C of all three. Like
// `kubeadm join --discovery-token-ca-cert-hash`, the fingerprint lets a fresh
// agent verify the server on first contact without a CA file; the tenant id
// lets the server find the token under its tenant's row-level security; the
// checksum catches a mistyped token before any network traffic.
package enrollment

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"

	"github.com/edgeward/edgeward/proto/credential"
)

// Prefix starts every enrollment token.
const Prefix = "ewe_"

const (
	secretLen  = 32
	tenantLen  = 16
	fpLen      = sha256.Size
	payloadLen = secretLen + tenantLen + fpLen
)

// TokenLen is the length of every token string.
var TokenLen = credential.Len(Prefix, payloadLen)

// ErrMalformed means the string cannot be an enrollment token.
var ErrMalformed = errors.New("not an Edgeward enrollment token (they start with ewe_ and carry a checksum)")

// Token is a parsed enrollment token.
type Token struct {
	// TenantID is the tenant the token admits agents to.
	TenantID [16]byte
	// CAFingerprint is the SHA-256 of the CA certificate (DER) the server's
	// certificate must chain to.
	CAFingerprint [32]byte
	// Hash is what the server stores: SHA-256 of the whole token string.
	Hash [32]byte
}

// New makes a token for a tenant and a CA fingerprint.
func New(tenantID [16]byte, caFingerprint [32]byte) (string, Token) {
	payload := make([]byte, payloadLen)
	_, _ = rand.Read(payload[:secretLen])
	copy(payload[secretLen:], tenantID[:])
	copy(payload[secretLen+tenantLen:], caFingerprint[:])
	s := credential.Encode(Prefix, payload)
	return s, Token{TenantID: tenantID, CAFingerprint: caFingerprint, Hash: sha256.Sum256([]byte(s))}
}

// Parse checks a token's form and checksum.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	payload, err := credential.Decode(Prefix, s, payloadLen)
	if err != nil {
		return Token{}, ErrMalformed
	}
	var t Token
	copy(t.TenantID[:], payload[secretLen:])
	copy(t.CAFingerprint[:], payload[secretLen+tenantLen:])
	t.Hash = sha256.Sum256([]byte(s))
	return t, nil
}
