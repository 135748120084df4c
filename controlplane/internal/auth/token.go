// Package auth authenticates API callers and owns principals and API tokens.
//
// An API token is "ew_" followed by the lowercase, unpadded base32 encoding
// of 32 random bytes, the 16-byte tenant id and a CRC-32C of both. The tenant
// id lets the server find the token under its tenant's row-level security
// (every lookup runs inside that tenant); the checksum lets the server, and
// secret scanners, reject a mistyped or truncated token without a database
// round trip. Only the SHA-256 of the whole token string is stored.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"

	"github.com/google/uuid"

	"github.com/edgeward/edgeward/proto/credential"
)

// TokenPrefix starts every API token.
const TokenPrefix = "ew_"

const (
	secretLen  = 32 // 256 random bits
	payloadLen = secretLen + 16
)

// TokenLen is the length of every token string.
var TokenLen = credential.Len(TokenPrefix, payloadLen)

// ErrMalformedToken means the string cannot be an Edgeward API token.
var ErrMalformedToken = errors.New("not an Edgeward API token")

// NewToken returns a fresh token for a tenant and the hash to store.
func NewToken(tenantID uuid.UUID) (token string, hash []byte) {
	payload := make([]byte, payloadLen)
	// crypto/rand.Read never returns an error on supported platforms.
	_, _ = rand.Read(payload[:secretLen])
	copy(payload[secretLen:], tenantID[:])
	token = credential.Encode(TokenPrefix, payload)
	return token, HashToken(token)
}

// ParseToken checks a token's form and checksum and returns its tenant and
// the hash to look up.
func ParseToken(token string) (tenantID uuid.UUID, hash []byte, err error) {
	payload, err := credential.Decode(TokenPrefix, token, payloadLen)
	if err != nil {
		return uuid.Nil, nil, ErrMalformedToken
	}
	copy(tenantID[:], payload[secretLen:])
	return tenantID, HashToken(token), nil
}

// HashToken is the stored form of a token.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}
