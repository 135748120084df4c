package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhooktest"
)

// call sends a request like curl, validates the response against the spec
// and keeps it in transcript.
func call(t *testing.T, c *http.Client, transcript *bytes.Buffer, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var raw []byte
	var reader io.Reader
	if body != nil {
		var err error
		raw, err = json.Marshal(body)
		require.NoError(t, err)
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, reader)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	_, err = apitest.Validate(req, raw, resp.StatusCode, resp.Header, got)
	require.NoError(t, err, "%s %s: response does not match the spec: %s", method, url, got)
	if transcript != nil {
		fmt.Fprintf(transcript, "%s %s -> %d %v\n%s\n", method, url, resp.StatusCode, resp.Header, got)
	}
	return resp.StatusCode, got
}

// TestWebhookDeliveriesSurviveKill9 runs the real binary, kills it with
// SIGKILL while attempts are in flight, retries are pending and fresh events
// are not yet dispatched, restarts it, and checks that the receiver saw
// every (event, destination) succeed, every signature verify, and that no
// credential appears in any answer, log line or stored row.
func TestWebhookDeliveriesSurviveKill9(t *testing.T) {
	t.Parallel() // its own database, ports and directories
	d := dbtest.New(t)
	out, errOut, code := run(t, []string{"EDGEWARD_ADMIN_DATABASE_URL=" + d.OwnerURL}, "bootstrap", "--tenant", "acme", "--json")
	require.Equal(t, 0, code, errOut)
	var boot struct {
		TenantID string `json:"tenant_id"`
		Token    string `json:"token"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &boot))

	rcv := webhooktest.New(t)
	// /slow holds the first attempts of the first events open until the kill.
	rcv.Respond("/slow", webhooktest.Response{Delay: time.Minute}, webhooktest.Response{Delay: time.Minute}, webhooktest.Response{Status: http.StatusNoContent})
	rcv.Respond("/flaky", webhooktest.Response{Status: http.StatusInternalServerError}, webhooktest.Response{Status: http.StatusInternalServerError},
		webhooktest.Response{Status: http.StatusServiceUnavailable}, webhooktest.Response{Status: http.StatusOK})

	dataDir, addr := t.TempDir(), freeAddr(t)
	env := []string{
		"EDGEWARD_DATABASE_URL=" + d.AppURL, "EDGEWARD_DATA_DIR=" + dataDir, "EDGEWARD_LISTEN=" + addr,
		"EDGEWARD_WEBHOOK_ALLOW_HOSTS=127.0.0.1", "EDGEWARD_WEBHOOK_CA_FILE=" + rcv.CAFile(t),
		"EDGEWARD_WEBHOOK_TIMEOUT=4s", "EDGEWARD_WEBHOOK_RETRY_SCHEDULE=0s,1s,1s,1s,1s,1s", "EDGEWARD_JOB_RESCUE_AFTER=10s",
	}
	first := start(t, env, "serve")
	base := "https://" + addr
	waitForFile(t, filepath.Join(dataDir, "ca.crt"))
	c := httpsClient(t, filepath.Join(dataDir, "ca.crt"))
	waitReady(t, c, base, first)

	var transcript bytes.Buffer // every answer except the two that show a secret by design
	const authValue = "Bearer e2e-receiver-credential-7Qx"
	var secrets []string
	for _, dest := range []map[string]any{
		{"name": "slow", "url": rcv.URL() + "/slow", "event_types": []string{"ticket.created"}},
		{"name": "flaky", "url": rcv.URL() + "/flaky", "event_types": []string{"ticket.created"}},
		{"name": "ok", "url": rcv.URL() + "/ok", "event_types": []string{"ticket.created"},
			"auth_header": map[string]any{"name": "Authorization", "value": authValue}},
	} {
		status, body := call(t, c, nil, http.MethodPost, base+"/api/v1/delivery-destinations", boot.Token, dest)
		require.Equal(t, http.StatusCreated, status, "%s", body)
		assert.NotContains(t, string(body), authValue)
		var created struct {
			Secret string `json:"secret"`
		}
		require.NoError(t, json.Unmarshal(body, &created))
		secrets = append(secrets, created.Secret)
	}
	rcv.SetSecrets(secrets...)

	ticket := func(title string) {
		status, body := call(t, c, &transcript, http.MethodPost, base+"/api/v1/tickets", boot.Token, map[string]any{"title": title})
		require.Equal(t, http.StatusCreated, status, "%s", body)
	}
	ticket("first")
	ticket("second")
	rcv.WaitFor(t, 30*time.Second, func(rs []webhooktest.Request) bool {
		n := 0
		for _, r := range rs {
			if r.Path == "/slow" {
				n++
			}
		}
		return n == 2
	})
	// Committed but perhaps not yet dispatched when the process dies.
	ticket("third")
	ticket("fourth")
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGKILL))
	<-first.done
	inFlight := rcv.Requests()

	second := start(t, env, "serve")
	waitReady(t, c, base, second)

	// Every delivery completes.
	type delivery struct {
		WebhookID     string `json:"webhook_id"`
		DestinationID string `json:"destination_id"`
		Status        string `json:"status"`
	}
	var items []delivery
	deadline := time.Now().Add(90 * time.Second)
	for {
		status, body := call(t, c, &transcript, http.MethodGet, base+"/api/v1/deliveries?limit=200", boot.Token, nil)
		require.Equal(t, http.StatusOK, status)
		var page struct {
			Items []delivery `json:"items"`
		}
		require.NoError(t, json.Unmarshal(body, &page))
		items = page.Items
		done := len(items) == 12
		for _, it := range items {
			done = done && it.Status == "succeeded"
		}
		if done {
			break
		}
		require.True(t, time.Now().Before(deadline), "deliveries did not all succeed after the restart: %s\nreceiver: %d requests\nstderr: %s",
			body, len(rcv.Requests()), second.stderr.String())
		time.Sleep(200 * time.Millisecond)
	}

	// The receiver saw each (event, destination) succeed at least once,
	// every request signed validly, duplicates with the same webhook-id.
	succeeded := map[string]bool{}
	ids := map[string]bool{}
	for _, r := range rcv.Requests() {
		require.True(t, r.SignatureValid, "a request failed signature verification: %s %s", r.Path, r.ID)
		if r.Status >= 200 && r.Status < 300 {
			succeeded[r.Path+" "+r.ID] = true
		}
		ids[r.ID] = true
		if r.Path == "/ok" {
			assert.Equal(t, authValue, r.Header.Get("Authorization"), "the extra header reaches the receiver")
		}
	}
	assert.Len(t, ids, 4, "four events")
	for id := range ids {
		for _, path := range []string{"/slow", "/flaky", "/ok"} {
			assert.True(t, succeeded[path+" "+id], "%s never succeeded at %s", id, path)
		}
	}
	// The attempts cut off by the kill were made again with the same id.
	for _, r := range inFlight {
		if r.Path == "/slow" {
			assert.True(t, succeeded["/slow "+r.ID], "the interrupted attempt of %s was not repeated", r.ID)
		}
	}

	// Attempt records and the audit trail, read back through the API.
	for _, it := range items {
		status, body := call(t, c, &transcript, http.MethodGet, base+"/api/v1/deliveries?destination_id="+it.DestinationID, boot.Token, nil)
		require.Equal(t, http.StatusOK, status, "%s", body)
	}
	status, body := call(t, c, &transcript, http.MethodGet, base+"/api/v1/delivery-destinations", boot.Token, nil)
	require.Equal(t, http.StatusOK, status, "%s", body)
	status, body = call(t, c, &transcript, http.MethodGet, base+"/api/v1/audit/events?limit=200", boot.Token, nil)
	require.Equal(t, http.StatusOK, status, "%s", body)
	second.stop(t)

	// No credential anywhere: answers, logs of both runs, stored rows.
	rows := storedText(t, d.OwnerURL, boot.TenantID)
	haystacks := map[string]string{
		"API answers": transcript.String(), "first run's log": first.stdout.String() + first.stderr.String(),
		"second run's log": second.stdout.String() + second.stderr.String(), "stored rows": rows,
	}
	require.Contains(t, rows, `"attempt"`, "the stored rows include the attempts")
	for where, text := range haystacks {
		for _, s := range secrets {
			assert.NotContains(t, text, s, "a signing secret in %s", where)
			assert.NotContains(t, text, strings.TrimPrefix(s, "whsec_"), "a signing key in %s", where)
		}
		assert.NotContains(t, text, authValue, "the auth header value in %s", where)
		assert.NotContains(t, text, "e2e-receiver-credential", "the auth header value in %s", where)
	}
}

// storedText renders every row a tenant's deliveries touch as JSON: the
// attempts, deliveries, destinations, outbox and audit trail.
func storedText(t *testing.T, ownerURL, tenantID string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, ownerURL)
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	var out strings.Builder
	require.NoError(t, pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('edgeward.tenant_id', $1, true)", tenantID); err != nil {
			return err
		}
		for _, table := range []string{"delivery_attempts", "deliveries", "delivery_destinations", "outbox_events", "audit_events"} {
			var rows string
			if err := tx.QueryRow(ctx, "SELECT coalesce(json_agg(t)::text, '') FROM "+table+" t").Scan(&rows); err != nil {
				return err
			}
			out.WriteString(table + ": " + rows + "\n")
		}
		// River's jobs hold ids only.
		var jobs string
		if err := tx.QueryRow(ctx, "SELECT coalesce(json_agg(j.args)::text, '') FROM river.river_job j").Scan(&jobs); err != nil {
			return err
		}
		out.WriteString("river_job: " + jobs + "\n")
		return nil
	}))
	return out.String()
}

// waitForFile waits for a file the server creates before it listens.
func waitForFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, err := os.Stat(path); err != nil; _, err = os.Stat(path) {
		require.True(t, time.Now().Before(deadline), "%s never appeared", path)
		time.Sleep(20 * time.Millisecond)
	}
}
