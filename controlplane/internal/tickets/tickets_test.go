package tickets_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
)

type ticket struct {
	ID          string    `json:"id"`
	Number      int64     `json:"number"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	Status      string    `json:"status"`
	Priority    string    `json:"priority"`
	AssigneeID  *string   `json:"assignee_id"`
	CreatedBy   *string   `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Version     int       `json:"version"`
	AlertIDs    []string  `json:"alert_ids"`
}

type ticketList struct {
	Items      []ticket `json:"items"`
	NextCursor *string  `json:"next_cursor"`
}

type comment struct {
	ID         string    `json:"id"`
	Body       string    `json:"body"`
	AuthorID   string    `json:"author_id"`
	AuthorName string    `json:"author_name"`
	CreatedAt  time.Time `json:"created_at"`
}

type commentList struct {
	Items      []comment `json:"items"`
	NextCursor *string   `json:"next_cursor"`
}

type link struct {
	ID       string  `json:"id"`
	Type     string  `json:"type"`
	TargetID *string `json:"target_id"`
	URL      *string `json:"url"`
}

type linkList struct {
	Items []link `json:"items"`
}

type auditEvents struct {
	Items []struct {
		Action string `json:"action"`
		Actor  struct {
			Type string  `json:"type"`
			ID   *string `json:"id"`
		} `json:"actor"`
		Target struct {
			Type string  `json:"type"`
			ID   *string `json:"id"`
		} `json:"target"`
		Details map[string]any `json:"details"`
	} `json:"items"`
}

func create(t *testing.T, c *apitest.Client, body map[string]any) ticket {
	t.Helper()
	r := c.Do("POST", "/api/v1/tickets", body)
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var tk ticket
	r.JSON(t, &tk)
	require.Equal(t, fmt.Sprintf(`"v%d"`, tk.Version), r.Header.Get("ETag"))
	return tk
}

func get(t *testing.T, c *apitest.Client, id string) ticket {
	t.Helper()
	r := c.Do("GET", "/api/v1/tickets/"+id, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var tk ticket
	r.JSON(t, &tk)
	require.Equal(t, fmt.Sprintf(`"v%d"`, tk.Version), r.Header.Get("ETag"))
	return tk
}

// patch sends a PATCH with If-Match naming version.
func patch(c *apitest.Client, id string, version int, body map[string]any) *apitest.Response {
	return c.Do("PATCH", "/api/v1/tickets/"+id, body, apitest.Header("If-Match", fmt.Sprintf(`"v%d"`, version)))
}

func principalID(t *testing.T, c *apitest.Client) string {
	t.Helper()
	var m struct {
		PrincipalID string `json:"principal_id"`
	}
	c.Do("GET", "/api/v1/me", nil).JSON(t, &m)
	return m.PrincipalID
}

// snapshot is everything the tickets room writes in a tenant; a refused
// request must leave it as it was. Audit events count only ticket actions:
// a refused role is itself audited.
func snapshot(t *testing.T, env *apitest.Env, tenantID uuid.UUID) string {
	t.Helper()
	ctx := context.Background()
	var s string
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, tenantID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT concat_ws(' | ',
			(SELECT coalesce(string_agg(md5(t::text), ',' ORDER BY id), '') FROM tickets t),
			(SELECT count(*) FROM ticket_comments),
			(SELECT count(*) FROM ticket_links),
			(SELECT coalesce(max(last_number), 0) FROM ticket_counters),
			(SELECT count(*) FROM outbox_events),
			(SELECT count(*) FROM audit_events WHERE action LIKE 'ticket.%'),
			(SELECT count(*) FROM alert_timeline))`).Scan(&s)
	}))
	return s
}

// newAlert inserts an open alert on a new asset named assetName, as the
// alerts room would.
func newAlert(t *testing.T, env *apitest.Env, tenantID uuid.UUID, assetName string) (alertID, assetID uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	alertID, assetID = uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, tenantID, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO assets (tenant_id, id, name, source, first_seen_at, last_seen_at)
			VALUES ($1, $2, $3, 'discovery', now(), now())`, tenantID, assetID, assetName); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO alerts (tenant_id, id, type, status, severity, title, asset_id, first_seen_at, last_seen_at,
			resolution, created_at, updated_at)
			VALUES ($1, $2, 'unauthorized_device', 'open', 'high', $3, $4, now(), now(), NULL, now(), now())`,
			tenantID, alertID, "Unauthorized device "+assetName, assetID)
		return err
	}))
	return alertID, assetID
}

type outboxEvent struct {
	Type    string
	Payload map[string]any
}

func outboxEvents(t *testing.T, env *apitest.Env, tenantID uuid.UUID, aggregateID string) []outboxEvent {
	t.Helper()
	ctx := context.Background()
	var out []outboxEvent
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, tenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT type, payload FROM outbox_events WHERE aggregate_type = 'ticket' AND aggregate_id = $1 ORDER BY id`, aggregateID)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (outboxEvent, error) {
			var e outboxEvent
			var raw []byte
			if err := r.Scan(&e.Type, &raw); err != nil {
				return e, err
			}
			return e, json.Unmarshal(raw, &e.Payload)
		})
		return err
	}))
	return out
}

