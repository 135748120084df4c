package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// verifyStandardWebhook is an independent verifier written from the
// Standard Webhooks specification: the signed content is
// "{webhook-id}.{webhook-timestamp}.{body}", the key is the base64 after
// "whsec_", and webhook-signature is a space-separated list of
// "v1,{base64 HMAC-SHA256}", any of which may match.
func verifyStandardWebhook(secret string, h http.Header, body []byte) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, part := range strings.Fields(h.Get("webhook-signature")) {
		v, sig, ok := strings.Cut(part, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

func headersFor(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", sig)
	return h
}

func TestSignMatchesSpecificationTestVector(t *testing.T) {
	// From the standard-webhooks repository's library tests.
	sig, err := Sign([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "msg_p5jXN8AQM9LWM0D4loKWxJek",
		time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))

	require.NoError(t, err)
	assert.Equal(t, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", sig)
}

func TestSignIsVerifiedIndependently(t *testing.T) {
	secret, err := NewSecret()
	require.NoError(t, err)
	ts := time.Now()
	body := []byte(`{"type":"alert.raised","data":{"id":"0190"}}`)

	sig, err := Sign([]string{secret}, "msg_1", ts, body)

	require.NoError(t, err)
	assert.True(t, verifyStandardWebhook(secret, headersFor("msg_1", ts, sig), body))
	assert.False(t, verifyStandardWebhook(secret, headersFor("msg_1", ts, sig), []byte(`{}`)), "tampered body")
	assert.False(t, verifyStandardWebhook(secret, headersFor("msg_2", ts, sig), body), "other id")
	assert.False(t, verifyStandardWebhook(secret, headersFor("msg_1", ts.Add(time.Second), sig), body), "other timestamp")
}

func TestSignDuringRotationCarriesBothSignatures(t *testing.T) {
	current, err := NewSecret()
	require.NoError(t, err)
	previous, err := NewSecret()
	require.NoError(t, err)
	other, err := NewSecret()
	require.NoError(t, err)
	ts := time.Now()
	body := []byte(`{}`)

	sig, err := Sign([]string{current, previous}, "msg_1", ts, body)

	require.NoError(t, err)
	parts := strings.Split(sig, " ")
	require.Len(t, parts, 2, "one signature per secret, single space")
	for _, p := range parts {
		assert.True(t, strings.HasPrefix(p, "v1,"))
	}
	h := headersFor("msg_1", ts, sig)
	assert.True(t, verifyStandardWebhook(current, h, body), "receiver on the new secret")
	assert.True(t, verifyStandardWebhook(previous, h, body), "receiver still on the old secret")
	assert.False(t, verifyStandardWebhook(other, h, body))

	// Order follows the secrets: the current one first.
	only, err := Sign([]string{current}, "msg_1", ts, body)
	require.NoError(t, err)
	assert.Equal(t, only, parts[0])
}

func TestSignRefusesBadInput(t *testing.T) {
	good, err := NewSecret()
	require.NoError(t, err)
	tests := map[string]struct {
		secrets []string
		id      string
	}{
		"no secrets": {nil, "msg"},
		"no prefix":  {[]string{strings.TrimPrefix(good, "whsec_")}, "msg"},
		"not base64": {[]string{"whsec_!!!!"}, "msg"},
		"empty key":  {[]string{"whsec_"}, "msg"},
		"second bad": {[]string{good, "whsec_%%%"}, "msg"},
		"empty id":   {[]string{good}, ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Sign(tt.secrets, tt.id, time.Now(), []byte(`{}`))
			require.Error(t, err)
			assert.NotContains(t, err.Error(), strings.TrimPrefix(good, "whsec_"), "errors never quote a secret")
		})
	}
}

func TestNewSecretIsValidAndFresh(t *testing.T) {
	a, err := NewSecret()
	require.NoError(t, err)
	b, err := NewSecret()
	require.NoError(t, err)

	assert.True(t, strings.HasPrefix(a, "whsec_"))
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "whsec_"))
	require.NoError(t, err)
	assert.Len(t, key, 32)
	assert.True(t, ValidSecret(a))
	assert.NotEqual(t, a, b)
}

func TestValidSecret(t *testing.T) {
	key32 := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := map[string]bool{
		"whsec_" + key32:                         true,
		key32:                                    false, // no prefix
		"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw": false, // 24-byte key
		"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 33)):    false,
		"whsec_" + key32[:len(key32)-1]:                                   false, // bad padding
		"whsec_" + base64.RawURLEncoding.EncodeToString(make([]byte, 32)): false,
		"": false,
	}
	for s, want := range tests {
		assert.Equal(t, want, ValidSecret(s), s)
	}
}
