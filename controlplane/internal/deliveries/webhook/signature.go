// Package webhook sends webhooks the way the Standard Webhooks specification
// (https://www.standardwebhooks.com) describes, so receivers can verify them
// with any of its libraries, and refuses to let a tenant-supplied URL reach
// the control plane's own network (SSRF): destinations are checked when they
// are saved and again on the address actually dialled for every attempt.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// secretPrefix marks a Standard Webhooks signing secret; the rest is the
// standard base64 of the HMAC key.
const secretPrefix = "whsec_"

// secretKeyLen is the key length of secrets we issue. 32 bytes is the
// HMAC-SHA256 block-size sweet spot and within the 24 to 64 bytes the
// specification allows.
const secretKeyLen = 32

// NewSecret returns a fresh signing secret: "whsec_" followed by the standard
// base64 of 32 random bytes.
func NewSecret() (string, error) {
	key := make([]byte, secretKeyLen)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// ValidSecret reports whether s has the whsec_ form with a 32-byte key. It is
// the gate for secrets an operator supplies, so Sign never meets a weak or
// mistyped one.
func ValidSecret(s string) bool {
	rest, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return false
	}
	key, err := base64.StdEncoding.Strict().DecodeString(rest)
	return err == nil && len(key) == secretKeyLen
}

// Sign returns the value of the webhook-signature header: one
// "v1,<base64 HMAC-SHA256>" per secret, in the order given, separated by a
// single space. The signed content is msgID + "." + unix seconds of ts + "." +
// body, and the key is the base64-decoded part of the secret after "whsec_".
// Two secrets during a rotation let receivers holding either one verify.
//
// Sign accepts any non-empty key so it can reproduce the specification's test
// vectors (24-byte keys); ValidSecret is where key length is enforced. Errors
// name a secret by position only, never by content.
func Sign(secrets []string, msgID string, ts time.Time, body []byte) (string, error) {
	if len(secrets) == 0 {
		return "", errors.New("webhook signature: no signing secret")
	}
	if msgID == "" {
		return "", errors.New("webhook signature: empty message id")
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		k, err := secretKey(s)
		if err != nil {
			return "", fmt.Errorf("webhook signature: secret %d: %w", i+1, err)
		}
		keys[i] = k
	}
	prefix := msgID + "." + strconv.FormatInt(ts.Unix(), 10) + "."
	var b strings.Builder
	for i, k := range keys {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(prefix))
		mac.Write(body)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return b.String(), nil
}

// secretKey decodes the HMAC key of a whsec_ secret.
func secretKey(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, errors.New("not of the form whsec_<base64>")
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New("key is not valid base64")
	}
	if len(key) == 0 {
		return nil, errors.New("empty key")
	}
	return key, nil
}
