package alerts_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// world is a tenant with a site whose policy allows passive discovery of
// 192.0.2.0/24 (plus an allowlisted vendor), and an agent there.
type world struct {
	env     *apitest.Env
	admin   *apitest.Client
	analyst *apitest.Client
	auditor *apitest.Client
	site    string
	agent   *apitest.Agent
}

func newWorld(t *testing.T) *world {
	env := apitest.Start(t)
	w := &world{env: env, admin: env.Client(t, env.AdminToken)}
	w.analyst = env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst").Secret)
	w.auditor = env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	r := w.admin.Do("POST", "/api/v1/sites", map[string]any{"name": "hq"})
	require.Equal(t, http.StatusCreated, r.Status)
	var s struct {
		ID string `json:"id"`
	}
	r.JSON(t, &s)
	w.site = s.ID
	r = w.admin.Do("PUT", "/api/v1/discovery/policies/"+w.site, map[string]any{
		"allowed_cidrs": []string{"192.0.2.0/24"}, "allowed_methods": []string{"passive_neighbor"}, "collector_agent_ids": []string{},
		"observation_retention_days": 30, "allowlist": []any{map[string]any{"type": "oui", "value": "00:1b:63", "description": "office printers"}},
	}, apitest.Header("If-Match", `"v1"`))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	_, token := env.EnrollmentToken(t, map[string]any{"name": "hq", "site_id": w.site})
	var err error
	w.agent, err = env.Enroll(t, token, "m-collector", "collector")
	require.NoError(t, err)
	return w
}

// see sends one neighbour observation through the agent protocol.
func (w *world) see(t *testing.T, mac, ip string, at time.Time) {
	t.Helper()
	rep := w.agent.Report()
	rep.Observations = []*agentv1.NeighborObservation{{Mac: mac, Ip: ip, Interface: "eth0", State: "reachable", LastSeenAt: timestamppb.New(at)}}
	_, err := w.agent.RPC(t).Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{rep}}))
	require.NoError(t, err)
}

type alertJSON struct {
	ID         string   `json:"id"`
	Status     string   `json:"status"`
	AssetID    string   `json:"asset_id"`
	SeenCount  int64    `json:"seen_count"`
	AssigneeID *string  `json:"assignee_id"`
	Resolution *string  `json:"resolution"`
	TicketIDs  []string `json:"ticket_ids"`
}

func (w *world) alerts(t *testing.T, query string) []alertJSON {
	t.Helper()
	var l struct {
		Items []alertJSON `json:"items"`
	}
	w.admin.Do("GET", "/api/v1/alerts"+query, nil).JSON(t, &l)
	return l.Items
}

type assetJSON struct {
	ID            string `json:"id"`
	Source        string `json:"source"`
	Authorization struct {
		State string  `json:"state"`
		Basis *string `json:"basis"`
	} `json:"authorization"`
}

func (w *world) asset(t *testing.T, id string) assetJSON {
	t.Helper()
	var a assetJSON
	w.admin.Do("GET", "/api/v1/assets/"+id, nil).JSON(t, &a)
	return a
}

type evidenceJSON struct {
	ID       string         `json:"id"`
	Kind     string         `json:"kind"`
	Content  map[string]any `json:"content"`
	SHA256   string         `json:"content_sha256"`
	Redacted bool           `json:"redacted"`
}

