package compliance_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/compliance"
	"github.com/edgeward/edgeward/controlplane/internal/compliance/catalog"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/evidence"
)

type control struct {
	ID        string   `json:"id"`
	Label     string   `json:"label"`
	Family    string   `json:"family"`
	ParentID  *string  `json:"parent_id"`
	Withdrawn bool     `json:"withdrawn"`
	Baselines []string `json:"baselines"`
	URL       *string  `json:"url"`
	Status    struct {
		Status        string  `json:"status"`
		Evaluator     *string `json:"evaluator"`
		Reason        *string `json:"reason"`
		Justification *string `json:"justification"`
	} `json:"status"`
}

type detail struct {
	Control             control `json:"control"`
	EvaluatedByEdgeward bool    `json:"evaluated_by_edgeward"`
	Evidence            []struct {
		EvidenceID string `json:"evidence_id"`
		Role       string `json:"role"`
		Kind       string `json:"kind"`
	} `json:"evidence"`
	Mappings []struct {
		ControlID string `json:"control_id"`
		Source    string `json:"source"`
	} `json:"mappings"`
}

func getDetail(t *testing.T, c *apitest.Client, id string) detail {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/compliance/controls/"+id, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var d detail
	r.JSON(t, &d)
	return d
}

func evaluate(t *testing.T, env *apitest.Env, tenant uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.App, tenant, func(tx pgx.Tx) error {
		params, err := compliance.LoadParams(ctx, tx)
		if err != nil {
			return err
		}
		_, err = compliance.Evaluate(ctx, tx, tenant, params)
		return err
	}))
}

func TestCatalogReads(t *testing.T) {
	env := apitest.Start(t)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)

	r := auditor.Do(http.MethodGet, "/api/v1/compliance/frameworks", nil)
	require.Equal(t, http.StatusOK, r.Status)
	var fw struct {
		CatalogVersion string `json:"catalog_version"`
		Items          []struct {
			ID           string `json:"id"`
			ControlCount int    `json:"control_count"`
		} `json:"items"`
	}
	r.JSON(t, &fw)
	assert.NotEmpty(t, fw.CatalogVersion)
	counts := map[string]int{}
	for _, f := range fw.Items {
		counts[f.ID] = f.ControlCount
	}
	assert.Equal(t, 322+867, counts["nist-800-53-r5"])
	assert.Equal(t, 153, counts["cis-v8"])
	assert.Equal(t, 93, counts["iso27001-2022"])
	assert.Positive(t, counts["soc2-2017"])

	// Filters and the cursor walk the catalog in order.
	r = auditor.Do(http.MethodGet, "/api/v1/compliance/controls?framework=nist-800-53-r5&family=cm&limit=5", nil)
	require.Equal(t, http.StatusOK, r.Status)
	var page struct {
		Items      []control `json:"items"`
		NextCursor *string   `json:"next_cursor"`
	}
	r.JSON(t, &page)
	require.Len(t, page.Items, 5)
	assert.Equal(t, "CM-1", page.Items[0].Label)
	require.NotNil(t, page.NextCursor)
	seen := len(page.Items)
	for page.NextCursor != nil {
		r = auditor.Do(http.MethodGet, "/api/v1/compliance/controls?framework=nist-800-53-r5&family=cm&limit=200&cursor="+*page.NextCursor, nil)
		page.Items, page.NextCursor = nil, nil
		r.JSON(t, &page)
		seen += len(page.Items)
	}
	assert.Greater(t, seen, 60, "CM has 14 base controls and dozens of enhancements")

	r = auditor.Do(http.MethodGet, "/api/v1/compliance/controls?q=inventory&framework=nist-800-53-r5", nil)
	page.Items = nil
	r.JSON(t, &page)
	var labels []string
	for _, c := range page.Items {
		labels = append(labels, c.Label)
	}
	assert.Contains(t, labels, "CM-8")

	d := getDetail(t, auditor, "nist-800-53-r5:cm-8.3")
	assert.Equal(t, "CM-8(3)", d.Control.Label)
	require.NotNil(t, d.Control.ParentID)
	assert.Equal(t, "nist-800-53-r5:cm-8", *d.Control.ParentID)
	assert.True(t, d.EvaluatedByEdgeward)
	assert.Equal(t, "unknown", d.Control.Status.Status)
	assert.NotNil(t, d.Control.URL)
	assert.Contains(t, d.Control.Baselines, "moderate")

	auditor.Do(http.MethodGet, "/api/v1/compliance/controls/nist-800-53-r5:zz-99", nil).Problem(t, http.StatusNotFound)
	p := auditor.Do(http.MethodGet, "/api/v1/compliance/controls/NOT%20AN%20ID", nil).Problem(t, http.StatusNotFound)
	assert.Contains(t, p.Detail, "framework:control")
}

