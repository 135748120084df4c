package auth

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTokenRoundTrip(t *testing.T) {
	tenant := uuid.Must(uuid.NewV7())
	tok, hash := NewToken(tenant)
	assert.True(t, strings.HasPrefix(tok, "ew_"))
	assert.Len(t, tok, TokenLen)
	got, gotHash, err := ParseToken(tok)
	require.NoError(t, err)
	assert.Equal(t, tenant, got)
	assert.Equal(t, hash, gotHash)

	other, _ := NewToken(tenant)
	assert.NotEqual(t, tok, other, "256 random bits per token")
}

func TestMalformedTokens(t *testing.T) {
	tok, _ := NewToken(uuid.Must(uuid.NewV7()))
	flipped := []byte(tok)
	flipped[20] = map[bool]byte{true: 'b', false: 'a'}[flipped[20] == 'a']
	for name, s := range map[string]string{
		"empty":       "",
		"prefix":      "gh" + tok[2:],
		"truncated":   tok[:len(tok)-1],
		"extended":    tok + "a",
		"uppercase":   strings.ToUpper(tok),
		"bad char":    tok[:10] + "1" + tok[11:],
		"one changed": string(flipped),
	} {
		_, _, err := ParseToken(s)
		assert.ErrorIs(t, err, ErrMalformedToken, name)
	}
}