func TestCreateGetAndList(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	adminID := principalID(t, admin)
	analyst := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst")

	first := create(t, admin, map[string]any{"title": "Rogue printer on floor 3"})
	assert.Equal(t, int64(1), first.Number)
	assert.Equal(t, "open", first.Status)
	assert.Equal(t, "medium", first.Priority)
	assert.Equal(t, "", first.Description)
	assert.Nil(t, first.AssigneeID)
	require.NotNil(t, first.CreatedBy)
	assert.Equal(t, adminID, *first.CreatedBy)
	assert.Equal(t, 1, first.Version)
	assert.Equal(t, []string{}, first.AlertIDs)
	assert.WithinDuration(t, time.Now(), first.CreatedAt, time.Minute)

	second := create(t, env.Client(t, analyst.Secret), map[string]any{"title": "Camera", "description": "lobby", "priority": "urgent",
		"assignee_id": analyst.PrincipalID.String()})
	assert.Equal(t, int64(2), second.Number)
	assert.Equal(t, "urgent", second.Priority)
	assert.Equal(t, "lobby", second.Description)
	require.NotNil(t, second.AssigneeID)
	assert.Equal(t, analyst.PrincipalID.String(), *second.AssigneeID)

	got := get(t, admin, first.ID)
	assert.Equal(t, first, got)

	// The audit trail and the outbox have the creation.
	var events auditEvents
	admin.Do("GET", "/api/v1/audit/events?action=ticket.created&target_id="+second.ID, nil).JSON(t, &events)
	require.Len(t, events.Items, 1)
	assert.Equal(t, "ticket", events.Items[0].Target.Type)
	assert.Equal(t, float64(2), events.Items[0].Details["number"])
	out := outboxEvents(t, env, env.Tenant.ID, second.ID)
	require.Len(t, out, 1)
	assert.Equal(t, "ticket.created", out[0].Type)
	assert.Equal(t, map[string]any{"id": second.ID, "number": float64(2), "title": "Camera", "status": "open", "priority": "urgent",
		"assignee_id": analyst.PrincipalID.String(), "alert_ids": []any{}}, out[0].Payload)

	// More tickets for the filters and pages.
	for i := 3; i <= 7; i++ {
		body := map[string]any{"title": fmt.Sprintf("ticket %d", i)}
		if i%2 == 1 {
			body["priority"] = "low"
		}
		create(t, admin, body)
	}
	tk := get(t, admin, first.ID)
	require.Equal(t, http.StatusOK, patch(admin, first.ID, tk.Version, map[string]any{"status": "in_progress"}).Status)

	list := func(query string) ticketList {
		t.Helper()
		r := admin.Do("GET", "/api/v1/tickets"+query, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		var l ticketList
		r.JSON(t, &l)
		return l
	}
	numbers := func(l ticketList) []int64 {
		out := []int64{}
		for _, x := range l.Items {
			out = append(out, x.Number)
		}
		return out
	}
	all := list("")
	assert.Equal(t, []int64{7, 6, 5, 4, 3, 2, 1}, numbers(all), "newest first")
	assert.Nil(t, all.NextCursor)
	assert.Equal(t, []int64{7, 5, 3}, numbers(list("?priority=low")))
	assert.Equal(t, []int64{1}, numbers(list("?status=in_progress")))
	assert.Equal(t, []int64{2}, numbers(list("?assignee_id="+analyst.PrincipalID.String())))
	assert.Equal(t, []int64{}, numbers(list("?assignee_id="+uuid.NewString())))
	// A cursor serves its own filters, whatever the page size.
	assert.Equal(t, []int64{5, 3}, numbers(list("?priority=low&status=open&limit=2&cursor="+url.QueryEscape(*list("?priority=low&status=open&limit=1").NextCursor))))
	assert.Equal(t, 400, admin.Do("GET", "/api/v1/tickets?priority=low&status=open&cursor="+url.QueryEscape(*list("?priority=low&limit=1").NextCursor), nil).Status,
		"and no other filters")

	// Pages of 3 walk every ticket once.
	var walked []int64
	query := "?limit=3"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		l := list(query)
		walked = append(walked, numbers(l)...)
		if l.NextCursor == nil {
			break
		}
		query = "?limit=3&cursor=" + url.QueryEscape(*l.NextCursor)
	}
	assert.Equal(t, []int64{7, 6, 5, 4, 3, 2, 1}, walked)

	p := admin.Do("GET", "/api/v1/tickets?cursor=bogus!", nil).Problem(t, http.StatusBadRequest)
	assert.Equal(t, "invalid_cursor", p.Code)
	p = admin.Do("GET", "/api/v1/tickets?status=pending", nil).Problem(t, http.StatusBadRequest)
	assert.Equal(t, "invalid_parameter", p.Code)
	p = admin.Do("GET", "/api/v1/tickets/"+uuid.NewString(), nil).Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
	assert.Contains(t, p.Detail, "ticket")
	p = admin.Do("GET", "/api/v1/tickets/not-a-uuid", nil).Problem(t, http.StatusBadRequest)
	assert.Equal(t, "invalid_parameter", p.Code)
}