// TestControlsByTheirNaturalNames: a control is found as people write it
// (IA-3, CM-8(3), NIST-800-53-R5:IA-3), not only by its id; one that is
// not there says how to name it, never with a regular expression.
func TestControlsByTheirNaturalNames(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	for ref, id := range map[string]string{
		"IA-3":                       "nist-800-53-r5:ia-3",
		"ia-3":                       "nist-800-53-r5:ia-3",
		"nist-800-53-r5:IA-3":        "nist-800-53-r5:ia-3",
		"NIST-800-53-R5:ia-3":        "nist-800-53-r5:ia-3",
		"CM-8(3)":                    "nist-800-53-r5:cm-8.3",
		"nist-800-53-r5:CM-8(3)":     "nist-800-53-r5:cm-8.3",
		"nist-800-53-r5:cm-8.3":      "nist-800-53-r5:cm-8.3",
		"1.2":                        "cis-v8:1.2",
		"CIS-V8:1.2":                 "cis-v8:1.2",
		"A.5.1":                      "iso27001-2022:a.5.1",
		"nist-800-53-r5:CM-8%283%29": "nist-800-53-r5:cm-8.3",
	} {
		assert.Equal(t, id, getDetail(t, admin, ref).Control.ID, ref)
	}
	for _, ref := range []string{"IA-99", "nist-800-53-r5:ia-99", "nist:ia-3", "x"} {
		p := admin.Do(http.MethodGet, "/api/v1/compliance/controls/"+ref, nil).Problem(t, http.StatusNotFound)
		assert.Equal(t, "not_found", p.Code, ref)
		assert.Contains(t, p.Detail, "name a control as framework:control, such as nist-800-53-r5:ia-3", ref)
		assert.NotContains(t, p.Detail, "regular expression", ref)
	}

	// The marks take the same names.
	r := admin.Do(http.MethodPost, "/api/v1/compliance/controls/IA-3/not-applicable", map[string]any{"justification": "no endpoints here"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var d detail
	r.JSON(t, &d)
	assert.Equal(t, "nist-800-53-r5:ia-3", d.Control.ID)
	assert.Equal(t, "not_applicable", getDetail(t, admin, "nist-800-53-r5:ia-3").Control.Status.Status)
	r = admin.Do(http.MethodDelete, "/api/v1/compliance/controls/Nist-800-53-R5:IA-3/not-applicable", nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	r = admin.Do(http.MethodGet, "/api/v1/audit/events?target_type=control", nil)
	assert.Contains(t, string(r.Body), `"id":"nist-800-53-r5:ia-3"`, "audited under the control's id")
}

// newAlert inserts an open unauthorized-device alert first seen `age` ago,
// with observation evidence whose content carries marker.
func newAlert(t *testing.T, env *apitest.Env, tenantID uuid.UUID, age time.Duration, marker string) (alertID, evidenceID uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	alertID, assetID := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, tenantID, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO assets (tenant_id, id, name, source, first_seen_at, last_seen_at)
			VALUES ($1, $2, 'rogue', 'discovery', now(), now())`, tenantID, assetID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO alerts (tenant_id, id, type, status, severity, title, asset_id, first_seen_at, last_seen_at,
			created_at, updated_at) VALUES ($1, $2, 'unauthorized_device', 'open', 'high', 'Unauthorized device', $3,
			now() - make_interval(secs => $4), now(), now(), now())`, tenantID, alertID, assetID, age.Seconds()); err != nil {
			return err
		}
		var err error
		evidenceID, err = evidence.Add(ctx, tx, tenantID, evidence.Record{Kind: evidence.KindObservation, AlertID: &alertID, AssetID: &assetID,
			SourceType: "observation", SourceID: "test", Content: map[string]any{"note": marker}})
		return err
	}))
	return alertID, evidenceID
}

