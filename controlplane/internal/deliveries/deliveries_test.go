package deliveries_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/app"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhooktest"
)

type destination struct {
	ID             string   `json:"id"`
	Name           string   `json:"name"`
	URL            string   `json:"url"`
	EventTypes     []string `json:"event_types"`
	Enabled        bool     `json:"enabled"`
	State          string   `json:"state"`
	DisabledReason *string  `json:"disabled_reason"`
	AuthHeader     *struct {
		Name       string `json:"name"`
		Configured bool   `json:"configured"`
	} `json:"auth_header"`
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at"`
	Health                  struct {
		LastSuccessAt       *time.Time `json:"last_success_at"`
		FailingSince        *time.Time `json:"failing_since"`
		ConsecutiveFailures int        `json:"consecutive_failures"`
		PendingDeliveries   int        `json:"pending_deliveries"`
	} `json:"health"`
	Version int `json:"version"`
}

type created struct {
	Destination destination `json:"destination"`
	Secret      string      `json:"secret"`
}

type delivery struct {
	ID            string `json:"id"`
	WebhookID     string `json:"webhook_id"`
	DestinationID string `json:"destination_id"`
	Event         struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"event"`
	Status         string     `json:"status"`
	AttemptCount   int        `json:"attempt_count"`
	NextRetryAt    *time.Time `json:"next_retry_at"`
	LastStatusCode *int       `json:"last_status_code"`
	LastErrorClass *string    `json:"last_error_class"`
	CreatedAt      time.Time  `json:"created_at"`
}

type attempt struct {
	Attempt           int       `json:"attempt"`
	Trigger           string    `json:"trigger"`
	StartedAt         time.Time `json:"started_at"`
	EndedAt           time.Time `json:"ended_at"`
	DurationMS        int       `json:"duration_ms"`
	StatusCode        *int      `json:"status_code"`
	ErrorClass        *string   `json:"error_class"`
	Error             *string   `json:"error"`
	ResponseBody      *string   `json:"response_body"`
	RetryAfterSeconds *int      `json:"retry_after_seconds"`
}

// harness is a control plane whose webhooks may reach a local receiver.
type harness struct {
	env   *apitest.Env
	rcv   *webhooktest.Receiver
	admin *apitest.Client
	// accepted are the signing secrets of every destination made so far.
	accepted []string
}

func start(t *testing.T, adjust func(*app.DeliverySettings)) *harness {
	t.Helper()
	rcv := webhooktest.New(t)
	env := apitest.StartWith(t, func(c *app.ServeConfig) {
		c.Deliveries = app.DeliverySettings{
			AllowHosts:    []string{"127.0.0.1"},
			CAFile:        rcv.CAFile(t),
			Timeout:       2 * time.Second,
			Schedule:      []time.Duration{0, 200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond},
			SweepInterval: time.Second,
		}
		if adjust != nil {
			adjust(&c.Deliveries)
		}
	})
	return &harness{env: env, rcv: rcv, admin: env.Client(t, env.AdminToken)}
}

func (h *harness) create(t *testing.T, path string, types ...string) created {
	t.Helper()
	r := h.admin.Do(http.MethodPost, "/api/v1/delivery-destinations", map[string]any{
		"name": "receiver " + path, "url": h.rcv.URL() + path, "event_types": types})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var c created
	r.JSON(t, &c)
	h.accepted = append(h.accepted, c.Secret)
	h.rcv.SetSecrets(h.accepted...)
	return c
}

// ticket opens a ticket, which publishes ticket.created.
func (h *harness) ticket(t *testing.T, title string) string {
	t.Helper()
	r := h.admin.Do(http.MethodPost, "/api/v1/tickets", map[string]any{"title": title})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var out struct {
		ID string `json:"id"`
	}
	r.JSON(t, &out)
	return out.ID
}

func (h *harness) deliveries(t *testing.T, query string) []delivery {
	t.Helper()
	r := h.admin.Do(http.MethodGet, "/api/v1/deliveries"+query, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var out struct {
		Items []delivery `json:"items"`
	}
	r.JSON(t, &out)
	return out.Items
}

func (h *harness) waitDelivery(t *testing.T, destinationID string, cond func(delivery) bool) delivery {
	t.Helper()
	var last []delivery
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		last = h.deliveries(t, "?destination_id="+destinationID)
		if len(last) == 1 && cond(last[0]) {
			return last[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("delivery to %s never reached the expected state; last: %+v", destinationID, last)
	return delivery{}
}

func (h *harness) attempts(t *testing.T, c *apitest.Client, deliveryID string) []attempt {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/deliveries/"+deliveryID+"/attempts", nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var out struct {
		Items []attempt `json:"items"`
	}
	r.JSON(t, &out)
	return out.Items
}

func (h *harness) destination(t *testing.T, id string) destination {
	t.Helper()
	r := h.admin.Do(http.MethodGet, "/api/v1/delivery-destinations/"+id, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var d destination
	r.JSON(t, &d)
	return d
}

func TestEventsReachSubscribedDestinationsSigned(t *testing.T) {
	h := start(t, nil)
	tickets := h.create(t, "/tickets", "ticket.created", "ticket.updated")
	alertsOnly := h.create(t, "/alerts", "alert.raised")
	assert.True(t, strings.HasPrefix(tickets.Secret, "whsec_"))
	assert.Equal(t, "active", tickets.Destination.State)

	ticketID := h.ticket(t, "laptop without agent")
	d := h.waitDelivery(t, tickets.Destination.ID, func(d delivery) bool { return d.Status == "succeeded" })
	assert.Equal(t, "ticket.created", d.Event.Type)
	assert.Equal(t, 1, d.AttemptCount)
	assert.Nil(t, d.NextRetryAt)

	reqs := h.rcv.Requests()
	require.Len(t, reqs, 1, "the alert-only destination gets nothing")
	got := reqs[0]
	assert.True(t, got.SignatureValid)
	assert.Equal(t, "/tickets", got.Path)
	assert.Equal(t, d.WebhookID, got.ID)
	assert.Equal(t, "application/json", got.Header.Get("Content-Type"))
	var body struct {
		Type      string         `json:"type"`
		Timestamp time.Time      `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(got.Body, &body))
	assert.Equal(t, "ticket.created", body.Type)
	assert.Equal(t, ticketID, body.Data["id"])
	assert.Empty(t, h.deliveries(t, "?destination_id="+alertsOnly.Destination.ID))

	// Attempts: timing, status, body; auditors read them, never change.
	auditor := h.env.Client(t, h.env.IssueToken(t, h.env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	as := h.attempts(t, auditor, d.ID)
	require.Len(t, as, 1)
	assert.Equal(t, "scheduled", as[0].Trigger)
	require.NotNil(t, as[0].StatusCode)
	assert.Equal(t, http.StatusNoContent, *as[0].StatusCode)
	assert.False(t, as[0].EndedAt.Before(as[0].StartedAt))
	assert.Nil(t, as[0].ErrorClass)
	r := auditor.Do(http.MethodGet, "/api/v1/deliveries/"+d.ID, nil)
	assert.Equal(t, http.StatusOK, r.Status)
	auditor.Do(http.MethodPost, "/api/v1/deliveries/"+d.ID+"/retry", nil).Problem(t, http.StatusForbidden)
	auditor.Do(http.MethodGet, "/api/v1/delivery-destinations", nil).Problem(t, http.StatusForbidden)

	// Filters.
	assert.Len(t, h.deliveries(t, "?status=succeeded&event_type=ticket.created"), 1)
	assert.Empty(t, h.deliveries(t, "?status=failed"))
	assert.Empty(t, h.deliveries(t, "?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	assert.Len(t, h.deliveries(t, "?until="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), 1)
	h.admin.Do(http.MethodGet, "/api/v1/deliveries?status=bogus", nil).Problem(t, http.StatusBadRequest)

	// Another tenant sees none of it.
	other, _ := h.env.NewTenant(t, "other")
	outsider := h.env.Client(t, h.env.IssueToken(t, other.ID, caller.RoleTenantAdmin, "outsider").Secret)
	assert.Contains(t, string(outsider.Do(http.MethodGet, "/api/v1/deliveries", nil).Body), `"items":[]`)
	outsider.Do(http.MethodGet, "/api/v1/deliveries/"+d.ID, nil).Problem(t, http.StatusNotFound)
	outsider.Do(http.MethodGet, "/api/v1/deliveries/"+d.ID+"/attempts", nil).Problem(t, http.StatusNotFound)
	outsider.Do(http.MethodPost, "/api/v1/deliveries/"+d.ID+"/retry", nil).Problem(t, http.StatusNotFound)

	// Health shows the success.
	dest := h.destination(t, tickets.Destination.ID)
	assert.NotNil(t, dest.Health.LastSuccessAt)
	assert.Nil(t, dest.Health.FailingSince)
	assert.Zero(t, dest.Health.PendingDeliveries)
}

func TestFailingReceiverIsRetriedOnScheduleUntilItSucceeds(t *testing.T) {
	h := start(t, func(s *app.DeliverySettings) {
		s.Schedule = []time.Duration{0, 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}
	})
	fail := webhooktest.Response{Status: http.StatusInternalServerError, Body: "database unavailable"}
	h.rcv.Respond("/flaky", fail, fail, fail, webhooktest.Response{Status: http.StatusOK})
	dest := h.create(t, "/flaky", "ticket.created")
	h.ticket(t, "retry me")

	retrying := h.waitDelivery(t, dest.Destination.ID, func(d delivery) bool { return d.Status == "retrying" })
	require.NotNil(t, retrying.NextRetryAt, "a retrying delivery says when it tries next")
	require.NotNil(t, retrying.LastErrorClass)
	assert.Equal(t, "http_status", *retrying.LastErrorClass)

	d := h.waitDelivery(t, dest.Destination.ID, func(d delivery) bool { return d.Status == "succeeded" })
	assert.Equal(t, 4, d.AttemptCount)
	as := h.attempts(t, h.admin, d.ID)
	require.Len(t, as, 4)
	for i, a := range as {
		assert.Equal(t, i+1, a.Attempt)
		require.NotNil(t, a.StatusCode)
		if i < 3 {
			assert.Equal(t, http.StatusInternalServerError, *a.StatusCode)
			assert.Equal(t, "http_status", *a.ErrorClass)
			assert.Equal(t, "database unavailable", *a.ResponseBody)
			// The schedule (300 ms, jittered by at most 10%) separates attempts.
			assert.GreaterOrEqual(t, as[i+1].StartedAt.Sub(a.EndedAt), 270*time.Millisecond, "attempt %d came too early", i+2)
		}
	}
	assert.Equal(t, http.StatusOK, *as[3].StatusCode)
	// Every attempt carried the same webhook-id.
	for _, q := range h.rcv.Requests() {
		assert.Equal(t, d.WebhookID, q.ID)
		assert.True(t, q.SignatureValid)
	}
	health := h.destination(t, dest.Destination.ID).Health
	assert.Nil(t, health.FailingSince, "a success ends the failure streak")
	assert.Zero(t, health.ConsecutiveFailures)
}

func TestExhaustedScheduleFailsAndManualRetryResends(t *testing.T) {
	h := start(t, func(s *app.DeliverySettings) { s.Schedule = []time.Duration{0, 100 * time.Millisecond} })
	h.rcv.Respond("/down", webhooktest.Response{Status: http.StatusBadGateway}, webhooktest.Response{Status: http.StatusBadGateway},
		webhooktest.Response{Status: http.StatusOK})
	dest := h.create(t, "/down", "ticket.created")
	h.ticket(t, "fails twice")
	d := h.waitDelivery(t, dest.Destination.ID, func(d delivery) bool { return d.Status == "failed" })
	assert.Equal(t, 2, d.AttemptCount)
	assert.Nil(t, d.NextRetryAt)

	analyst := h.env.Client(t, h.env.IssueToken(t, h.env.Tenant.ID, caller.RoleAnalyst, "analyst").Secret)
	r := analyst.Do(http.MethodPost, "/api/v1/deliveries/"+d.ID+"/retry", nil, apitest.Header("Idempotency-Key", "retry-1"))
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	var retried delivery
	r.JSON(t, &retried)
	assert.Equal(t, "retrying", retried.Status)
	d = h.waitDelivery(t, dest.Destination.ID, func(d delivery) bool { return d.Status == "succeeded" })
	assert.Equal(t, 3, d.AttemptCount)
	as := h.attempts(t, h.admin, d.ID)
	require.Len(t, as, 3)
	assert.Equal(t, "manual", as[2].Trigger)

	// The same key again replays, sending nothing more.
	r = analyst.Do(http.MethodPost, "/api/v1/deliveries/"+d.ID+"/retry", nil, apitest.Header("Idempotency-Key", "retry-1"))
	assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))
	time.Sleep(300 * time.Millisecond)
	assert.Len(t, h.rcv.Requests(), 3)

	// A disabled destination's deliveries cannot be retried.
	dd := h.destination(t, dest.Destination.ID)
	r = h.admin.Do(http.MethodPatch, "/api/v1/delivery-destinations/"+dest.Destination.ID, map[string]any{"enabled": false},
		apitest.Header("If-Match", fmt.Sprintf(`"v%d"`, dd.Version)))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	p := analyst.Do(http.MethodPost, "/api/v1/deliveries/"+d.ID+"/retry", nil).Problem(t, http.StatusConflict)
	assert.Equal(t, "destination_disabled", p.Code)
}

func TestGoneDisablesAndOtherDestinationsHearOfIt(t *testing.T) {
	h := start(t, nil)
	h.rcv.Respond("/gone", webhooktest.Response{Status: http.StatusGone})
	gone := h.create(t, "/gone", "ticket.created")
	watcher := h.create(t, "/watch", "delivery_destination.disabled")
	h.ticket(t, "to a receiver that left")

	d := h.waitDelivery(t, gone.Destination.ID, func(d delivery) bool { return d.Status == "failed" })
	assert.Equal(t, 1, d.AttemptCount, "410 is not retried")
	dest := h.destination(t, gone.Destination.ID)
	assert.Equal(t, "disabled", dest.State)
	assert.False(t, dest.Enabled)
	require.NotNil(t, dest.DisabledReason)
	assert.Equal(t, "endpoint_gone", *dest.DisabledReason)

	h.waitDelivery(t, watcher.Destination.ID, func(d delivery) bool {
		return d.Status == "succeeded" && d.Event.Type == "delivery_destination.disabled"
	})
	r := h.admin.Do(http.MethodGet, "/api/v1/audit/events?action=delivery_destination.disabled", nil)
	require.Equal(t, http.StatusOK, r.Status)
	assert.Contains(t, string(r.Body), `"endpoint_gone"`)

	// New events are not delivered to it; enabling it again works.
	h.ticket(t, "after the 410")
	time.Sleep(500 * time.Millisecond)
	assert.Len(t, h.deliveries(t, "?destination_id="+gone.Destination.ID), 1)
	r = h.admin.Do(http.MethodPatch, "/api/v1/delivery-destinations/"+gone.Destination.ID, map[string]any{"enabled": true},
		apitest.Header("If-Match", fmt.Sprintf(`"v%d"`, dest.Version)))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var back destination
	r.JSON(t, &back)
	assert.Equal(t, "active", back.State)
	assert.Nil(t, back.DisabledReason)
}

func TestRetryAfterIsHonouredAndRedirectsAreNotFollowed(t *testing.T) {
	h := start(t, func(s *app.DeliverySettings) {
		s.Schedule = []time.Duration{0, 50 * time.Millisecond, 50 * time.Millisecond}
	})
	h.rcv.Respond("/busy", webhooktest.Response{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "2"}},
		webhooktest.Response{Status: http.StatusOK})
	h.rcv.Respond("/moved", webhooktest.Response{Status: http.StatusFound, Header: map[string]string{"Location": h.rcv.URL() + "/elsewhere"}})
	busy := h.create(t, "/busy", "ticket.created")
	moved := h.create(t, "/moved", "ticket.created")
	h.ticket(t, "two receivers")

	d := h.waitDelivery(t, busy.Destination.ID, func(d delivery) bool { return d.Status == "succeeded" })
	as := h.attempts(t, h.admin, d.ID)
	require.Len(t, as, 2)
	require.NotNil(t, as[0].RetryAfterSeconds)
	assert.Equal(t, 2, *as[0].RetryAfterSeconds)
	assert.GreaterOrEqual(t, as[1].StartedAt.Sub(as[0].EndedAt), 1900*time.Millisecond, "Retry-After: 2 outweighs a 50 ms schedule")

	m := h.waitDelivery(t, moved.Destination.ID, func(d delivery) bool { return d.Status == "failed" })
	for _, a := range h.attempts(t, h.admin, m.ID) {
		require.NotNil(t, a.ErrorClass)
		assert.Equal(t, "redirect", *a.ErrorClass)
	}
	for _, q := range h.rcv.Requests() {
		assert.NotEqual(t, "/elsewhere", q.Path, "a redirect was followed")
	}
}

