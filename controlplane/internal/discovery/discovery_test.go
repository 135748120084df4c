package discovery_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/discovery"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

type policy struct {
	SiteID        string   `json:"site_id"`
	Version       int      `json:"version"`
	AllowedCIDRs  []string `json:"allowed_cidrs"`
	AllowedMethod []string `json:"allowed_methods"`
	Collectors    []string `json:"collector_agent_ids"`
	Allowlist     []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"allowlist"`
}

func createSite(t *testing.T, c *apitest.Client, name string) string {
	t.Helper()
	r := c.Do("POST", "/api/v1/sites", map[string]any{"name": name, "description": "test site"})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var s struct {
		ID string `json:"id"`
	}
	r.JSON(t, &s)
	return s.ID
}

func openPolicy(t *testing.T, c *apitest.Client, site string, body map[string]any) policy {
	t.Helper()
	r := c.Do("GET", "/api/v1/discovery/policies/"+site, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	r = c.Do("PUT", "/api/v1/discovery/policies/"+site, body, apitest.Header("If-Match", r.Header.Get("ETag")))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var p policy
	r.JSON(t, &p)
	return p
}

func policyBody(cidrs []string, methods []string) map[string]any {
	return map[string]any{"allowed_cidrs": cidrs, "allowed_methods": methods, "collector_agent_ids": []string{},
		"observation_retention_days": 30, "allowlist": []any{}}
}

func TestSitesAndPolicies(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	site := createSite(t, admin, "Berlin office")
	assert.Equal(t, "conflict", admin.Do("POST", "/api/v1/sites", map[string]any{"name": "berlin OFFICE"}).Problem(t, 409).Code)
	assert.Equal(t, "#/name", admin.Do("POST", "/api/v1/sites", map[string]any{"name": "   "}).Problem(t, 422).Errors[0].Pointer)
	assert.Equal(t, "#/name", admin.Do("PATCH", "/api/v1/sites/"+site, map[string]any{"name": " "}).Problem(t, 422).Errors[0].Pointer)
	// An empty patch says what to send, not "there must be at least 1 properties".
	empty := admin.Do("PATCH", "/api/v1/sites/"+site, map[string]any{}).Problem(t, 422)
	require.Len(t, empty.Errors, 1)
	assert.Equal(t, "#", empty.Errors[0].Pointer)
	assert.Equal(t, "send at least one field to change: description, name", empty.Errors[0].Detail)
	r := admin.Do("PATCH", "/api/v1/sites/"+site, map[string]any{"name": "Berlin HQ"})
	require.Equal(t, http.StatusOK, r.Status)
	assert.Contains(t, string(r.Body), `"name":"Berlin HQ"`)
	assert.Contains(t, string(r.Body), `"description":"test site"`, "absent leaves the description")
	r = admin.Do("PATCH", "/api/v1/sites/"+site, map[string]any{"description": nil})
	require.Equal(t, http.StatusOK, r.Status)
	assert.Contains(t, string(r.Body), `"description":null`, "null removes it")
	assert.Contains(t, string(r.Body), `"name":"Berlin HQ"`)
	assert.Equal(t, "not_found", admin.Do("GET", "/api/v1/sites/"+uuid.NewString(), nil).Problem(t, 404).Code)
	var sites struct {
		Items []any `json:"items"`
	}
	admin.Do("GET", "/api/v1/sites", nil).JSON(t, &sites)
	assert.Len(t, sites.Items, 1)

	// A new site's policy denies everything.
	r = admin.Do("GET", "/api/v1/discovery/policies/"+site, nil)
	require.Equal(t, http.StatusOK, r.Status)
	assert.Equal(t, `"v1"`, r.Header.Get("ETag"))
	var p policy
	r.JSON(t, &p)
	assert.Empty(t, p.AllowedCIDRs)
	assert.Empty(t, p.AllowedMethod)

	body := policyBody([]string{"192.0.2.0/24", "2001:db8::/64"}, []string{"passive_neighbor", "nmap"})
	body["allowlist"] = []any{map[string]any{"type": "oui", "value": "00:1B:63"}, map[string]any{"type": "mac", "value": "02-00-5E-10-00-01"}}
	// Without If-Match: 428; stale: 412; both change nothing.
	assert.Equal(t, "precondition_required", admin.Do("PUT", "/api/v1/discovery/policies/"+site, body).Problem(t, 428).Code)
	assert.Equal(t, "precondition_failed", admin.Do("PUT", "/api/v1/discovery/policies/"+site, body, apitest.Header("If-Match", `"v7"`)).Problem(t, 412).Code)
	r = admin.Do("PUT", "/api/v1/discovery/policies/"+site, body, apitest.Header("If-Match", `"v1"`))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	assert.Equal(t, `"v2"`, r.Header.Get("ETag"))
	r.JSON(t, &p)
	assert.Equal(t, 2, p.Version)
	assert.Equal(t, "00:1b:63", p.Allowlist[0].Value, "normalized")
	assert.Equal(t, "02:00:5e:10:00:01", p.Allowlist[1].Value)
	// The old ETag is stale now.
	assert.Equal(t, 412, admin.Do("PUT", "/api/v1/discovery/policies/"+site, body, apitest.Header("If-Match", `"v1"`)).Status)

	bad := policyBody([]string{"192.0.2.0/33", "fine/x"}, []string{"passive_neighbor"})
	bad["allowlist"] = []any{map[string]any{"type": "mac", "value": "not-a-mac"}}
	pr := admin.Do("PUT", "/api/v1/discovery/policies/"+site, bad, apitest.Header("If-Match", `"v2"`)).Problem(t, 422)
	var pointers []string
	for _, e := range pr.Errors {
		pointers = append(pointers, e.Pointer)
	}
	assert.Equal(t, []string{"#/allowed_cidrs/0", "#/allowed_cidrs/1", "#/allowlist/0/value"}, pointers)
	unknownCollector := policyBody([]string{}, []string{})
	unknownCollector["collector_agent_ids"] = []string{uuid.NewString()}
	assert.Equal(t, "#/collector_agent_ids/0", admin.Do("PUT", "/api/v1/discovery/policies/"+site, unknownCollector, apitest.Header("If-Match", `"v2"`)).Problem(t, 422).Errors[0].Pointer)
	assert.Equal(t, "not_found", admin.Do("PUT", "/api/v1/discovery/policies/"+uuid.NewString(), body, apitest.Header("If-Match", `"v1"`)).Problem(t, 404).Code)

	var list struct {
		Items []policy `json:"items"`
	}
	admin.Do("GET", "/api/v1/discovery/policies", nil).JSON(t, &list)
	require.Len(t, list.Items, 1)
	assert.Equal(t, 2, list.Items[0].Version, "refused updates changed nothing")

	// Other tenants see none of it.
	_, other := env.NewTenant(t, "globex")
	oc := env.Client(t, other)
	assert.Equal(t, 404, oc.Do("GET", "/api/v1/discovery/policies/"+site, nil).Status)
	assert.Equal(t, 404, oc.Do("PUT", "/api/v1/discovery/policies/"+site, body, apitest.Header("If-Match", `"v2"`)).Status)
	assert.Equal(t, 404, oc.Do("PATCH", "/api/v1/sites/"+site, map[string]any{"name": "mine"}).Status)
}

func TestAuthorizationDecisions(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	site := createSite(t, admin, "lab")
	openPolicy(t, admin, site, policyBody([]string{"192.0.2.0/24"}, []string{"passive_neighbor", "snmp"}))
	scanner := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleServiceAccount, "scanner").Secret)

	cases := []struct {
		method, target, decision, rule string
	}{
		{"passive_neighbor", "192.0.2.10", "granted", "allowed_cidr:192.0.2.0/24"},
		{"passive_neighbor", "192.0.2.0/25", "granted", "allowed_cidr:192.0.2.0/24"},
		{"passive_neighbor", "192.0.2.0/16", "denied", "target_outside_allowed_cidrs"},
		{"passive_neighbor", "198.51.100.7", "denied", "target_outside_allowed_cidrs"},
		{"snmp", "192.0.2.10", "denied", "active_methods_disabled"},
		{"nmap", "192.0.2.10", "denied", "active_methods_disabled"},
	}
	for _, tc := range cases {
		r := scanner.Do("POST", "/api/v1/discovery/authorizations", map[string]any{"site_id": site, "method": tc.method, "target": tc.target})
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		var d struct {
			Decision string `json:"decision"`
			Rule     string `json:"rule"`
			Reason   string `json:"reason"`
		}
		r.JSON(t, &d)
		assert.Equal(t, tc.decision, d.Decision, "%s %s", tc.method, tc.target)
		assert.Equal(t, tc.rule, d.Rule)
		assert.NotEmpty(t, d.Reason)
	}
	assert.Equal(t, "#/target", scanner.Do("POST", "/api/v1/discovery/authorizations", map[string]any{"site_id": site, "method": "passive_neighbor", "target": "example.com"}).Problem(t, 422).Errors[0].Pointer)
	assert.Equal(t, 404, scanner.Do("POST", "/api/v1/discovery/authorizations", map[string]any{"site_id": uuid.NewString(), "method": "passive_neighbor", "target": "192.0.2.1"}).Status)
	// Analysts cannot ask; everyone reading can see the record.
	analyst := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst").Secret)
	assert.Equal(t, 403, analyst.Do("POST", "/api/v1/discovery/authorizations", map[string]any{"site_id": site, "method": "passive_neighbor", "target": "192.0.2.1"}).Status)
	var list struct {
		Items []any `json:"items"`
	}
	analyst.Do("GET", "/api/v1/discovery/authorizations?decision=denied", nil).JSON(t, &list)
	assert.Len(t, list.Items, 4)
	var events struct {
		Items []struct {
			Outcome string `json:"outcome"`
		} `json:"items"`
	}
	admin.Do("GET", "/api/v1/audit/events?action=discovery.authorization_decided&outcome=denied", nil).JSON(t, &events)
	assert.Len(t, events.Items, 4, "each decision is audited")
}

// TestObservationsUnderPolicy sends neighbour observations through the real
// agent protocol and checks the policy's effect: nothing without a policy,
// only covered addresses with one, redaction for readers who may not see
// identifiers, collectors and status.
func TestObservationsUnderPolicy(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	site := createSite(t, admin, "hq")
	_, token := env.EnrollmentToken(t, map[string]any{"name": "hq", "site_id": site})
	a, err := env.Enroll(t, token, "m-collector", "collector")
	require.NoError(t, err)
	rpc := a.RPC(t)
	send := func(obs ...*agentv1.NeighborObservation) *agentv1.HeartbeatResponse {
		t.Helper()
		rep := a.Report()
		rep.Observations = obs
		rep.ObservationsDropped = 1
		resp, err := rpc.Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{rep}}))
		require.NoError(t, err)
		return resp.Msg
	}
	now := timestamppb.New(time.Now())
	rogue := &agentv1.NeighborObservation{Mac: "DE:AD:BE:EF:00:01", Ip: "192.0.2.66", Interface: "eth0", State: "reachable", LastSeenAt: now}
	outside := &agentv1.NeighborObservation{Mac: "de:ad:be:ef:00:02", Ip: "198.51.100.9", Interface: "eth0", State: "stale", LastSeenAt: now}

	// Deny by default: the agent is told not to observe, and what it sends anyway is dropped.
	resp := send(rogue, outside)
	assert.False(t, resp.GetDiscovery().GetPassiveNeighbor())
	var obs struct {
		Items []struct {
			Mac         string `json:"mac"`
			IP          string `json:"ip"`
			Redacted    bool   `json:"redacted"`
			SubjectHash string `json:"subject_hash"`
			AssetID     string `json:"asset_id"`
		} `json:"items"`
	}
	admin.Do("GET", "/api/v1/discovery/observations", nil).JSON(t, &obs)
	assert.Empty(t, obs.Items, "no policy, no observations")

	openPolicy(t, admin, site, policyBody([]string{"192.0.2.0/24"}, []string{"passive_neighbor"}))
	resp = send(rogue, outside)
	assert.True(t, resp.GetDiscovery().GetPassiveNeighbor())
	assert.Equal(t, []string{"192.0.2.0/24"}, resp.GetDiscovery().GetAllowedCidrs())
	admin.Do("GET", "/api/v1/discovery/observations", nil).JSON(t, &obs)
	require.Len(t, obs.Items, 1, "only the covered address")
	assert.Equal(t, "de:ad:be:ef:00:01", obs.Items[0].Mac)
	assert.Equal(t, "192.0.2.66", obs.Items[0].IP)
	assert.False(t, obs.Items[0].Redacted)

	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	var red struct {
		Items []struct {
			Mac         string `json:"mac"`
			IP          string `json:"ip"`
			Redacted    bool   `json:"redacted"`
			SubjectHash string `json:"subject_hash"`
		} `json:"items"`
	}
	r := auditor.Do("GET", "/api/v1/discovery/observations", nil)
	r.JSON(t, &red)
	require.Len(t, red.Items, 1)
	assert.True(t, red.Items[0].Redacted)
	assert.Equal(t, "de:ad:be:xx:xx:xx", red.Items[0].Mac)
	assert.Equal(t, "192.0.2.x", red.Items[0].IP)
	assert.Equal(t, obs.Items[0].SubjectHash, red.Items[0].SubjectHash, "the keyed hash correlates")
	assert.NotContains(t, string(r.Body), "de:ad:be:ef:00:01")

	// The device's asset and its timeline follow the same rules, and the
	// MAC in the timeline's details carries the same keyed hash.
	for _, path := range []string{"/api/v1/assets/" + obs.Items[0].AssetID, "/api/v1/assets/" + obs.Items[0].AssetID + "/timeline"} {
		r = auditor.Do("GET", path, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		assert.NotContains(t, string(r.Body), "de:ad:be:ef:00:01", path)
		assert.NotContains(t, string(r.Body), "192.0.2.66", path)
		assert.Contains(t, string(r.Body), "192.0.2.x", path)
		assert.Contains(t, string(admin.Do("GET", path, nil).Body), "192.0.2.66", path)
	}
	var tl struct {
		Items []struct {
			Kind    string         `json:"kind"`
			Summary string         `json:"summary"`
			Details map[string]any `json:"details"`
		} `json:"items"`
	}
	auditor.Do("GET", "/api/v1/assets/"+obs.Items[0].AssetID+"/timeline", nil).JSON(t, &tl)
	require.NotEmpty(t, tl.Items)
	first := tl.Items[len(tl.Items)-1]
	assert.Equal(t, "first_seen", first.Kind)
	assert.Equal(t, "first seen at 192.0.2.x", first.Summary)
	assert.Equal(t, "de:ad:be:xx:xx:xx", first.Details["mac"])
	assert.Equal(t, obs.Items[0].SubjectHash, first.Details["mac_hash"])

	var collector struct {
		Observing                    bool  `json:"observing"`
		ObservationsLastHour         int64 `json:"observations_last_hour"`
		DroppedOutsidePolicyByAgent  int64 `json:"dropped_outside_policy_by_agent"`
		DroppedOutsidePolicyByServer int64 `json:"dropped_outside_policy_by_server"`
	}
	admin.Do("GET", "/api/v1/collectors/"+a.AgentID, nil).JSON(t, &collector)
	assert.True(t, collector.Observing)
	assert.EqualValues(t, 1, collector.ObservationsLastHour)
	assert.EqualValues(t, 2, collector.DroppedOutsidePolicyByAgent)
	assert.EqualValues(t, 3, collector.DroppedOutsidePolicyByServer, "two before the policy, one outside its CIDR")
	var collectors struct {
		Items []any `json:"items"`
	}
	admin.Do("GET", "/api/v1/collectors?site_id="+site, nil).JSON(t, &collectors)
	assert.Len(t, collectors.Items, 1)

	var status struct {
		Sites []struct {
			SiteID               string `json:"site_id"`
			PolicyVersion        int    `json:"policy_version"`
			Passive              bool   `json:"passive_neighbor_allowed"`
			ActiveCollectors     int    `json:"active_collectors"`
			ObservationsTotal    int64  `json:"observations_total"`
			DroppedOutsidePolicy int64  `json:"dropped_outside_policy"`
			DiscoveredAssets     int64  `json:"discovered_assets"`
		} `json:"sites"`
	}
	auditor.Do("GET", "/api/v1/discovery/status", nil).JSON(t, &status)
	require.Len(t, status.Sites, 1)
	s := status.Sites[0]
	assert.Equal(t, 2, s.PolicyVersion)
	assert.True(t, s.Passive)
	assert.Equal(t, 1, s.ActiveCollectors)
	assert.EqualValues(t, 1, s.ObservationsTotal)
	assert.EqualValues(t, 3, s.DroppedOutsidePolicy)
	assert.EqualValues(t, 1, s.DiscoveredAssets)

	// A collector the policy does not list observes nothing.
	body := policyBody([]string{"192.0.2.0/24"}, []string{"passive_neighbor"})
	body["collector_agent_ids"] = []string{} // fine: all
	b, err := env.Enroll(t, mustToken(t, env, site), "m-other", "other")
	require.NoError(t, err)
	body["collector_agent_ids"] = []string{b.AgentID}
	openPolicy(t, admin, site, body)
	resp = send(&agentv1.NeighborObservation{Mac: "de:ad:be:ef:00:03", Ip: "192.0.2.67", LastSeenAt: now})
	assert.False(t, resp.GetDiscovery().GetPassiveNeighbor(), "not a listed collector")
	admin.Do("GET", "/api/v1/discovery/observations", nil).JSON(t, &obs)
	assert.Len(t, obs.Items, 1)
	for _, o := range obs.Items {
		assert.False(t, strings.HasSuffix(o.Mac, ":03"))
	}
}

func mustToken(t *testing.T, env *apitest.Env, site string) string {
	_, token := env.EnrollmentToken(t, map[string]any{"name": "x", "site_id": site})
	return token
}

// TestRetentionExpiresOldObservations: each site's retention applies in
// every tenant, through the runtime role, and keeps what is recent.
func TestRetentionExpiresOldObservations(t *testing.T) {
	env := apitest.Start(t)
	ctx := context.Background()
	type tenant struct {
		id    uuid.UUID
		admin *apitest.Client
		days  int
	}
	other, otherToken := env.NewTenant(t, "other")
	tenants := []tenant{{env.Tenant.ID, env.Client(t, env.AdminToken), 30}, {other.ID, env.Client(t, otherToken), 7}}
	for i, tn := range tenants {
		site := createSite(t, tn.admin, "hq")
		body := policyBody([]string{"192.0.2.0/24"}, []string{"passive_neighbor"})
		body["observation_retention_days"] = tn.days
		openPolicy(t, tn.admin, site, body)
		r := tn.admin.Do("POST", "/api/v1/enrollment-tokens", map[string]any{"name": "hq", "site_id": site})
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		var tok struct {
			Token string `json:"token"`
		}
		r.JSON(t, &tok)
		a, err := env.Enroll(t, tok.Token, fmt.Sprintf("m-%d", i), "collector")
		require.NoError(t, err)
		rep := a.Report()
		now := timestamppb.Now()
		rep.Observations = []*agentv1.NeighborObservation{
			{Mac: "de:ad:be:ef:00:01", Ip: "192.0.2.1", LastSeenAt: now},
			{Mac: "de:ad:be:ef:00:02", Ip: "192.0.2.2", LastSeenAt: now},
		}
		_, err = a.RPC(t).Heartbeat(ctx, connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{rep}}))
		require.NoError(t, err)
		// One observation is just inside the retention, the other just past it.
		require.NoError(t, db.InTenant(ctx, env.DB.Owner, tn.id, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE observations SET last_seen_at = now() - make_interval(days => $1) + CASE WHEN ip = '192.0.2.1' THEN interval '1 hour' ELSE interval '-1 hour' END`, tn.days)
			return err
		}))
	}

	n, err := discovery.Retention{Pool: env.DB.App}.Sweep(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "one past retention in each tenant")
	for _, tn := range tenants {
		var obs struct {
			Items []struct {
				IP string `json:"ip"`
			} `json:"items"`
		}
		tn.admin.Do("GET", "/api/v1/discovery/observations", nil).JSON(t, &obs)
		require.Len(t, obs.Items, 1)
		assert.Equal(t, "192.0.2.1", obs.Items[0].IP)
	}
	n, err = discovery.Retention{Pool: env.DB.App}.Sweep(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "sweeping again deletes nothing")
}