func TestUnauthorizedSLAFlipsWithTheAlertAndCitesItsEvidence(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	const marker = "RAW-EVIDENCE-MARKER-5581"
	alertID, evidenceID := newAlert(t, env, env.Tenant.ID, 25*time.Hour, marker)

	evaluate(t, env, env.Tenant.ID)
	r := admin.Do(http.MethodGet, "/api/v1/compliance/controls/nist-800-53-r5:cm-8.3", nil)
	assert.NotContains(t, string(r.Body), marker, "control detail never embeds evidence content")
	var d detail
	r.JSON(t, &d)
	assert.Equal(t, "failing", d.Control.Status.Status)
	assert.Contains(t, *d.Control.Status.Reason, "past the 24h0m0s SLA")
	roles := map[string]string{}
	for _, e := range d.Evidence {
		roles[e.EvidenceID] = e.Role
	}
	assert.Equal(t, "cited", roles[evidenceID.String()], "the overdue alert's evidence is linked")
	assert.Contains(t, roles, func() string {
		for id, role := range roles {
			if role == "evaluation" {
				return id
			}
		}
		return ""
	}())
	assert.Equal(t, "failing", getDetail(t, admin, "cis-v8:1.2").Control.Status.Status, "CIS 1.2 follows the same evaluator")

	// Another tenant sees neither the status nor the links.
	other, _ := env.NewTenant(t, "other")
	outsider := env.Client(t, env.IssueToken(t, other.ID, caller.RoleAuditor, "outsider").Secret)
	od := getDetail(t, outsider, "nist-800-53-r5:cm-8.3")
	assert.Equal(t, "unknown", od.Control.Status.Status)
	assert.Empty(t, od.Evidence)

	// Resolving the alert flips it back; the evaluation is evidence.
	r = admin.Do(http.MethodPost, "/api/v1/alerts/"+alertID.String()+"/resolve", map[string]any{"resolution": "removed"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	evaluate(t, env, env.Tenant.ID)
	d = getDetail(t, admin, "nist-800-53-r5:cm-8.3")
	assert.Equal(t, "passing", d.Control.Status.Status)
	for _, e := range d.Evidence {
		assert.NotEqual(t, "cited", e.Role, "a passing verdict cites no overdue alert")
	}
	r = admin.Do(http.MethodGet, "/api/v1/evidence?kind=control_evaluation", nil)
	require.Equal(t, http.StatusOK, r.Status)
	assert.Contains(t, string(r.Body), "unauthorized_assets_within_sla")

	// An evaluation that changes nothing makes no new evidence.
	before := strings.Count(string(admin.Do(http.MethodGet, "/api/v1/evidence?kind=control_evaluation&limit=200", nil).Body), `"id"`)
	evaluate(t, env, env.Tenant.ID)
	after := strings.Count(string(admin.Do(http.MethodGet, "/api/v1/evidence?kind=control_evaluation&limit=200", nil).Body), `"id"`)
	assert.Equal(t, before, after)
}

func TestTamperedAuditChainFailsAU9(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	evaluate(t, env, env.Tenant.ID)
	assert.Equal(t, "passing", getDetail(t, admin, "nist-800-53-r5:au-9").Control.Status.Status)
	assert.Equal(t, "passing", getDetail(t, admin, "nist-800-53-r5:au-12").Control.Status.Status)

	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		for _, stmt := range []string{"ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete",
			`UPDATE audit_events SET details = '{"forged": true}' WHERE seq = 1`,
			"ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete"} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	}))
	evaluate(t, env, env.Tenant.ID)
	d := getDetail(t, admin, "nist-800-53-r5:au-9")
	assert.Equal(t, "failing", d.Control.Status.Status)
	assert.Contains(t, *d.Control.Status.Reason, "broken at event 1")
}