func TestDestinationFailingForTheDisableSpanIsDisabled(t *testing.T) {
	h := start(t, func(s *app.DeliverySettings) {
		s.DisableAfter = time.Second
		s.Schedule = []time.Duration{0, 400 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond}
	})
	h.rcv.Respond("/broken", webhooktest.Response{Status: http.StatusServiceUnavailable})
	dest := h.create(t, "/broken", "ticket.created")
	h.ticket(t, "never arrives")
	d := h.waitDelivery(t, dest.Destination.ID, func(d delivery) bool { return d.Status == "cancelled" || d.Status == "failed" })
	got := h.destination(t, dest.Destination.ID)
	assert.Equal(t, "disabled", got.State)
	require.NotNil(t, got.DisabledReason)
	assert.Equal(t, "failing", *got.DisabledReason)
	assert.GreaterOrEqual(t, d.AttemptCount, 2)
	assert.Zero(t, got.Health.PendingDeliveries)
}

func TestDestinationRulesAndConcurrency(t *testing.T) {
	h := start(t, nil)
	post := func(body map[string]any) *apitest.Response {
		return h.admin.Do(http.MethodPost, "/api/v1/delivery-destinations", body)
	}
	base := func(url string) map[string]any {
		return map[string]any{"name": "n", "url": url, "event_types": []string{"alert.raised"}}
	}
	for _, url := range []string{"http://example.com/hook", "https://user:pw@example.com/", "https://10.0.0.1/hook",
		"https://169.254.169.254/latest/meta-data", "https://[::1]/hook", "https://localhost/hook", "https://example.com/#frag"} {
		p := post(base(url)).Problem(t, http.StatusUnprocessableEntity)
		assert.Equal(t, "url_not_allowed", p.Code, url)
		assert.NotContains(t, p.Detail, "pw", "the detail never repeats user info")
	}
	b := base(h.rcv.URL() + "/x")
	b["event_types"] = []string{}
	post(b).Problem(t, http.StatusUnprocessableEntity)
	b = base(h.rcv.URL() + "/x")
	b["name"] = "   "
	assert.Equal(t, "validation_failed", post(b).Problem(t, http.StatusUnprocessableEntity).Code)
	b = base(h.rcv.URL() + "/x")
	b["auth_header"] = map[string]any{"name": "webhook-signature", "value": "x"}
	post(b).Problem(t, http.StatusUnprocessableEntity)
	b["auth_header"] = map[string]any{"name": "Keep-Alive", "value": "x"}
	post(b).Problem(t, http.StatusUnprocessableEntity)
	b["auth_header"] = map[string]any{"name": "X-Token", "value": "a\tb\u0001"}
	assert.Equal(t, "#/auth_header/value", post(b).Problem(t, http.StatusUnprocessableEntity).Errors[0].Pointer)
	b = base(h.rcv.URL() + "/x")
	b["secret"] = "whsec_mine"
	post(b).Problem(t, http.StatusUnprocessableEntity)
	r := h.admin.Do(http.MethodGet, "/api/v1/delivery-destinations", nil)
	assert.Contains(t, string(r.Body), `"items":[]`, "refused requests changed nothing")

	// A valid one with an auth header; reads never show its value.
	b = base(h.rcv.URL() + "/hook")
	b["auth_header"] = map[string]any{"name": "Authorization", "value": "Bearer receiver-token-123"}
	r = post(b)
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var c created
	r.JSON(t, &c)
	require.NotNil(t, c.Destination.AuthHeader)
	assert.True(t, c.Destination.AuthHeader.Configured)
	assert.NotContains(t, string(r.Body), "receiver-token-123")
	id := c.Destination.ID
	path := "/api/v1/delivery-destinations/" + id

	h.admin.Do(http.MethodPatch, path, map[string]any{"name": "x"}).Problem(t, http.StatusPreconditionRequired)
	h.admin.Do(http.MethodPatch, path, map[string]any{"name": "x"}, apitest.Header("If-Match", `"v9"`)).Problem(t, http.StatusPreconditionFailed)
	h.admin.Do(http.MethodPatch, path, map[string]any{"url": "https://10.1.2.3/"}, apitest.Header("If-Match", `"v1"`)).Problem(t, http.StatusUnprocessableEntity)
	r = h.admin.Do(http.MethodPatch, path, map[string]any{"name": "renamed", "auth_header": nil,
		"event_types": []string{"ticket.updated", "alert.raised"}}, apitest.Header("If-Match", `"v1"`))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var d destination
	r.JSON(t, &d)
	assert.Equal(t, "renamed", d.Name)
	assert.Nil(t, d.AuthHeader)
	assert.Equal(t, []string{"alert.raised", "ticket.updated"}, d.EventTypes)
	assert.Equal(t, `"v2"`, r.Header.Get("ETag"))
	r = h.admin.Do(http.MethodPatch, path, map[string]any{"name": "renamed", "auth_header": nil}, apitest.Header("If-Match", `"v2"`))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	assert.Equal(t, `"v2"`, r.Header.Get("ETag"), "a change that changes nothing makes no new version")

	// Rotation: the new secret is returned once; the old one still signs.
	r = h.admin.Do(http.MethodPost, path+"/rotate-secret", nil)
	require.Equal(t, http.StatusOK, r.Status)
	var rot struct {
		Secret                  string    `json:"secret"`
		PreviousSecretExpiresAt time.Time `json:"previous_secret_expires_at"`
	}
	r.JSON(t, &rot)
	assert.NotEqual(t, c.Secret, rot.Secret)
	assert.WithinDuration(t, time.Now().Add(24*time.Hour), rot.PreviousSecretExpiresAt, time.Minute)
	assert.NotNil(t, h.destination(t, id).PreviousSecretExpiresAt)

	other, _ := h.env.NewTenant(t, "other")
	outsider := h.env.Client(t, h.env.IssueToken(t, other.ID, caller.RoleTenantAdmin, "outsider").Secret)
	outsider.Do(http.MethodGet, path, nil).Problem(t, http.StatusNotFound)
	outsider.Do(http.MethodDelete, path, nil).Problem(t, http.StatusNotFound)
	outsider.Do(http.MethodPost, path+"/rotate-secret", nil).Problem(t, http.StatusNotFound)

	assert.Equal(t, http.StatusNoContent, h.admin.Do(http.MethodDelete, path, nil).Status)
	h.admin.Do(http.MethodGet, path, nil).Problem(t, http.StatusNotFound)
	h.admin.Do(http.MethodDelete, path, nil).Problem(t, http.StatusNotFound)
	var sealed []byte
	require.NoError(t, pgx.BeginFunc(context.Background(), h.env.DB.Owner, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), "SELECT set_config('edgeward.tenant_id', $1, true)", h.env.Tenant.ID.String()); err != nil {
			return err
		}
		return tx.QueryRow(context.Background(), `SELECT secret_sealed FROM delivery_destinations WHERE id = $1`, id).Scan(&sealed)
	}))
	assert.Nil(t, sealed, "deleting erases the sealed secret")
}