// Collectors are the site's own agents; one listed twice counts once.
func TestPolicyCollectorsAreTheSitesAgents(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	site, other := createSite(t, admin, "here"), createSite(t, admin, "elsewhere")
	here, err := env.Enroll(t, mustToken(t, env, site), "m-here", "here")
	require.NoError(t, err)
	there, err := env.Enroll(t, mustToken(t, env, other), "m-there", "there")
	require.NoError(t, err)
	body := policyBody([]string{"192.0.2.0/24"}, []string{"passive_neighbor"})
	body["collector_agent_ids"] = []string{here.AgentID, there.AgentID}
	pr := admin.Do("PUT", "/api/v1/discovery/policies/"+site, body, apitest.Header("If-Match", `"v1"`)).Problem(t, 422)
	require.Len(t, pr.Errors, 1)
	assert.Equal(t, "#/collector_agent_ids/1", pr.Errors[0].Pointer)
	assert.Contains(t, pr.Errors[0].Detail, there.AgentID)
	body["collector_agent_ids"] = []string{here.AgentID, here.AgentID}
	r := admin.Do("PUT", "/api/v1/discovery/policies/"+site, body, apitest.Header("If-Match", `"v1"`))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var p policy
	r.JSON(t, &p)
	assert.Equal(t, []string{here.AgentID}, p.Collectors)
}