func TestNotApplicableIsAuditedAndLeftAloneByEvaluators(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	path := "/api/v1/compliance/controls/nist-800-53-r5:ia-3/not-applicable"

	auditor.Do(http.MethodPost, path, map[string]any{"justification": "x"}).Problem(t, http.StatusForbidden)
	assert.Equal(t, "validation_failed", admin.Do(http.MethodPost, path, map[string]any{"justification": "  "}).Problem(t, http.StatusUnprocessableEntity).Code)
	admin.Do(http.MethodDelete, path, nil).Problem(t, http.StatusConflict)

	r := admin.Do(http.MethodPost, path, map[string]any{"justification": "no agents on this tenant: devices are managed elsewhere"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var d detail
	r.JSON(t, &d)
	assert.Equal(t, "not_applicable", d.Control.Status.Status)
	require.NotNil(t, d.Control.Status.Justification)

	evaluate(t, env, env.Tenant.ID)
	assert.Equal(t, "not_applicable", getDetail(t, admin, "nist-800-53-r5:ia-3").Control.Status.Status)
	r = admin.Do(http.MethodGet, "/api/v1/compliance/controls?status=not_applicable", nil)
	assert.Contains(t, string(r.Body), "nist-800-53-r5:ia-3")

	r = admin.Do(http.MethodDelete, path, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	r.JSON(t, &d)
	assert.Equal(t, "unknown", d.Control.Status.Status)
	r = admin.Do(http.MethodGet, "/api/v1/audit/events?target_type=control", nil)
	assert.Contains(t, string(r.Body), "compliance.control_not_applicable")
	assert.Contains(t, string(r.Body), "compliance.control_applicable")
}

// TestDomainEventsTriggerEvaluation: an asset authorization (a domain
// event) queues the tenant's evaluation, which runs without anyone asking.
// The scheduled sweep runs once at start; the tenant is made after it, so
// only the event can have evaluated it.
func TestDomainEventsTriggerEvaluation(t *testing.T) {
	env := apitest.Start(t)
	waitEvaluated(t, env.Client(t, env.AdminToken), "the start-up sweep")
	tenant, token := env.NewTenant(t, "later")
	admin := env.Client(t, token)
	ctx := context.Background()
	assetID := uuid.Must(uuid.NewV7())
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO assets (tenant_id, id, name, source, first_seen_at, last_seen_at)
			VALUES ($1, $2, 'printer', 'discovery', now(), now())`, tenant.ID, assetID)
		return err
	}))
	assert.Nil(t, getDetail(t, admin, "nist-800-53-r5:cm-8").Control.Status.Evaluator)
	r := admin.Do(http.MethodPost, "/api/v1/assets/"+assetID.String()+"/authorize", map[string]any{"reason": "known printer"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	waitEvaluated(t, admin, "the asset.authorized event")
}

func waitEvaluated(t *testing.T, c *apitest.Client, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := getDetail(t, c, "nist-800-53-r5:cm-8")
		if d.Control.Status.Evaluator != nil {
			assert.Equal(t, "asset_inventory_coverage", *d.Control.Status.Evaluator)
			return
		}
		require.True(t, time.Now().Before(deadline), "no evaluation followed %s", what)
		time.Sleep(200 * time.Millisecond)
	}
}

type policy struct {
	ID         string         `json:"id"`
	Kind       string         `json:"kind"`
	BaselineID string         `json:"baseline_id"`
	Parameters map[string]any `json:"parameters"`
	Version    int            `json:"version"`
}

func TestPoliciesForkUpdateAndHistoryDriveTheEvaluators(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	const base = "/api/v1/compliance/policies/unauthorized-device-response"

	r := auditor.Do(http.MethodGet, "/api/v1/compliance/policies", nil)
	require.Equal(t, http.StatusOK, r.Status)
	var list struct {
		Items []policy `json:"items"`
	}
	r.JSON(t, &list)
	require.Len(t, list.Items, 4, "the four baselines, no copies yet")
	r = auditor.Do(http.MethodGet, base, nil)
	assert.Equal(t, `"v1"`, r.Header.Get("ETag"))

	// Auditors read but never change: refused and audited.
	auditor.Do(http.MethodPost, base+"/fork", nil).Problem(t, http.StatusForbidden)
	auditor.Do(http.MethodPut, base, map[string]any{"parameters": map[string]any{"sla_hours": 1}}, apitest.Header("If-Match", `"v1"`)).Problem(t, http.StatusForbidden)
	assert.Equal(t, "baseline_immutable", admin.Do(http.MethodPut, base, map[string]any{"parameters": map[string]any{"sla_hours": 1}},
		apitest.Header("If-Match", `"v1"`)).Problem(t, http.StatusConflict).Code)

	// An alert two hours old passes the default 24 h SLA.
	newAlert(t, env, env.Tenant.ID, 2*time.Hour, "m")
	evaluate(t, env, env.Tenant.ID)
	assert.Equal(t, "passing", getDetail(t, admin, "nist-800-53-r5:cm-8.3").Control.Status.Status)

	r = admin.Do(http.MethodPost, base+"/fork", map[string]any{"name": "Our SLA"})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var p policy
	r.JSON(t, &p)
	assert.Equal(t, "tenant", p.Kind)
	assert.Equal(t, 1, p.Version)
	assert.EqualValues(t, 24, p.Parameters["sla_hours"])
	assert.Equal(t, "already_forked", admin.Do(http.MethodPost, base+"/fork", nil).Problem(t, http.StatusConflict).Code)
	path := "/api/v1/compliance/policies/" + p.ID

	put := func(body map[string]any, ifMatch string) *apitest.Response {
		return admin.Do(http.MethodPut, path, body, apitest.Header("If-Match", ifMatch))
	}
	pr := put(map[string]any{"parameters": map[string]any{"sla_hours": 0}}, `"v1"`).Problem(t, http.StatusUnprocessableEntity)
	require.NotEmpty(t, pr.Errors)
	assert.Equal(t, "#/parameters/sla_hours", pr.Errors[0].Pointer)
	put(map[string]any{"parameters": map[string]any{"sla_hours": "one"}}, `"v1"`).Problem(t, http.StatusUnprocessableEntity)
	put(map[string]any{"parameters": map[string]any{"sla_hours": 1, "extra": true}}, `"v1"`).Problem(t, http.StatusUnprocessableEntity)
	admin.Do(http.MethodPut, path, map[string]any{"parameters": map[string]any{"sla_hours": 1}}).Problem(t, http.StatusPreconditionRequired)

	r = put(map[string]any{"parameters": map[string]any{"sla_hours": 1}}, `"v1"`)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	assert.Equal(t, `"v2"`, r.Header.Get("ETag"))
	put(map[string]any{"parameters": map[string]any{"sla_hours": 2}}, `"v1"`).Problem(t, http.StatusPreconditionFailed)

	// The tenant's policy drives the evaluator: two hours is now overdue.
	evaluate(t, env, env.Tenant.ID)
	d := getDetail(t, admin, "nist-800-53-r5:cm-8.3")
	assert.Equal(t, "failing", d.Control.Status.Status)
	assert.Contains(t, *d.Control.Status.Reason, "1h0m0s SLA")

	r = auditor.Do(http.MethodGet, path+"/versions", nil)
	require.Equal(t, http.StatusOK, r.Status)
	var versions struct {
		Items []struct {
			Version    int            `json:"version"`
			Change     string         `json:"change"`
			Parameters map[string]any `json:"parameters"`
		} `json:"items"`
	}
	r.JSON(t, &versions)
	require.Len(t, versions.Items, 2)
	assert.Equal(t, "forked", versions.Items[0].Change)
	assert.Equal(t, "updated", versions.Items[1].Change)
	assert.EqualValues(t, 1, versions.Items[1].Parameters["sla_hours"])
	r = auditor.Do(http.MethodGet, path+"/versions/1", nil)
	require.Equal(t, http.StatusOK, r.Status)
	assert.Contains(t, string(r.Body), `"sla_hours":24`)
	auditor.Do(http.MethodGet, path+"/versions/3", nil).Problem(t, http.StatusNotFound)
	auditor.Do(http.MethodGet, path+"/versions/3000000000", nil).Problem(t, http.StatusBadRequest)
	huge := base64.RawURLEncoding.EncodeToString([]byte(`{"v":3000000000}`))
	assert.Equal(t, "invalid_cursor", auditor.Do(http.MethodGet, path+"/versions?cursor="+huge, nil).Problem(t, http.StatusBadRequest).Code)
	huge = base64.RawURLEncoding.EncodeToString([]byte(`{"f":"cis-v8","s":3000000000}`))
	assert.Equal(t, "invalid_cursor", auditor.Do(http.MethodGet, "/api/v1/compliance/controls?cursor="+huge, nil).Problem(t, http.StatusBadRequest).Code)
	auditor.Do(http.MethodGet, base+"/versions", nil).Problem(t, http.StatusNotFound)

	r = admin.Do(http.MethodGet, "/api/v1/audit/events?limit=200", nil)
	body := string(r.Body)
	for _, action := range []string{"policy.forked", "policy.updated", "auth.denied"} {
		assert.Contains(t, body, `"action":"`+action+`"`)
	}
	assert.Equal(t, []string{"policy.forked", "policy.updated"}, outboxTypes(t, env, "compliance_policy"))

	other, _ := env.NewTenant(t, "other")
	outsider := env.Client(t, env.IssueToken(t, other.ID, caller.RoleTenantAdmin, "outsider").Secret)
	outsider.Do(http.MethodGet, path, nil).Problem(t, http.StatusNotFound)
	outsider.Do(http.MethodGet, path+"/versions", nil).Problem(t, http.StatusNotFound)
}

func outboxTypes(t *testing.T, env *apitest.Env, aggregate string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT type FROM outbox_events WHERE aggregate_type = $1 ORDER BY id`, aggregate)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}))
	return out
}