// TestRotationSignsWithBothSecrets: a receiver that knows only the old
// secret, and one that knows only the new, both verify during the overlap.
func TestRotationSignsWithBothSecrets(t *testing.T) {
	h := start(t, nil)
	c := h.create(t, "/rot", "ticket.created")
	r := h.admin.Do(http.MethodPost, "/api/v1/delivery-destinations/"+c.Destination.ID+"/rotate-secret", nil)
	require.Equal(t, http.StatusOK, r.Status)
	var rot struct {
		Secret string `json:"secret"`
	}
	r.JSON(t, &rot)
	h.rcv.SetSecrets(rot.Secret) // only the new one
	h.ticket(t, "after rotation")
	h.rcv.WaitFor(t, 10*time.Second, func(rs []webhooktest.Request) bool { return len(rs) == 1 })
	q := h.rcv.Requests()[0]
	assert.True(t, q.SignatureValid)
	assert.Len(t, strings.Fields(q.Header.Get("webhook-signature")), 2)

	h.rcv.SetSecrets(c.Secret) // only the old one
	h.ticket(t, "still the old secret")
	h.rcv.WaitFor(t, 10*time.Second, func(rs []webhooktest.Request) bool { return len(rs) == 2 })
	assert.True(t, h.rcv.Requests()[1].SignatureValid)
}