func TestCreateRules(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	other, _ := env.NewTenant(t, "globex")
	outsider := env.IssueToken(t, other.ID, caller.RoleAnalyst, "outsider")
	disabled := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "gone")
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE principals SET disabled_at = now() WHERE id = $1`, disabled.PrincipalID)
		return err
	}))
	create(t, admin, map[string]any{"title": "before"})
	before := snapshot(t, env, env.Tenant.ID)

	cases := []struct {
		name    string
		body    map[string]any
		pointer string
	}{
		{"unknown assignee", map[string]any{"title": "x", "assignee_id": uuid.NewString()}, "#/assignee_id"},
		{"other tenant's assignee", map[string]any{"title": "x", "assignee_id": outsider.PrincipalID.String()}, "#/assignee_id"},
		{"disabled assignee", map[string]any{"title": "x", "assignee_id": disabled.PrincipalID.String()}, "#/assignee_id"},
		{"no title", map[string]any{"description": "x"}, "#/title"},
		{"empty title", map[string]any{"title": ""}, "#/title"},
		{"long title", map[string]any{"title": strings.Repeat("x", 201)}, "#/title"},
		{"control characters", map[string]any{"title": "a\nb"}, "#/title"},
		{"unknown priority", map[string]any{"title": "x", "priority": "whenever"}, "#/priority"},
		{"unknown field", map[string]any{"title": "x", "status": "closed"}, "#/status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := admin.Do("POST", "/api/v1/tickets", tc.body).Problem(t, http.StatusUnprocessableEntity)
			assert.Equal(t, "validation_failed", p.Code)
			require.NotEmpty(t, p.Errors)
			assert.Equal(t, tc.pointer, p.Errors[0].Pointer, "%+v", p.Errors)
		})
	}
	assert.Equal(t, before, snapshot(t, env, env.Tenant.ID), "refused creations changed nothing")
	assert.Equal(t, int64(2), create(t, admin, map[string]any{"title": "after"}).Number, "refusals leave no gap in the numbers")
}

func TestUpdate(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	analyst := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst")
	tk := create(t, admin, map[string]any{"title": "Unknown laptop", "description": "seen on VLAN 20"})

	t.Run("preconditions", func(t *testing.T) {
		before := snapshot(t, env, env.Tenant.ID)
		r := admin.Do("PATCH", "/api/v1/tickets/"+tk.ID, map[string]any{"title": "x"})
		p := r.Problem(t, http.StatusPreconditionRequired)
		assert.Equal(t, "precondition_required", p.Code)
		assert.Equal(t, `"v1"`, r.Header.Get("ETag"), "428 says which version to send")

		p = patch(admin, tk.ID, 7, map[string]any{"title": "x"}).Problem(t, http.StatusPreconditionFailed)
		assert.Equal(t, "precondition_failed", p.Code)
		// An unquoted tag is not called an older version: it is told to
		// quote it.
		r = admin.Do("PATCH", "/api/v1/tickets/"+tk.ID, map[string]any{"title": "x"}, apitest.Header("If-Match", "v1"))
		p = r.Problem(t, http.StatusBadRequest)
		assert.Equal(t, "invalid_parameter", p.Code)
		assert.Contains(t, p.Detail, `in double quotes (RFC 9110 entity-tag): If-Match: "v1", not v1`)
		assert.Equal(t, "If-Match", p.Errors[0].Parameter)
		assert.Equal(t, `"v1"`, r.Header.Get("ETag"))
		// A stale If-Match wins over an invalid change.
		p = patch(admin, tk.ID, 7, map[string]any{"status": "open"}).Problem(t, http.StatusPreconditionFailed)
		assert.Equal(t, "precondition_failed", p.Code)
		// Even a change of nothing needs If-Match.
		p = admin.Do("PATCH", "/api/v1/tickets/"+tk.ID, map[string]any{"status": "open"}).Problem(t, http.StatusPreconditionRequired)
		assert.Equal(t, "precondition_required", p.Code)
		p = patch(admin, uuid.NewString(), 1, map[string]any{"title": "x"}).Problem(t, http.StatusNotFound)
		assert.Equal(t, "not_found", p.Code)
		p = patch(admin, tk.ID, 1, map[string]any{}).Problem(t, http.StatusUnprocessableEntity)
		assert.Equal(t, "validation_failed", p.Code)
		assert.Equal(t, "send at least one field to change: assignee_id, description, priority, status, title", p.Errors[0].Detail)
		assert.Equal(t, before, snapshot(t, env, env.Tenant.ID))
	})

	t.Run("change", func(t *testing.T) {
		r := patch(admin, tk.ID, 1, map[string]any{"title": "Unknown laptop (Dell)", "priority": "high", "assignee_id": analyst.PrincipalID.String()})
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		var got ticket
		r.JSON(t, &got)
		assert.Equal(t, `"v2"`, r.Header.Get("ETag"))
		assert.Equal(t, 2, got.Version)
		assert.Equal(t, "Unknown laptop (Dell)", got.Title)
		assert.Equal(t, "high", got.Priority)
		assert.Equal(t, "seen on VLAN 20", got.Description)
		require.NotNil(t, got.AssigneeID)
		assert.Equal(t, analyst.PrincipalID.String(), *got.AssigneeID)
		assert.False(t, got.UpdatedAt.Before(tk.UpdatedAt))
		assert.Equal(t, got, get(t, admin, tk.ID))

		// The old ETag is stale now; `*` matches any version.
		assert.Equal(t, "precondition_failed", patch(admin, tk.ID, 1, map[string]any{"title": "y"}).Problem(t, http.StatusPreconditionFailed).Code)
		r = admin.Do("PATCH", "/api/v1/tickets/"+tk.ID, map[string]any{"description": "seen on VLAN 30"}, apitest.Header("If-Match", "*"))
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		assert.Equal(t, `"v3"`, r.Header.Get("ETag"))

		var events auditEvents
		admin.Do("GET", "/api/v1/audit/events?action=ticket.updated&target_id="+tk.ID, nil).JSON(t, &events)
		require.Len(t, events.Items, 2)
		changes := events.Items[1].Details["changes"].(map[string]any)
		assert.Equal(t, map[string]any{"from": "medium", "to": "high"}, changes["priority"])
		assert.Equal(t, map[string]any{"from": nil, "to": analyst.PrincipalID.String()}, changes["assignee_id"])
		assert.NotContains(t, fmt.Sprint(events.Items[0].Details), "VLAN", "descriptions stay out of the audit trail")

		out := outboxEvents(t, env, env.Tenant.ID, tk.ID)
		require.Len(t, out, 3)
		assert.Equal(t, []string{"ticket.created", "ticket.updated", "ticket.updated"}, []string{out[0].Type, out[1].Type, out[2].Type})
		assert.Equal(t, "high", out[1].Payload["priority"])
		assert.Equal(t, analyst.PrincipalID.String(), out[1].Payload["assignee_id"])
		assert.NotContains(t, out[2].Payload, "description")
	})

	t.Run("no-op", func(t *testing.T) {
		cur := get(t, admin, tk.ID)
		before := snapshot(t, env, env.Tenant.ID)
		r := patch(admin, tk.ID, cur.Version, map[string]any{"title": cur.Title, "status": cur.Status, "priority": cur.Priority})
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		var got ticket
		r.JSON(t, &got)
		assert.Equal(t, cur, got)
		assert.Equal(t, fmt.Sprintf(`"v%d"`, cur.Version), r.Header.Get("ETag"))
		assert.Equal(t, before, snapshot(t, env, env.Tenant.ID), "a change of nothing bumps no version and records nothing")
	})

	t.Run("assignee", func(t *testing.T) {
		cur := get(t, admin, tk.ID)
		before := snapshot(t, env, env.Tenant.ID)
		p := patch(admin, tk.ID, cur.Version, map[string]any{"assignee_id": uuid.NewString(), "title": "z"}).Problem(t, http.StatusUnprocessableEntity)
		assert.Equal(t, "validation_failed", p.Code)
		require.NotEmpty(t, p.Errors)
		assert.Equal(t, "#/assignee_id", p.Errors[0].Pointer)
		assert.Equal(t, before, snapshot(t, env, env.Tenant.ID), "the title did not change either")

		// null unassigns; absent leaves the assignee alone.
		r := patch(admin, tk.ID, cur.Version, map[string]any{"priority": "low"})
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		got := get(t, admin, tk.ID)
		require.NotNil(t, got.AssigneeID, "absent is not null")
		r = patch(admin, tk.ID, got.Version, map[string]any{"assignee_id": nil})
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		got = get(t, admin, tk.ID)
		assert.Nil(t, got.AssigneeID)
		var events auditEvents
		admin.Do("GET", "/api/v1/audit/events?action=ticket.updated&target_id="+tk.ID+"&limit=1", nil).JSON(t, &events)
		require.Len(t, events.Items, 1)
		assert.Equal(t, map[string]any{"from": analyst.PrincipalID.String(), "to": nil}, events.Items[0].Details["changes"].(map[string]any)["assignee_id"])
	})
}

func TestStatusTransitions(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	// How to reach each status from open.
	reach := map[string][]string{
		"open":        nil,
		"in_progress": {"in_progress"},
		"resolved":    {"resolved"},
		"closed":      {"closed"},
	}
	allowed := map[[2]string]bool{
		{"open", "in_progress"}: true, {"open", "resolved"}: true, {"open", "closed"}: true,
		{"in_progress", "open"}: true, {"in_progress", "resolved"}: true,
		{"resolved", "in_progress"}: true, {"resolved", "closed"}: true,
	}
	statuses := []string{"open", "in_progress", "resolved", "closed"}
	for _, from := range statuses {
		for _, to := range statuses {
			t.Run(from+"->"+to, func(t *testing.T) {
				tk := create(t, admin, map[string]any{"title": from + " to " + to})
				for _, s := range reach[from] {
					r := patch(admin, tk.ID, tk.Version, map[string]any{"status": s})
					require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
					r.JSON(t, &tk)
				}
				require.Equal(t, from, tk.Status)
				before := snapshot(t, env, env.Tenant.ID)
				r := patch(admin, tk.ID, tk.Version, map[string]any{"status": to})
				switch {
				case from == to:
					require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
					assert.Equal(t, before, snapshot(t, env, env.Tenant.ID), "staying put changes nothing")
				case allowed[[2]string{from, to}]:
					require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
					var got ticket
					r.JSON(t, &got)
					assert.Equal(t, to, got.Status)
					assert.Equal(t, tk.Version+1, got.Version)
				default:
					p := r.Problem(t, http.StatusConflict)
					assert.Equal(t, "invalid_transition", p.Code)
					assert.Contains(t, p.Detail, "from "+from+" to "+to)
					assert.Equal(t, before, snapshot(t, env, env.Tenant.ID), "a refused transition changes nothing")
					assert.Equal(t, from, get(t, admin, tk.ID).Status)
				}
			})
		}
	}
}

func TestComments(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	analyst := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "Ana Lyst")
	tk := create(t, admin, map[string]any{"title": "Rogue AP"})

	r := env.Client(t, analyst.Secret).Do("POST", "/api/v1/tickets/"+tk.ID+"/comments", map[string]any{"body": "It is the SSID 'free-wifi'."})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var c comment
	r.JSON(t, &c)
	assert.Equal(t, analyst.PrincipalID.String(), c.AuthorID)
	assert.Equal(t, "Ana Lyst", c.AuthorName)
	assert.Equal(t, "It is the SSID 'free-wifi'.", c.Body)
	for i := 2; i <= 5; i++ {
		r := admin.Do("POST", "/api/v1/tickets/"+tk.ID+"/comments", map[string]any{"body": fmt.Sprintf("comment %d", i)})
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	}

	var bodies []string
	query := "?limit=2"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 4)
		r := admin.Do("GET", "/api/v1/tickets/"+tk.ID+"/comments"+query, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		var l commentList
		r.JSON(t, &l)
		for _, x := range l.Items {
			bodies = append(bodies, x.Body)
		}
		if l.NextCursor == nil {
			break
		}
		query = "?limit=2&cursor=" + url.QueryEscape(*l.NextCursor)
	}
	assert.Equal(t, []string{"It is the SSID 'free-wifi'.", "comment 2", "comment 3", "comment 4", "comment 5"}, bodies, "oldest first")

	var events auditEvents
	admin.Do("GET", "/api/v1/audit/events?action=ticket.commented", nil).JSON(t, &events)
	require.Len(t, events.Items, 5)
	assert.Equal(t, tk.ID, *events.Items[4].Target.ID)
	assert.Equal(t, c.ID, events.Items[4].Details["comment_id"])
	raw := admin.Do("GET", "/api/v1/audit/events?action=ticket.commented", nil).Body
	assert.NotContains(t, string(raw), "free-wifi", "comment bodies stay out of the audit trail")
	assert.Equal(t, 1, get(t, admin, tk.ID).Version, "comments do not change the ticket's version")

	before := snapshot(t, env, env.Tenant.ID)
	p := admin.Do("POST", "/api/v1/tickets/"+uuid.NewString()+"/comments", map[string]any{"body": "x"}).Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
	p = admin.Do("POST", "/api/v1/tickets/"+tk.ID+"/comments", map[string]any{"body": ""}).Problem(t, http.StatusUnprocessableEntity)
	assert.Equal(t, "#/body", p.Errors[0].Pointer)
	p = admin.Do("POST", "/api/v1/tickets/"+tk.ID+"/comments", map[string]any{"body": strings.Repeat("x", 10001)}).Problem(t, http.StatusUnprocessableEntity)
	assert.Equal(t, "#/body", p.Errors[0].Pointer)
	assert.Equal(t, before, snapshot(t, env, env.Tenant.ID))
	p = admin.Do("GET", "/api/v1/tickets/"+uuid.NewString()+"/comments", nil).Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
	p = admin.Do("GET", "/api/v1/tickets/"+tk.ID+"/comments?cursor=%25%25", nil).Problem(t, http.StatusBadRequest)
	assert.Equal(t, "invalid_cursor", p.Code)
}

func TestLinks(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	tk := create(t, admin, map[string]any{"title": "Investigate"})
	peer := create(t, admin, map[string]any{"title": "Related"})
	alertID, assetID := newAlert(t, env, env.Tenant.ID, "printer-3f")

	other, otherAdmin := env.NewTenant(t, "globex")
	otherAlert, otherAsset := newAlert(t, env, other.ID, "elsewhere")
	otherTicket := create(t, env.Client(t, otherAdmin), map[string]any{"title": "not yours"})

	path := "/api/v1/tickets/" + tk.ID + "/links"
	added := []struct {
		body map[string]any
	}{
		{map[string]any{"type": "alert", "target_id": alertID.String()}},
		{map[string]any{"type": "asset", "target_id": assetID.String()}},
		{map[string]any{"type": "ticket", "target_id": peer.ID}},
		{map[string]any{"type": "url", "url": "https://wiki.example.com/runbooks/rogue-devices?x=1#top"}},
		{map[string]any{"type": "url", "url": "http://10.0.0.5:8080/status"}},
	}
	var ids []string
	for _, a := range added {
		r := admin.Do("POST", path, a.body)
		require.Equal(t, http.StatusCreated, r.Status, "%v: %s", a.body, r.Body)
		var l link
		r.JSON(t, &l)
		assert.Equal(t, a.body["type"], l.Type)
		if target, ok := a.body["target_id"]; ok {
			require.NotNil(t, l.TargetID)
			assert.Equal(t, target, *l.TargetID)
			assert.Nil(t, l.URL)
		} else {
			require.NotNil(t, l.URL)
			assert.Equal(t, a.body["url"], *l.URL)
			assert.Nil(t, l.TargetID)
		}
		ids = append(ids, l.ID)
	}
	var listed linkList
	admin.Do("GET", path, nil).JSON(t, &listed)
	require.Len(t, listed.Items, len(added))
	for i, l := range listed.Items {
		assert.Equal(t, ids[i], l.ID, "oldest first")
	}
	got := get(t, admin, tk.ID)
	assert.Equal(t, []string{alertID.String()}, got.AlertIDs, "alert_ids are the alert links")
	assert.Equal(t, 1, got.Version, "links do not change the ticket's version")

	var events auditEvents
	admin.Do("GET", "/api/v1/audit/events?action=ticket.linked&target_id="+tk.ID, nil).JSON(t, &events)
	assert.Len(t, events.Items, len(added))
	out := outboxEvents(t, env, env.Tenant.ID, tk.ID)
	require.Len(t, out, 2, "created, then updated by the alert link")
	assert.Equal(t, "ticket.updated", out[1].Type)
	assert.Equal(t, []any{alertID.String()}, out[1].Payload["alert_ids"])

	before := snapshot(t, env, env.Tenant.ID)
	refused := []struct {
		name    string
		body    map[string]any
		status  int
		code    string
		pointer string
		detail  string
	}{
		{"duplicate alert", map[string]any{"type": "alert", "target_id": alertID.String()}, 409, "conflict", "", ""},
		{"duplicate url", map[string]any{"type": "url", "url": "http://10.0.0.5:8080/status"}, 409, "conflict", "", ""},
		{"unknown alert", map[string]any{"type": "alert", "target_id": uuid.NewString()}, 404, "not_found", "", "alert"},
		{"unknown asset", map[string]any{"type": "asset", "target_id": uuid.NewString()}, 404, "not_found", "", "asset"},
		{"unknown ticket", map[string]any{"type": "ticket", "target_id": uuid.NewString()}, 404, "not_found", "", "ticket"},
		{"other tenant's alert", map[string]any{"type": "alert", "target_id": otherAlert.String()}, 404, "not_found", "", "alert"},
		{"other tenant's asset", map[string]any{"type": "asset", "target_id": otherAsset.String()}, 404, "not_found", "", "asset"},
		{"other tenant's ticket", map[string]any{"type": "ticket", "target_id": otherTicket.ID}, 404, "not_found", "", "ticket"},
		{"itself", map[string]any{"type": "ticket", "target_id": tk.ID}, 422, "validation_failed", "#/target_id", ""},
		{"alert without target", map[string]any{"type": "alert"}, 422, "validation_failed", "#/target_id", ""},
		{"asset with url", map[string]any{"type": "asset", "target_id": assetID.String(), "url": "https://example.com"}, 422, "validation_failed", "#/url", ""},
		{"url without url", map[string]any{"type": "url"}, 422, "validation_failed", "#/url", ""},
		{"url with target", map[string]any{"type": "url", "url": "https://example.com", "target_id": alertID.String()}, 422, "validation_failed", "#/target_id", ""},
		{"ftp url", map[string]any{"type": "url", "url": "ftp://example.com/file"}, 422, "validation_failed", "#/url", ""},
		{"javascript url", map[string]any{"type": "url", "url": "javascript:alert(1)"}, 422, "validation_failed", "#/url", ""},
		{"relative url", map[string]any{"type": "url", "url": "/runbooks"}, 422, "validation_failed", "#/url", ""},
		{"no host", map[string]any{"type": "url", "url": "https:///path"}, 422, "validation_failed", "#/url", ""},
		{"spaces", map[string]any{"type": "url", "url": "https://example.com/a b"}, 422, "validation_failed", "#/url", ""},
		{"credentials", map[string]any{"type": "url", "url": "https://user:pw@example.com/"}, 422, "validation_failed", "#/url", ""},
		{"too long url", map[string]any{"type": "url", "url": "https://example.com/" + strings.Repeat("a", 2000)}, 422, "validation_failed", "#/url", ""},
		{"unknown type", map[string]any{"type": "email", "url": "https://example.com"}, 422, "validation_failed", "#/type", ""},
		{"bad target id", map[string]any{"type": "alert", "target_id": "nope"}, 422, "validation_failed", "#/target_id", ""},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			p := admin.Do("POST", path, tc.body).Problem(t, tc.status)
			assert.Equal(t, tc.code, p.Code)
			if tc.pointer != "" {
				require.NotEmpty(t, p.Errors)
				assert.Equal(t, tc.pointer, p.Errors[0].Pointer, "%+v", p.Errors)
			}
			if tc.detail != "" {
				assert.Contains(t, p.Detail, "no "+tc.detail+" with that id")
			}
		})
	}
	assert.Equal(t, before, snapshot(t, env, env.Tenant.ID), "refused links changed nothing")

	p := admin.Do("POST", "/api/v1/tickets/"+uuid.NewString()+"/links", map[string]any{"type": "url", "url": "https://example.com"}).Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
	p = admin.Do("GET", "/api/v1/tickets/"+uuid.NewString()+"/links", nil).Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
}

func TestCreateTicketFromAlert(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	adminID := principalID(t, admin)
	analyst := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst")
	alertID, _ := newAlert(t, env, env.Tenant.ID, "aa:bb:cc:dd:ee:ff (printer)")
	create(t, admin, map[string]any{"title": "earlier"})

	r := admin.Do("POST", "/api/v1/alerts/"+alertID.String()+"/tickets", nil)
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	assert.Equal(t, `"v1"`, r.Header.Get("ETag"))
	var tk ticket
	r.JSON(t, &tk)
	assert.Equal(t, "Unauthorized device: aa:bb:cc:dd:ee:ff (printer)", tk.Title)
	assert.Equal(t, int64(2), tk.Number)
	assert.Equal(t, "open", tk.Status)
	assert.Equal(t, "medium", tk.Priority)
	assert.Equal(t, []string{alertID.String()}, tk.AlertIDs)
	assert.Equal(t, tk, get(t, admin, tk.ID))

	// The ticket links to the alert ...
	var links linkList
	admin.Do("GET", "/api/v1/tickets/"+tk.ID+"/links", nil).JSON(t, &links)
	require.Len(t, links.Items, 1)
	assert.Equal(t, "alert", links.Items[0].Type)
	assert.Equal(t, alertID.String(), *links.Items[0].TargetID)

	// ... and the alert's timeline names the ticket.
	type entry struct {
		Kind, ActorType, ActorName, Summary string
		ActorID                             *string
		Details                             map[string]any
	}
	timeline := func(alertID uuid.UUID) []entry {
		ctx := context.Background()
		var out []entry
		require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT kind, actor_type, actor_id, actor_name, summary, details FROM alert_timeline WHERE alert_id = $1 ORDER BY id`, alertID)
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (entry, error) {
				var e entry
				err := r.Scan(&e.Kind, &e.ActorType, &e.ActorID, &e.ActorName, &e.Summary, &e.Details)
				return e, err
			})
			return err
		}))
		return out
	}
	tl := timeline(alertID)
	require.Len(t, tl, 1)
	assert.Equal(t, "ticket_linked", tl[0].Kind)
	assert.Equal(t, "principal", tl[0].ActorType)
	require.NotNil(t, tl[0].ActorID)
	assert.Equal(t, adminID, *tl[0].ActorID)
	assert.Equal(t, "admin", tl[0].ActorName)
	assert.Equal(t, "ticket #2 opened", tl[0].Summary)
	assert.Equal(t, map[string]any{"ticket_id": tk.ID, "number": float64(2)}, tl[0].Details)

	var events auditEvents
	admin.Do("GET", "/api/v1/audit/events?action=ticket.created", nil).JSON(t, &events)
	require.Len(t, events.Items, 2)
	assert.Equal(t, tk.ID, *events.Items[0].Target.ID, "newest first")
	assert.Equal(t, alertID.String(), events.Items[0].Details["from_alert_id"])
	assert.Equal(t, []any{alertID.String()}, events.Items[0].Details["alert_ids"])
	out := outboxEvents(t, env, env.Tenant.ID, tk.ID)
	require.Len(t, out, 1)
	assert.Equal(t, "ticket.created", out[0].Type)
	assert.Equal(t, []any{alertID.String()}, out[0].Payload["alert_ids"])

	// A title and the rest may be given; a second ticket for the same alert is fine.
	r = env.Client(t, analyst.Secret).Do("POST", "/api/v1/alerts/"+alertID.String()+"/tickets",
		map[string]any{"title": "Printer again", "priority": "high", "assignee_id": analyst.PrincipalID.String(), "description": "d"})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var second ticket
	r.JSON(t, &second)
	assert.Equal(t, "Printer again", second.Title)
	assert.Equal(t, "high", second.Priority)
	assert.Equal(t, "d", second.Description)
	assert.Equal(t, analyst.PrincipalID.String(), *second.CreatedBy)
	assert.Len(t, timeline(alertID), 2)

	// A long asset name still makes a valid title.
	longAlert, _ := newAlert(t, env, env.Tenant.ID, strings.Repeat("é", 300))
	r = admin.Do("POST", "/api/v1/alerts/"+longAlert.String()+"/tickets", map[string]any{})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var long ticket
	r.JSON(t, &long)
	assert.Len(t, []rune(long.Title), 200)

	other, _ := env.NewTenant(t, "globex")
	otherAlert, _ := newAlert(t, env, other.ID, "elsewhere")
	before := snapshot(t, env, env.Tenant.ID)
	cases := []struct {
		name    string
		alert   string
		body    any
		status  int
		code    string
		pointer string
	}{
		{"unknown alert", uuid.NewString(), nil, 404, "not_found", ""},
		{"other tenant's alert", otherAlert.String(), nil, 404, "not_found", ""},
		{"unknown assignee", alertID.String(), map[string]any{"assignee_id": uuid.NewString()}, 422, "validation_failed", "#/assignee_id"},
		{"empty title", alertID.String(), map[string]any{"title": ""}, 422, "validation_failed", "#/title"},
		{"bad alert id", "nope", nil, 400, "invalid_parameter", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := admin.Do("POST", "/api/v1/alerts/"+tc.alert+"/tickets", tc.body).Problem(t, tc.status)
			assert.Equal(t, tc.code, p.Code)
			if tc.pointer != "" {
				require.NotEmpty(t, p.Errors)
				assert.Equal(t, tc.pointer, p.Errors[0].Pointer)
			}
		})
	}
	assert.Equal(t, before, snapshot(t, env, env.Tenant.ID), "refused requests changed nothing")
	assert.Len(t, timeline(alertID), 2)
}