// TestDeviceAuthenticationFollowsCertificatesAndPolicy: IA-3 passes with
// valid current certificates, fails when one expires or outlives the
// tenant's lifetime policy; CM-8 fails when an agent goes quiet.
func TestDeviceAuthenticationFollowsCertificatesAndPolicy(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	ctx := context.Background()
	agentID, assetID := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	owner := func(stmt string, args ...any) {
		t.Helper()
		require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, stmt, args...)
			return err
		}))
	}
	owner(`INSERT INTO assets (tenant_id, id, name, source, first_seen_at, last_seen_at) VALUES ($1, $2, 'laptop', 'agent', now(), now())`,
		env.Tenant.ID, assetID)
	owner(`INSERT INTO agents (tenant_id, id, machine_id, hostname, asset_id, enrolled_at, last_seen_at, heartbeat_interval_seconds)
		VALUES ($1, $2, 'm-1', 'laptop', $3, now(), now(), 60)`, env.Tenant.ID, agentID, assetID)
	owner(`INSERT INTO agent_certificates (tenant_id, fingerprint, agent_id, serial, not_before, not_after, state)
		VALUES ($1, sha256('c1'), $2, '1', now() - interval '1 day 5 minutes', now() + interval '29 days', 'current')`, env.Tenant.ID, agentID)

	evaluate(t, env, env.Tenant.ID)
	assert.Equal(t, "passing", getDetail(t, admin, "nist-800-53-r5:ia-3").Control.Status.Status)
	assert.Equal(t, "passing", getDetail(t, admin, "nist-800-53-r5:cm-8").Control.Status.Status)

	// The tenant accepts at most 7-day certificates: the 30-day one fails.
	r := admin.Do(http.MethodPost, "/api/v1/compliance/policies/agent-certificate-lifetime/fork", nil)
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var p policy
	r.JSON(t, &p)
	r = admin.Do(http.MethodPut, "/api/v1/compliance/policies/"+p.ID, map[string]any{"parameters": map[string]any{"max_lifetime_days": 7}},
		apitest.Header("If-Match", `"v1"`))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	evaluate(t, env, env.Tenant.ID)
	d := getDetail(t, admin, "nist-800-53-r5:ia-3")
	assert.Equal(t, "failing", d.Control.Status.Status)
	assert.Contains(t, *d.Control.Status.Reason, "longer than the policy")

	// An expired certificate fails too, and a quiet agent fails the inventory.
	owner(`UPDATE agent_certificates SET not_before = now() - interval '3 days', not_after = now() - interval '1 hour'`)
	owner(`UPDATE agents SET last_seen_at = now() - interval '10 minutes'`)
	evaluate(t, env, env.Tenant.ID)
	assert.Contains(t, *getDetail(t, admin, "nist-800-53-r5:ia-3").Control.Status.Reason, "no valid current certificate")
	assert.Equal(t, "failing", getDetail(t, admin, "nist-800-53-r5:cm-8").Control.Status.Status)
	assert.Equal(t, "failing", getDetail(t, admin, "cis-v8:1.1").Control.Status.Status)
}