// TestPrivateAddressesAreRefusedUnlessAllowed: with no allow list, loopback,
// private, metadata and IPv6 loopback URLs are refused at creation.
func TestPrivateAddressesAreRefusedUnlessAllowed(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	for _, url := range []string{"https://127.0.0.1:8443/hook", "https://10.20.30.40/hook", "https://169.254.169.254/latest/meta-data/",
		"https://[::1]/hook", "https://[::ffff:127.0.0.1]/hook", "https://192.168.1.10/hook"} {
		p := admin.Do(http.MethodPost, "/api/v1/delivery-destinations", map[string]any{
			"name": "internal", "url": url, "event_types": []string{"alert.raised"}}).Problem(t, http.StatusUnprocessableEntity)
		assert.Equal(t, "url_not_allowed", p.Code, url)
	}
}

// TestFirstScheduleEntryDelaysTheFirstAttempt: the schedule's first delay
// is honoured too (a deployment may hold new deliveries back).
func TestFirstScheduleEntryDelaysTheFirstAttempt(t *testing.T) {
	h := start(t, func(s *app.DeliverySettings) { s.Schedule = []time.Duration{time.Second} })
	dest := h.create(t, "/later", "ticket.created")
	h.ticket(t, "held back")
	d := h.waitDelivery(t, dest.Destination.ID, func(d delivery) bool { return d.Status == "succeeded" })
	as := h.attempts(t, h.admin, d.ID)
	require.Len(t, as, 1)
	assert.GreaterOrEqual(t, as[0].StartedAt.Sub(d.CreatedAt), 850*time.Millisecond)
}

// TestReplicasDispatchEachEventOnce: two replicas dispatch and attempt from
// the same outbox and queue; without a crash every event reaches the
// receiver exactly once.
func TestReplicasDispatchEachEventOnce(t *testing.T) {
	h := start(t, nil)
	replica := h.env.StartReplica(t)
	dest := h.create(t, "/once", "ticket.created")
	other := replica.Client(t, h.env.AdminToken)
	const events = 20
	for i := range events {
		c := h.admin
		if i%2 == 1 {
			c = other
		}
		r := c.Do(http.MethodPost, "/api/v1/tickets", map[string]any{"title": fmt.Sprintf("ticket %d", i)})
		require.Equal(t, http.StatusCreated, r.Status)
	}
	h.rcv.WaitFor(t, 30*time.Second, func(rs []webhooktest.Request) bool { return len(rs) >= events })
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive about now
	seen := map[string]int{}
	for _, q := range h.rcv.Requests() {
		seen[q.ID]++
	}
	assert.Len(t, seen, events)
	for id, n := range seen {
		assert.Equal(t, 1, n, "%s delivered %d times", id, n)
	}
	assert.Len(t, h.deliveries(t, "?destination_id="+dest.Destination.ID+"&status=succeeded&limit=50"), events)
}
