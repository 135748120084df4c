package webhooktest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

// sign is the test's own signer, so the receiver's verifier is checked
// against the specification rather than against itself.
func sign(t *testing.T, secret, id string, ts int64, body string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	require.NoError(t, err)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "." + body))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func client(r *Receiver) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: r.CertPool()},
		DisableKeepAlives: true,
	}}
}

func post(t *testing.T, r *Receiver, path, id string, ts int64, sig, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.URL()+path, bytes.NewBufferString(body))
	require.NoError(t, err)
	if id != "" {
		req.Header.Set("webhook-id", id)
	}
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sig)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client(r).Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	return resp
}

func TestCorrectlySignedRequestIsAccepted(t *testing.T) {
	r := New(t, secretA)
	now := time.Now().Unix()
	body := `{"type":"alert.raised"}`

	resp := post(t, r, "/hook", "msg_1", now, sign(t, secretA, "msg_1", now, body), body)

	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	reqs := r.Requests()
	require.Len(t, reqs, 1)
	assert.True(t, reqs[0].SignatureValid)
	assert.Equal(t, "/hook", reqs[0].Path)
	assert.Equal(t, "msg_1", reqs[0].ID)
	assert.Equal(t, now, reqs[0].Timestamp.Unix())
	assert.JSONEq(t, body, string(reqs[0].Body))
	assert.Equal(t, "application/json", reqs[0].Header.Get("Content-Type"))
	assert.Equal(t, http.StatusNoContent, reqs[0].Status)
	assert.Equal(t, map[string]int{"msg_1": 1}, r.Succeeded())
}

func TestTamperedBodyIsRejected(t *testing.T) {
	r := New(t, secretA)
	now := time.Now().Unix()
	sig := sign(t, secretA, "msg_1", now, `{"amount":1}`)

	resp := post(t, r, "/hook", "msg_1", now, sig, `{"amount":1000}`)

	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	reqs := r.Requests()
	require.Len(t, reqs, 1)
	assert.False(t, reqs[0].SignatureValid)
	assert.Equal(t, http.StatusUnauthorized, reqs[0].Status)
	assert.Empty(t, r.Succeeded())
}

func TestRotationAcceptsWhenOnlySecondSignatureMatches(t *testing.T) {
	r := New(t, secretB)
	now := time.Now().Unix()
	body := `{}`
	header := sign(t, secretA, "msg_1", now, body) + " " + sign(t, secretB, "msg_1", now, body)

	resp := post(t, r, "/hook", "msg_1", now, header, body)

	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.True(t, r.Requests()[0].SignatureValid)
}

func TestSetSecretsAcceptsEitherDuringRotation(t *testing.T) {
	r := New(t, secretA)
	now := time.Now().Unix()

	assert.Equal(t, http.StatusUnauthorized, post(t, r, "/", "m1", now, sign(t, secretB, "m1", now, "{}"), "{}").StatusCode)
	r.SetSecrets(secretA, secretB)
	assert.Equal(t, http.StatusNoContent, post(t, r, "/", "m2", now, sign(t, secretB, "m2", now, "{}"), "{}").StatusCode)
	assert.Equal(t, http.StatusNoContent, post(t, r, "/", "m3", now, sign(t, secretA, "m3", now, "{}"), "{}").StatusCode)
}

func TestInvalidRequestsAreRejected(t *testing.T) {
	r := New(t, secretA)
	now := time.Now().Unix()
	stale := now - int64((Tolerance + time.Minute).Seconds())
	future := now + int64((Tolerance + time.Minute).Seconds())
	tests := []struct {
		name string
		id   string
		ts   int64
		sig  string
	}{
		{"missing id", "", now, sign(t, secretA, "", now, "{}")},
		{"stale timestamp", "m", stale, sign(t, secretA, "m", stale, "{}")},
		{"future timestamp", "m", future, sign(t, secretA, "m", future, "{}")},
		{"wrong version", "m", now, "v2," + sign(t, secretA, "m", now, "{}")[3:]},
		{"garbage", "m", now, "v1,not base64!"},
		{"other id", "m", now, sign(t, secretA, "other", now, "{}")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, r, "/", tt.id, tt.ts, tt.sig, "{}")
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		})
	}
	for _, q := range r.Requests() {
		assert.False(t, q.SignatureValid)
	}
}

func TestRespondPlaysResponsesInOrderThenRepeatsTheLast(t *testing.T) {
	r := New(t, secretA)
	r.Respond("/flaky",
		Response{Status: http.StatusServiceUnavailable, Header: map[string]string{"Retry-After": "3"}, Body: "later"},
		Response{Status: http.StatusOK, Body: "ok"},
	)
	now := time.Now().Unix()

	var got []int
	for range 3 {
		resp := post(t, r, "/flaky", "m", now, sign(t, secretA, "m", now, "{}"), "{}")
		got = append(got, resp.StatusCode)
		if resp.StatusCode == http.StatusServiceUnavailable {
			assert.Equal(t, "3", resp.Header.Get("Retry-After"))
		}
	}
	other := post(t, r, "/other", "n", now, sign(t, secretA, "n", now, "{}"), "{}")

	assert.Equal(t, []int{503, 200, 200}, got)
	assert.Equal(t, http.StatusNoContent, other.StatusCode)
	assert.Equal(t, map[string]int{"m": 2, "n": 1}, r.Succeeded())

	r.Respond("/flaky")
	assert.Equal(t, http.StatusNoContent, post(t, r, "/flaky", "m", now, sign(t, secretA, "m", now, "{}"), "{}").StatusCode)
}

func TestDelayEndsWhenTheClientGivesUp(t *testing.T) {
	r := New(t, secretA)
	r.Respond("/slow", Response{Delay: time.Minute})
	now := time.Now().Unix()
	req, err := http.NewRequest(http.MethodPost, r.URL()+"/slow", bytes.NewBufferString("{}"))
	require.NoError(t, err)
	req.Header.Set("webhook-id", "m")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now, 10))
	req.Header.Set("webhook-signature", sign(t, secretA, "m", now, "{}"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()

	_, err = client(r).Do(req.WithContext(ctx))

	require.ErrorIs(t, err, context.DeadlineExceeded)
	reqs := r.Requests()
	require.Len(t, reqs, 1)
	assert.True(t, reqs[0].SignatureValid)
	assert.Zero(t, reqs[0].Status, "no answer was given")
	assert.Empty(t, r.Succeeded())
}

func TestWaitForSeesRequestsFromAnotherGoroutine(t *testing.T) {
	r := New(t, secretA)
	now := time.Now().Unix()
	go func() {
		req, _ := http.NewRequest(http.MethodPost, r.URL()+"/async", bytes.NewBufferString("{}"))
		req.Header.Set("webhook-id", "m")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now, 10))
		req.Header.Set("webhook-signature", sign(t, secretA, "m", now, "{}"))
		if resp, err := client(r).Do(req); err == nil {
			resp.Body.Close()
		}
	}()

	r.WaitFor(t, 10*time.Second, func(reqs []Request) bool {
		return len(reqs) == 1 && reqs[0].Status == http.StatusNoContent
	})
}

func TestCAFileTrustsTheReceiver(t *testing.T) {
	r := New(t, secretA)
	pemBytes, err := os.ReadFile(r.CAFile(t))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pemBytes))

	_, port, err := net.SplitHostPort(r.srv.Listener.Addr().String())
	require.NoError(t, err)
	for _, base := range []string{r.URL(), "https://localhost:" + port} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
		resp, err := c.Get(base + "/")
		require.NoError(t, err, base)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "unsigned requests are refused")
	}
}
