// Package credential is the text form shared by Edgeward's bearer secrets
// (API tokens, enrollment tokens): a prefix naming the kind, then the
// lowercase, unpadded base32 of the payload followed by a CRC-32C of it.
// Lowercase base32 survives copy and paste, double-click selection and
// case-insensitive systems; the checksum lets servers and secret scanners
// reject a mistyped or truncated credential without a lookup.
package credential

import (
	"encoding/base32"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
)

var (
	encoding   = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// ErrMalformed means the string is not a credential of the expected kind.
var ErrMalformed = errors.New("malformed credential")

// Len is the length of a credential with prefix and a payload of n bytes.
func Len(prefix string, n int) int {
	return len(prefix) + encoding.EncodedLen(n+4)
}

// Encode makes the text form of payload.
func Encode(prefix string, payload []byte) string {
	buf := make([]byte, len(payload)+4)
	copy(buf, payload)
	binary.BigEndian.PutUint32(buf[len(payload):], crc32.Checksum(payload, castagnoli))
	return prefix + encoding.EncodeToString(buf)
}

// Decode checks the prefix, length and checksum of s and returns its
// payload of n bytes.
func Decode(prefix, s string, n int) ([]byte, error) {
	if len(s) != Len(prefix, n) || !strings.HasPrefix(s, prefix) {
		return nil, ErrMalformed
	}
	buf, err := encoding.DecodeString(s[len(prefix):])
	if err != nil || len(buf) != n+4 {
		return nil, ErrMalformed
	}
	if crc32.Checksum(buf[:n], castagnoli) != binary.BigEndian.Uint32(buf[n:]) {
		return nil, ErrMalformed
	}
	return buf[:n], nil
}