// TestCatalogUpgradesInPlace: a catalog of another version replaces the
// stored one (what a newer binary's migrate does); tenant statuses stay.
func TestCatalogUpgradesInPlace(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	evaluate(t, env, env.Tenant.ID)
	ctx := context.Background()

	c, err := catalog.Load()
	require.NoError(t, err)
	store := func(c *catalog.Catalog) bool {
		var wrote bool
		require.NoError(t, pgx.BeginFunc(ctx, env.DB.Owner, func(tx pgx.Tx) error {
			var err error
			wrote, err = catalog.Store(ctx, tx, c)
			return err
		}))
		return wrote
	}
	assert.False(t, store(c), "the same version is not written again")

	original := c.Version
	c.Version = "9999.1.1"
	for i := range c.Controls {
		if c.Controls[i].ID() == "nist-800-53-r5:au-9" {
			c.Controls[i].Title = "Protection of Audit Information (renamed)"
		}
	}
	assert.True(t, store(c))
	d := getDetail(t, admin, "nist-800-53-r5:au-9")
	assert.Contains(t, string(admin.Do(http.MethodGet, "/api/v1/compliance/controls/nist-800-53-r5:au-9", nil).Body), "(renamed)")
	assert.Equal(t, "passing", d.Control.Status.Status, "the tenant's status survives the upgrade")
	r := admin.Do(http.MethodGet, "/api/v1/compliance/frameworks", nil)
	assert.Contains(t, string(r.Body), c.Version)

	// An older binary's migrate (a rollback) leaves the newer catalog.
	older, err := catalog.Load()
	require.NoError(t, err)
	require.Equal(t, original, older.Version)
	assert.False(t, store(older))
	assert.Contains(t, string(admin.Do(http.MethodGet, "/api/v1/compliance/frameworks", nil).Body), "9999.1.1")

	// The runtime role can only read the catalog.
	err = db.InTenant(ctx, env.DB.App, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE compliance_controls SET title = 'x'`)
		return err
	})
	assert.ErrorContains(t, err, "permission denied")
}

// TestEvaluationUnderConcurrentAuditing: audit events committed while an
// evaluation runs neither break AU-9 nor make new evidence (a passing
// verdict names no live counts).
func TestEvaluationUnderConcurrentAuditing(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	evaluate(t, env, env.Tenant.ID)
	count := func() int {
		return strings.Count(string(admin.Do(http.MethodGet, "/api/v1/evidence?kind=control_evaluation&limit=200", nil).Body), `"id"`)
	}
	before := count()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_ = db.InTenant(ctx, env.DB.App, env.Tenant.ID, func(tx pgx.Tx) error {
				return audit.Record(ctx, tx, env.Tenant.ID, audit.Entry{Action: "test.activity", TargetType: "test"})
			})
		}
	}()
	for range 15 {
		evaluate(t, env, env.Tenant.ID)
		assert.Equal(t, "passing", getDetail(t, admin, "nist-800-53-r5:au-9").Control.Status.Status)
	}
	cancel()
	<-done
	assert.Equal(t, before, count(), "unchanged verdicts make no evidence")
}