func TestUnauthorizedDeviceIsRaisedWorkedAndProven(t *testing.T) {
	w := newWorld(t)
	start := time.Now().UTC()
	w.see(t, "de:ad:be:ef:00:01", "192.0.2.66", start)
	list := w.alerts(t, "?status=open")
	require.Len(t, list, 1, "one open alert")
	alert := list[0]
	a := w.asset(t, alert.AssetID)
	assert.Equal(t, "discovery", a.Source)
	assert.Equal(t, "unauthorized", a.Authorization.State)

	// Seen again: the same alert counts it.
	w.see(t, "de:ad:be:ef:00:01", "192.0.2.66", start.Add(2*time.Hour))
	list = w.alerts(t, "")
	require.Len(t, list, 1, "deduplicated per asset")
	assert.EqualValues(t, 2, list[0].SeenCount)

	// Triage: acknowledge, assign, resolve as authorized.
	p := w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/resolve", map[string]any{"resolution": "nonsense"}).Problem(t, 422)
	assert.Equal(t, "#/resolution", p.Errors[0].Pointer)
	r := w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/acknowledge", map[string]any{"note": "looking into it"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	p = w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/acknowledge", nil).Problem(t, 409)
	assert.Equal(t, "invalid_transition", p.Code)
	assert.Equal(t, "an acknowledged alert cannot be acknowledged again", p.Detail)
	var me struct {
		PrincipalID string `json:"principal_id"`
	}
	w.analyst.Do("GET", "/api/v1/me", nil).JSON(t, &me)
	assert.Equal(t, "#/assignee", w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/assign", map[string]any{"assignee": uuid.NewString()}).Problem(t, 422).Errors[0].Pointer)
	r = w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/assign", map[string]any{"assignee": me.PrincipalID})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	r = w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/resolve", map[string]any{"resolution": "authorized", "note": "the CFO's new laptop"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var resolved alertJSON
	r.JSON(t, &resolved)
	assert.Equal(t, "resolved", resolved.Status)
	assert.Equal(t, "authorized", *resolved.Resolution)
	assert.Equal(t, me.PrincipalID, *resolved.AssigneeID)
	a = w.asset(t, alert.AssetID)
	assert.Equal(t, "authorized", a.Authorization.State)
	assert.Equal(t, "manual", *a.Authorization.Basis)
	for step, tc := range map[string]struct {
		body   any
		detail string
	}{
		"acknowledge": {nil, "a resolved alert cannot be acknowledged"},
		"resolve":     {map[string]any{"resolution": "removed"}, "a resolved alert cannot be resolved again"},
		"assign":      {map[string]any{"assignee": me.PrincipalID}, "a resolved alert cannot be assigned"},
	} {
		assert.Equal(t, tc.detail, w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/"+step, tc.body).Problem(t, 409).Detail, step)
	}

	// Seen again after authorization: no new alert.
	w.see(t, "de:ad:be:ef:00:01", "192.0.2.66", start.Add(3*time.Hour))
	assert.Len(t, w.alerts(t, "?status=open"), 0)

	// The timeline tells the story.
	var tl struct {
		Items []struct {
			Kind  string `json:"kind"`
			Actor struct {
				Type string `json:"type"`
			} `json:"actor"`
		} `json:"items"`
	}
	w.auditor.Do("GET", "/api/v1/alerts/"+alert.ID+"/timeline", nil).JSON(t, &tl)
	var kinds []string
	for _, e := range tl.Items {
		kinds = append(kinds, e.Kind)
	}
	assert.Equal(t, []string{"raised", "observed_again", "acknowledged", "assigned", "resolved"}, kinds)
	assert.Equal(t, "agent", tl.Items[0].Actor.Type)
	assert.Equal(t, "principal", tl.Items[2].Actor.Type)

	// Evidence: the observation, three triage steps and the authorization,
	// each with a hash of its content.
	var ev struct {
		Items []evidenceJSON `json:"items"`
	}
	w.analyst.Do("GET", "/api/v1/alerts/"+alert.ID+"/evidence", nil).JSON(t, &ev)
	var evKinds []string
	for _, e := range ev.Items {
		evKinds = append(evKinds, e.Kind)
		raw, _ := json.Marshal(e.Content)
		canon, err := audit.CanonicalJSON(json.RawMessage(raw))
		require.NoError(t, err)
		sum := sha256.Sum256(canon)
		assert.Equal(t, hex.EncodeToString(sum[:]), e.SHA256, "the hash covers the content")
	}
	assert.Equal(t, []string{"observation", "triage", "triage", "authorization", "triage"}, evKinds)
	assert.Equal(t, "de:ad:be:ef:00:01", ev.Items[0].Content["mac"])

	// The tenant-wide evidence list filters by alert, asset and kind and
	// pages by cursor; one record reads back identical.
	var all struct {
		Items      []evidenceJSON `json:"items"`
		NextCursor *string        `json:"next_cursor"`
	}
	w.analyst.Do("GET", "/api/v1/evidence?alert_id="+alert.ID+"&kind=triage", nil).JSON(t, &all)
	assert.Len(t, all.Items, 3)
	w.analyst.Do("GET", "/api/v1/evidence?asset_id="+alert.AssetID+"&limit=2", nil).JSON(t, &all)
	require.Len(t, all.Items, 2)
	require.NotNil(t, all.NextCursor)
	seen := map[string]bool{all.Items[0].ID: true, all.Items[1].ID: true}
	w.analyst.Do("GET", "/api/v1/evidence?asset_id="+alert.AssetID+"&limit=2&cursor="+*all.NextCursor, nil).JSON(t, &all)
	require.NotEmpty(t, all.Items)
	assert.False(t, seen[all.Items[0].ID], "the next page starts after the last")
	assert.Equal(t, "invalid_parameter", w.analyst.Do("GET", "/api/v1/evidence?kind=rumour", nil).Problem(t, 400).Code)
	var single evidenceJSON
	w.analyst.Do("GET", "/api/v1/evidence/"+ev.Items[0].ID, nil).JSON(t, &single)
	assert.Equal(t, ev.Items[0].SHA256, single.SHA256)
	assert.Equal(t, "not_found", w.analyst.Do("GET", "/api/v1/evidence/"+uuid.NewString(), nil).Problem(t, 404).Code)

	// Auditors read the redacted projection: same ids and hashes, no MAC.
	var red struct {
		Items []evidenceJSON `json:"items"`
	}
	rr := w.auditor.Do("GET", "/api/v1/auditor/evidence?alert_id="+alert.ID, nil)
	rr.JSON(t, &red)
	require.Len(t, red.Items, len(ev.Items))
	assert.NotContains(t, string(rr.Body), "de:ad:be:ef:00:01")
	assert.NotContains(t, string(rr.Body), "CFO")
	byID := map[string]evidenceJSON{}
	for _, e := range red.Items {
		byID[e.ID] = e
		assert.True(t, e.Redacted)
	}
	for _, e := range ev.Items {
		assert.Equal(t, e.SHA256, byID[e.ID].SHA256, "same hash in both projections")
	}
	one := w.auditor.Do("GET", "/api/v1/auditor/evidence/"+ev.Items[0].ID, nil)
	require.Equal(t, http.StatusOK, one.Status)
	assert.Contains(t, string(one.Body), `"mac":"de:ad:be:xx:xx:xx"`)
	assert.Equal(t, 403, w.auditor.Do("GET", "/api/v1/evidence/"+ev.Items[0].ID, nil).Status, "the full evidence is not for auditors")
	assert.Equal(t, 403, w.auditor.Do("POST", "/api/v1/alerts/"+alert.ID+"/acknowledge", nil).Status)
	assert.Equal(t, 403, w.auditor.Do("POST", "/api/v1/assets/"+alert.AssetID+"/unauthorize", map[string]any{"reason": "x"}).Status)

	// Audit trail and outbox recorded every step.
	var events struct {
		Items []struct {
			Action string `json:"action"`
		} `json:"items"`
	}
	w.auditor.Do("GET", "/api/v1/audit/events?target_id="+alert.ID, nil).JSON(t, &events)
	var actions []string
	for _, e := range events.Items {
		actions = append(actions, e.Action)
	}
	assert.ElementsMatch(t, []string{"alert.raised", "alert.acknowledged", "alert.assigned", "alert.resolved"}, actions)
	ctx := context.Background()
	var outbox []string
	require.NoError(t, db.InTenant(ctx, w.env.DB.Owner, w.env.Tenant.ID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT type FROM outbox_events WHERE aggregate_id = $1 ORDER BY id`, alert.ID)
		if err != nil {
			return err
		}
		outbox, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}))
	assert.Equal(t, []string{"alert.raised", "alert.updated", "alert.updated", "alert.resolved"}, outbox)

	// Evidence is immutable, even for the owner.
	err := db.InTenant(ctx, w.env.DB.Owner, w.env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE evidence SET content = '{}' WHERE id = $1`, ev.Items[0].ID)
		return err
	})
	assert.ErrorContains(t, err, "immutable")
}

func TestAllowlistRemovedAndFalsePositive(t *testing.T) {
	w := newWorld(t)
	now := time.Now().UTC()
	// An allowlisted vendor is authorized and raises nothing.
	w.see(t, "00:1b:63:aa:bb:cc", "192.0.2.20", now)
	assert.Empty(t, w.alerts(t, ""))
	var assets struct {
		Items []assetJSON `json:"items"`
	}
	w.admin.Do("GET", "/api/v1/assets?authorization=authorized&source=discovery", nil).JSON(t, &assets)
	require.Len(t, assets.Items, 1)
	assert.Equal(t, "allowlist", *assets.Items[0].Authorization.Basis)
	p := w.analyst.Do("POST", "/api/v1/assets/"+assets.Items[0].ID+"/unauthorize", map[string]any{"reason": "no"}).Problem(t, 409)
	assert.Contains(t, p.Detail, "allowlist")

	// Removed: seeing the device again raises a new alert.
	w.see(t, "de:ad:00:00:00:01", "192.0.2.30", now)
	first := w.alerts(t, "?status=open")[0]
	require.Equal(t, http.StatusOK, w.analyst.Do("POST", "/api/v1/alerts/"+first.ID+"/resolve", map[string]any{"resolution": "removed"}).Status)
	w.see(t, "de:ad:00:00:00:01", "192.0.2.30", now.Add(time.Minute))
	again := w.alerts(t, "?status=open")
	require.Len(t, again, 1)
	assert.NotEqual(t, first.ID, again[0].ID)
	assert.Equal(t, first.AssetID, again[0].AssetID)

	// False positive: the device stays quiet until it is unauthorized again.
	require.Equal(t, http.StatusOK, w.analyst.Do("POST", "/api/v1/alerts/"+again[0].ID+"/resolve", map[string]any{"resolution": "false_positive"}).Status)
	w.see(t, "de:ad:00:00:00:01", "192.0.2.30", now.Add(2*time.Minute))
	assert.Empty(t, w.alerts(t, "?status=open"))

	// Manual authorization and its withdrawal.
	r := w.analyst.Do("POST", "/api/v1/assets/"+first.AssetID+"/authorize", map[string]any{"reason": "lab device"})
	require.Equal(t, http.StatusOK, r.Status)
	r = w.analyst.Do("POST", "/api/v1/assets/"+first.AssetID+"/unauthorize", map[string]any{"reason": "lab closed"})
	require.Equal(t, http.StatusOK, r.Status)
	assert.Equal(t, 409, w.analyst.Do("POST", "/api/v1/assets/"+first.AssetID+"/unauthorize", map[string]any{"reason": "again"}).Status)
	w.see(t, "de:ad:00:00:00:01", "192.0.2.30", now.Add(3*time.Minute))
	assert.Len(t, w.alerts(t, "?status=open"), 1, "unauthorized again: alerts again")
	var tl struct {
		Items []struct {
			Kind string `json:"kind"`
		} `json:"items"`
	}
	w.admin.Do("GET", "/api/v1/assets/"+first.AssetID+"/timeline", nil).JSON(t, &tl)
	var kinds []string
	for _, e := range tl.Items {
		kinds = append(kinds, e.Kind)
	}
	assert.Contains(t, kinds, "first_seen")
	assert.Contains(t, kinds, "authorized")
	assert.Contains(t, kinds, "unauthorized")
	assert.Contains(t, kinds, "alert_raised")

	// The agent host itself cannot be unauthorized by hand.
	var hosts struct {
		Items []assetJSON `json:"items"`
	}
	w.admin.Do("GET", "/api/v1/assets?source=agent", nil).JSON(t, &hosts)
	require.Len(t, hosts.Items, 1)
	assert.Contains(t, w.analyst.Do("POST", "/api/v1/assets/"+hosts.Items[0].ID+"/unauthorize", map[string]any{"reason": "x"}).Problem(t, 409).Detail, "agent host")
}

// TestDiscoveredDeviceThatEnrollsIsMerged: a device raised as unauthorized
// that then enrolls an agent becomes that agent's asset; its alert closes.
func TestDiscoveredDeviceThatEnrollsIsMerged(t *testing.T) {
	w := newWorld(t)
	w.see(t, apitest.MACFor("m-laptop"), "192.0.2.10", time.Now().UTC()) // the laptop's own interface
	open := w.alerts(t, "?status=open")
	require.Len(t, open, 1)
	_, token := w.env.EnrollmentToken(t, nil)
	_, err := w.env.Enroll(t, token, "m-laptop", "laptop")
	require.NoError(t, err)
	got := w.alerts(t, "")
	require.Len(t, got, 1)
	assert.Equal(t, "resolved", got[0].Status)
	assert.Equal(t, "authorized", *got[0].Resolution)
	assert.Equal(t, 404, w.admin.Do("GET", "/api/v1/assets/"+open[0].AssetID, nil).Status, "merged away")
	var list struct {
		Items []assetJSON `json:"items"`
	}
	w.admin.Do("GET", "/api/v1/assets?q="+apitest.MACFor("m-laptop"), nil).JSON(t, &list)
	require.Len(t, list.Items, 1, "one asset: the agent host, no discovered duplicate")
	assert.Equal(t, "agent", list.Items[0].Source)
	// The merge is on the host's timeline ("absorbed the discovered device
	// <mac>"), masked for auditors.
	path := "/api/v1/assets/" + list.Items[0].ID + "/timeline"
	assert.Contains(t, string(w.analyst.Do("GET", path, nil).Body), "absorbed the discovered device "+apitest.MACFor("m-laptop"))
	red := w.auditor.Do("GET", path, nil)
	assert.Contains(t, string(red.Body), "absorbed the discovered device "+apitest.MACFor("m-laptop")[:8]+":xx:xx:xx")
	assert.NotContains(t, string(red.Body), apitest.MACFor("m-laptop"))
}

// TestAuthorizationFollowsItsBasis: an agent or an allowlist rule vouches
// for a device only while it stands; a person's decision outlasts both.
func TestAuthorizationFollowsItsBasis(t *testing.T) {
	w := newWorld(t)
	now := time.Now().UTC()

	// A laptop's agent is revoked: seen again on the network, it is an
	// unauthorized device like any other.
	_, token := w.env.EnrollmentToken(t, nil)
	laptop, err := w.env.Enroll(t, token, "m-laptop", "laptop")
	require.NoError(t, err)
	var agent struct {
		AssetID string `json:"asset_id"`
	}
	w.admin.Do("GET", "/api/v1/agents/"+laptop.AgentID, nil).JSON(t, &agent)
	require.Equal(t, http.StatusOK, w.admin.Do("POST", "/api/v1/agents/"+laptop.AgentID+"/revoke", map[string]any{"reason": "stolen"}).Status)
	host := w.asset(t, agent.AssetID)
	assert.Equal(t, "unauthorized", host.Authorization.State)
	w.see(t, apitest.MACFor("m-laptop"), "192.0.2.10", now)
	open := w.alerts(t, "?status=open")
	require.Len(t, open, 1, "the revoked host raises an alert when seen")
	assert.Equal(t, agent.AssetID, open[0].AssetID)

	// A printer allowlisted by vendor, and also authorized by a person:
	// the person's decision is on the record, and outlasts the rule.
	w.see(t, "00:1b:63:00:00:01", "192.0.2.21", now)
	var printers struct {
		Items []assetJSON `json:"items"`
	}
	w.admin.Do("GET", "/api/v1/assets?q=00:1b:63:00:00:01", nil).JSON(t, &printers)
	require.Len(t, printers.Items, 1)
	printer := printers.Items[0]
	assert.Equal(t, "allowlist", *printer.Authorization.Basis)
	require.Equal(t, http.StatusOK, w.analyst.Do("POST", "/api/v1/assets/"+printer.ID+"/authorize", map[string]any{"reason": "finance printer"}).Status)
	var events struct {
		Items []struct {
			Action  string         `json:"action"`
			Details map[string]any `json:"details"`
		} `json:"items"`
	}
	w.admin.Do("GET", "/api/v1/audit/events?target_id="+printer.ID, nil).JSON(t, &events)
	require.NotEmpty(t, events.Items)
	assert.Equal(t, "asset.authorized", events.Items[0].Action)
	assert.Equal(t, true, events.Items[0].Details["manual"], "the person's decision is audited")

	// A second, unvouched-for printer of the same vendor.
	w.see(t, "00:1b:63:00:00:02", "192.0.2.22", now)
	r := w.admin.Do("GET", "/api/v1/discovery/policies/"+w.site, nil)
	r = w.admin.Do("PUT", "/api/v1/discovery/policies/"+w.site, map[string]any{
		"allowed_cidrs": []string{"192.0.2.0/24"}, "allowed_methods": []string{"passive_neighbor"}, "collector_agent_ids": []string{},
		"observation_retention_days": 30, "allowlist": []any{},
	}, apitest.Header("If-Match", r.Header.Get("ETag")))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	w.see(t, "00:1b:63:00:00:01", "192.0.2.21", now.Add(time.Minute))
	w.see(t, "00:1b:63:00:00:02", "192.0.2.22", now.Add(time.Minute))
	printer = w.asset(t, printer.ID)
	assert.Equal(t, "authorized", printer.Authorization.State, "the person's word stands")
	assert.Equal(t, "manual", *printer.Authorization.Basis)
	open = w.alerts(t, "?status=open")
	require.Len(t, open, 2, "the laptop, and the printer nobody vouched for")
	assert.NotEqual(t, printer.ID, open[0].AssetID)
	assert.NotEqual(t, printer.ID, open[1].AssetID)

	// Enrolling the laptop again: its new agent vouches for it.
	_, token = w.env.EnrollmentToken(t, nil)
	_, err = w.env.Enroll(t, token, "m-laptop", "laptop")
	require.NoError(t, err)
	host = w.asset(t, agent.AssetID)
	assert.Equal(t, "authorized", host.Authorization.State)
	assert.Equal(t, "agent_host", *host.Authorization.Basis)
	for _, a := range w.alerts(t, "?asset_id="+agent.AssetID) {
		assert.Equal(t, "resolved", a.Status, "enrolling settles the host's alert")
	}
	assert.Len(t, w.alerts(t, "?status=open"), 1, "the unvouched printer's")
}

func TestAlertIDsOfOtherTenantsLookAbsent(t *testing.T) {
	w := newWorld(t)
	w.see(t, "de:ad:be:ef:00:09", "192.0.2.99", time.Now().UTC())
	alert := w.alerts(t, "")[0]
	_, other := w.env.NewTenant(t, "globex")
	oc := w.env.Client(t, other)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/api/v1/alerts/" + alert.ID},
		{"GET", "/api/v1/alerts/" + alert.ID + "/timeline"},
		{"POST", "/api/v1/alerts/" + alert.ID + "/acknowledge"},
		{"POST", "/api/v1/assets/" + alert.AssetID + "/authorize"},
	} {
		var body any
		if tc.path[len(tc.path)-9:] == "authorize" {
			body = map[string]any{"reason": "mine"}
		}
		p := oc.Do(tc.method, tc.path, body).Problem(t, 404)
		assert.Equal(t, "not_found", p.Code, tc.path)
	}
	assert.Equal(t, "open", w.alerts(t, "")[0].Status, "unchanged")
	var l struct {
		Items []any `json:"items"`
	}
	oc.Do("GET", "/api/v1/alerts", nil).JSON(t, &l)
	assert.Empty(t, l.Items)
	oc.Do("GET", "/api/v1/auditor/evidence", nil).JSON(t, &l)
	assert.Empty(t, l.Items)
}

