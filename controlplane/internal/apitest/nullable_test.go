package apitest_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/app"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhooktest"
)

// TestSecondValidatorAcceptsWhatTheServerSends makes the server send the
// nulls its schemas allow — a revoked agent's certificate, a destination's
// disabled_reason and auth_header, a delivered event's last_error_class and
// its attempt's error_class — and the answers of its request gate (405 with
// Allow, 400 unexpected_body, an idempotent replay), and runs the second
// validator over every response. A `nullable: true` beside `allOf` admits
// null to kin-openapi only: strict validators refused these responses,
// among them the 201 that shows a destination's signing secret once.
func TestSecondValidatorAcceptsWhatTheServerSends(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(apitest.ResponsesDirEnv, dir)
	rcv := webhooktest.New(t)
	env := apitest.StartWith(t, func(c *app.ServeConfig) {
		c.Deliveries = app.DeliverySettings{
			AllowHosts: []string{"127.0.0.1"}, CAFile: rcv.CAFile(t),
			Timeout: 2 * time.Second, SweepInterval: time.Second,
		}
	})
	admin := env.Client(t, env.AdminToken)

	// A revoked agent has no certificate.
	_, token := env.EnrollmentToken(t, map[string]any{"name": "nulls"})
	agent, err := env.Enroll(t, token, "machine-nulls", "nulls-host")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, admin.Do(http.MethodPost, "/api/v1/agents/"+agent.AgentID+"/revoke", nil), http.StatusOK)
	expect(t, admin.Do(http.MethodGet, "/api/v1/agents/"+agent.AgentID, nil), http.StatusOK)

	// What the gate answers by itself.
	if r := expect(t, admin.Do(http.MethodDelete, "/api/v1/agents/"+agent.AgentID, nil), http.StatusMethodNotAllowed); r.Header.Get("Allow") != "GET" {
		t.Errorf("Allow: %q, want GET", r.Header.Get("Allow"))
	}
	expect(t, admin.Do(http.MethodGet, "/api/v1/me", apitest.Raw(`{}`)), http.StatusBadRequest)
	expect(t, admin.Do(http.MethodGet, "/api/v1/no-such-thing", nil), http.StatusNotFound)

	// A new destination is not disabled and has no extra header; its event
	// is delivered at the first attempt, so no error class either.
	r := expect(t, admin.Do(http.MethodPost, "/api/v1/delivery-destinations", map[string]any{
		"name": "nulls", "url": rcv.URL() + "/hook", "event_types": []string{"ticket.created"}}), http.StatusCreated)
	var created struct {
		Destination struct {
			ID string `json:"id"`
		} `json:"destination"`
		Secret string `json:"secret"`
	}
	r.JSON(t, &created)
	rcv.SetSecrets(created.Secret)
	expect(t, admin.Do(http.MethodGet, "/api/v1/delivery-destinations/"+created.Destination.ID, nil), http.StatusOK)
	ticket := map[string]any{"title": "nulls"}
	key := apitest.Header("Idempotency-Key", "second-validator-1")
	expect(t, admin.Do(http.MethodPost, "/api/v1/tickets", ticket, key), http.StatusCreated)
	if r := expect(t, admin.Do(http.MethodPost, "/api/v1/tickets", ticket, key), http.StatusCreated); r.Header.Get("Idempotent-Replayed") != "true" {
		t.Error("the retry with the same Idempotency-Key is no replay")
	}
	var deliveryID string
	deadline := time.Now().Add(30 * time.Second)
	for deliveryID == "" {
		var page struct {
			Items []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"items"`
		}
		expect(t, admin.Do(http.MethodGet, "/api/v1/deliveries?destination_id="+created.Destination.ID, nil), http.StatusOK).JSON(t, &page)
		if len(page.Items) > 0 && page.Items[0].Status == "succeeded" {
			deliveryID = page.Items[0].ID
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ticket.created delivery did not succeed within 30s: %+v", page.Items)
		}
		time.Sleep(50 * time.Millisecond)
	}
	expect(t, admin.Do(http.MethodGet, "/api/v1/deliveries/"+deliveryID+"/attempts", nil), http.StatusOK)

	recorded, err := apitest.ReadRecorded(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The test proves something only if the nulls were really sent.
	var all strings.Builder
	for _, rec := range recorded {
		all.Write(rec.Body)
	}
	for _, null := range []string{`"certificate":null`, `"disabled_reason":null`, `"auth_header":null`, `"last_error_class":null`, `"error_class":null`} {
		if !strings.Contains(all.String(), null) {
			t.Errorf("no response had %s", null)
		}
	}
	checkWithSecondValidator(t, recorded)
}

func expect(t *testing.T, r *apitest.Response, status int) *apitest.Response {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	return r
}