func TestAuditorReadsButNeverChanges(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	tk := create(t, admin, map[string]any{"title": "Audited"})
	require.Equal(t, http.StatusCreated, admin.Do("POST", "/api/v1/tickets/"+tk.ID+"/comments", map[string]any{"body": "note"}).Status)
	alertID, _ := newAlert(t, env, env.Tenant.ID, "cam")

	for _, path := range []string{"/api/v1/tickets", "/api/v1/tickets/" + tk.ID, "/api/v1/tickets/" + tk.ID + "/comments", "/api/v1/tickets/" + tk.ID + "/links"} {
		r := auditor.Do("GET", path, nil)
		assert.Equal(t, http.StatusOK, r.Status, "%s: %s", path, r.Body)
	}
	assert.Equal(t, tk, get(t, auditor, tk.ID))

	before := snapshot(t, env, env.Tenant.ID)
	mutations := []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/tickets", map[string]any{"title": "x"}},
		{"PATCH", "/api/v1/tickets/" + tk.ID, map[string]any{"status": "closed"}},
		{"POST", "/api/v1/tickets/" + tk.ID + "/comments", map[string]any{"body": "x"}},
		{"POST", "/api/v1/tickets/" + tk.ID + "/links", map[string]any{"type": "url", "url": "https://example.com"}},
		{"POST", "/api/v1/alerts/" + alertID.String() + "/tickets", nil},
	}
	for _, m := range mutations {
		t.Run(m.method+" "+m.path, func(t *testing.T) {
			p := auditor.Do(m.method, m.path, m.body, apitest.Header("If-Match", `"v1"`)).Problem(t, http.StatusForbidden)
			assert.Equal(t, "forbidden", p.Code)
		})
	}
	assert.Equal(t, before, snapshot(t, env, env.Tenant.ID))

	// Device identifiers in the text are masked for the auditor, as in
	// alerts and assets; the admin reads them whole.
	marked := create(t, admin, map[string]any{"title": "Unknown device de:ad:be:ef:00:01", "description": "seen at 192.0.2.66 on VLAN 20"})
	require.Equal(t, http.StatusCreated, admin.Do("POST", "/api/v1/tickets/"+marked.ID+"/comments", map[string]any{"body": "it answered on 192.0.2.66"}).Status)
	for _, path := range []string{"/api/v1/tickets", "/api/v1/tickets/" + marked.ID, "/api/v1/tickets/" + marked.ID + "/comments"} {
		r := auditor.Do("GET", path, nil)
		require.Equal(t, http.StatusOK, r.Status)
		assert.NotContains(t, string(r.Body), "de:ad:be:ef:00:01", path)
		assert.NotContains(t, string(r.Body), "192.0.2.66", path)
		assert.Contains(t, string(r.Body), `"redacted":true`, path)
		r = admin.Do("GET", path, nil)
		assert.Contains(t, string(r.Body), "192.0.2.66", path)
		assert.NotContains(t, string(r.Body), `"redacted":true`, path)
	}
	assert.Equal(t, "Unknown device de:ad:be:xx:xx:xx", get(t, auditor, marked.ID).Title)
}