// TestAuditorsSeeDeviceIdentifiersRedacted: every alert and asset read an
// auditor can make masks the MACs and addresses of devices (in fields, text
// and details) the way observations do, and marks itself redacted; an
// analyst reads the same records in full. Ids, states and times are the
// same in both.
func TestAuditorsSeeDeviceIdentifiersRedacted(t *testing.T) {
	w := newWorld(t)
	const mac, ip, ip2 = "de:ad:be:ef:00:01", "192.0.2.66", "192.0.2.67"
	start := time.Now().UTC()
	w.see(t, mac, ip, start)
	w.see(t, mac, ip2, start.Add(2*time.Hour)) // observed_again, seen_again, address_changed
	alert := w.alerts(t, "")[0]
	require.Equal(t, http.StatusOK, w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/acknowledge",
		map[string]any{"note": "it moved from " + ip + " to " + ip2}).Status)
	require.Equal(t, http.StatusOK, w.analyst.Do("POST", "/api/v1/alerts/"+alert.ID+"/resolve",
		map[string]any{"resolution": "authorized", "note": "lab box " + mac}).Status)
	collectorMAC := apitest.MACFor("m-collector") // the agent host's own interface, 192.0.2.10/24

	paths := []string{
		"/api/v1/alerts", "/api/v1/alerts/" + alert.ID, "/api/v1/alerts/" + alert.ID + "/timeline",
		"/api/v1/assets", "/api/v1/assets/" + alert.AssetID, "/api/v1/assets/" + alert.AssetID + "/timeline",
	}
	for _, path := range paths {
		full := w.analyst.Do("GET", path, nil)
		require.Equal(t, http.StatusOK, full.Status, "%s: %s", path, full.Body)
		assert.Contains(t, string(full.Body), mac, "%s: the analyst sees the MAC", path)
		assert.Contains(t, string(full.Body), ip, "%s: the analyst sees the address", path)
		assert.NotContains(t, string(full.Body), `"redacted":true`, path)

		red := w.auditor.Do("GET", path, nil)
		require.Equal(t, http.StatusOK, red.Status, "%s: %s", path, red.Body)
		for _, raw := range []string{mac, "ef:00:01", ip, ip2, collectorMAC, "192.0.2.10"} {
			assert.NotContains(t, string(red.Body), raw, "%s: the auditor's answer holds %s", path, raw)
		}
		assert.Contains(t, string(red.Body), "de:ad:be:xx:xx:xx", path)
		assert.Contains(t, string(red.Body), `"redacted":true`, path)
		assert.NotContains(t, string(red.Body), `"redacted":false`, path)
	}

	// The alert: the title masked, everything else as the analyst reads it.
	var full, red map[string]any
	w.analyst.Do("GET", "/api/v1/alerts/"+alert.ID, nil).JSON(t, &full)
	w.auditor.Do("GET", "/api/v1/alerts/"+alert.ID, nil).JSON(t, &red)
	assert.Equal(t, "Unauthorized device "+mac+" at "+ip, full["title"])
	assert.Equal(t, "Unauthorized device de:ad:be:xx:xx:xx at 192.0.2.x", red["title"])
	assert.Equal(t, "lab box de:ad:be:xx:xx:xx", red["resolution_note"])
	for _, k := range []string{"title", "resolution_note", "redacted"} {
		delete(full, k)
		delete(red, k)
	}
	assert.Equal(t, full, red, "ids, states and times are unchanged")

	// The discovered device: named after its masked MAC.
	w.analyst.Do("GET", "/api/v1/assets/"+alert.AssetID, nil).JSON(t, &full)
	w.auditor.Do("GET", "/api/v1/assets/"+alert.AssetID, nil).JSON(t, &red)
	assert.Equal(t, "device "+mac, full["name"])
	assert.Equal(t, "device de:ad:be:xx:xx:xx", red["name"])
	assert.Equal(t, []any{"192.0.2.x", "192.0.2.x"}, red["addresses"])
	assert.Equal(t, []any{"de:ad:be:xx:xx:xx"}, red["macs"])
	assert.Equal(t, "lab box de:ad:be:xx:xx:xx", red["authorization"].(map[string]any)["rule"])
	for _, k := range []string{"name", "addresses", "macs", "redacted"} {
		delete(full, k)
		delete(red, k)
	}
	delete(full["authorization"].(map[string]any), "rule")
	delete(red["authorization"].(map[string]any), "rule")
	assert.Equal(t, full, red, "ids, states and times are unchanged")

	// The agent host keeps its host name, as on /agents and /collectors;
	// its interfaces are masked.
	var hosts struct {
		Items []map[string]any `json:"items"`
	}
	w.auditor.Do("GET", "/api/v1/assets?source=agent", nil).JSON(t, &hosts)
	require.Len(t, hosts.Items, 1)
	assert.Equal(t, "collector", hosts.Items[0]["name"])
	assert.Equal(t, "m-collector", hosts.Items[0]["machine_id"])
	assert.Equal(t, []any{"192.0.2.x", "fe80:0:0:0::x"}, hosts.Items[0]["addresses"])
	assert.Equal(t, []any{collectorMAC[:8] + ":xx:xx:xx"}, hosts.Items[0]["macs"])

	// Timelines: the same entries, masked; a MAC in details comes with the
	// keyed hash that observations call subject_hash.
	type entry struct {
		ID       string         `json:"id"`
		Kind     string         `json:"kind"`
		Summary  string         `json:"summary"`
		Details  map[string]any `json:"details"`
		Redacted bool           `json:"redacted"`
	}
	var tl, redTL struct {
		Items []entry `json:"items"`
	}
	var obs struct {
		Items []struct {
			SubjectHash string `json:"subject_hash"`
		} `json:"items"`
	}
	w.auditor.Do("GET", "/api/v1/discovery/observations?asset_id="+alert.AssetID, nil).JSON(t, &obs)
	require.NotEmpty(t, obs.Items)
	kinds := map[string]bool{}
	for _, path := range []string{"/api/v1/alerts/" + alert.ID + "/timeline", "/api/v1/assets/" + alert.AssetID + "/timeline"} {
		w.analyst.Do("GET", path, nil).JSON(t, &tl)
		w.auditor.Do("GET", path, nil).JSON(t, &redTL)
		require.Len(t, redTL.Items, len(tl.Items), path)
		for i, e := range redTL.Items {
			assert.Equal(t, tl.Items[i].ID, e.ID)
			assert.Equal(t, tl.Items[i].Kind, e.Kind)
			assert.True(t, e.Redacted)
			assert.False(t, tl.Items[i].Redacted)
			if tl.Items[i].Details["mac"] != nil {
				assert.Equal(t, "de:ad:be:xx:xx:xx", e.Details["mac"], "%s %s", path, e.Kind)
				assert.Equal(t, obs.Items[0].SubjectHash, e.Details["mac_hash"], "%s %s", path, e.Kind)
			}
			if tl.Items[i].Details["ip"] != nil {
				assert.Equal(t, "192.0.2.x", e.Details["ip"], "%s %s", path, e.Kind)
			}
			kinds[e.Kind] = true
			switch e.Kind {
			case "observed_again":
				assert.Equal(t, "observed again at 192.0.2.x", e.Summary)
			case "acknowledged":
				assert.Equal(t, "it moved from 192.0.2.x to 192.0.2.x", e.Details["note"])
			case "address_changed":
				assert.Equal(t, "new address 192.0.2.x", e.Summary)
				assert.Equal(t, []any{"192.0.2.x"}, e.Details["previous"])
			case "first_seen":
				assert.Equal(t, "first seen at 192.0.2.x", e.Summary)
				assert.Equal(t, tl.Items[i].Details["site_id"], e.Details["site_id"])
			}
		}
	}
	for _, k := range []string{"raised", "observed_again", "acknowledged", "resolved", "first_seen", "seen_again", "address_changed", "authorized"} {
		assert.True(t, kinds[k], "the timelines have a %s entry", k)
	}
}

// TestAssetSearchIsForRolesThatSeeIdentifiers: q searches MACs and
// addresses, so what it finds would tell a redacted reader whether a MAC
// exists. Roles that see identifiers redacted get 403; other filters work.
func TestAssetSearchIsForRolesThatSeeIdentifiers(t *testing.T) {
	w := newWorld(t)
	w.see(t, "de:ad:be:ef:00:01", "192.0.2.66", time.Now().UTC())
	var list struct {
		Items []assetJSON `json:"items"`
	}
	w.analyst.Do("GET", "/api/v1/assets?q=de:ad:be:ef:00:01", nil).JSON(t, &list)
	require.Len(t, list.Items, 1, "the analyst finds the device by its MAC")
	for _, q := range []string{"de:ad:be:ef:00:01", "de:ad:be:ef:00:02", "192.0.2.66", "de:ad:be", "collector"} {
		r := w.auditor.Do("GET", "/api/v1/assets?q="+q, nil)
		p := r.Problem(t, 403)
		assert.Equal(t, "forbidden", p.Code, q)
		assert.Contains(t, p.Detail, "q", q)
		assert.NotContains(t, string(r.Body), "de:ad:be:ef", "the refusal is the same whether or not it exists")
	}
	w.auditor.Do("GET", "/api/v1/assets?source=discovery&authorization=unauthorized", nil).JSON(t, &list)
	require.Len(t, list.Items, 1, "the other filters are the auditor's")
	assert.Equal(t, list.Items[0].ID, w.alerts(t, "")[0].AssetID)
}