func TestTenantsCannotSeeEachOthersTickets(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	tk := create(t, admin, map[string]any{"title": "Tenant A only"})
	require.Equal(t, http.StatusCreated, admin.Do("POST", "/api/v1/tickets/"+tk.ID+"/comments", map[string]any{"body": "secret plans"}).Status)

	_, otherToken := env.NewTenant(t, "globex")
	b := env.Client(t, otherToken)
	beforeA := snapshot(t, env, env.Tenant.ID)

	var l ticketList
	b.Do("GET", "/api/v1/tickets", nil).JSON(t, &l)
	assert.Empty(t, l.Items)

	requests := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/tickets/" + tk.ID, nil},
		{"PATCH", "/api/v1/tickets/" + tk.ID, map[string]any{"status": "closed"}},
		{"GET", "/api/v1/tickets/" + tk.ID + "/comments", nil},
		{"POST", "/api/v1/tickets/" + tk.ID + "/comments", map[string]any{"body": "x"}},
		{"GET", "/api/v1/tickets/" + tk.ID + "/links", nil},
		{"POST", "/api/v1/tickets/" + tk.ID + "/links", map[string]any{"type": "url", "url": "https://example.com"}},
	}
	for _, rq := range requests {
		t.Run(rq.method+" "+rq.path, func(t *testing.T) {
			p := b.Do(rq.method, rq.path, rq.body, apitest.Header("If-Match", "*")).Problem(t, http.StatusNotFound)
			assert.Equal(t, "not_found", p.Code)
		})
	}
	assert.Equal(t, beforeA, snapshot(t, env, env.Tenant.ID), "tenant B changed nothing of tenant A's")
	assert.Equal(t, int64(1), create(t, b, map[string]any{"title": "B's first"}).Number, "numbers are per tenant")
}
