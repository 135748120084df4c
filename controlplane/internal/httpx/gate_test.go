package httpx_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
	"github.com/edgeward/edgeward/controlplane/internal/httpx"
)

// state is a fingerprint of everything a request could change in a tenant.
func state(t *testing.T, env *apitest.Env) string {
	t.Helper()
	ctx := context.Background()
	var s string
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT concat_ws('|',
			(SELECT count(*) FROM principals), (SELECT count(*) FROM api_tokens),
			(SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL),
			(SELECT string_agg(action, ',' ORDER BY seq) FROM audit_events WHERE action NOT LIKE 'auth.%'))`).Scan(&s)
	}))
	return s
}

// concretePath fills a spec path template with a fresh id per parameter.
func concretePath(path string) string {
	return regexp.MustCompile(`\{[^}]+\}`).ReplaceAllStringFunc(path, func(string) string { return uuid.NewString() })
}

// TestAuditorCannotCallAnyMutation calls every non-GET operation of the spec
// as an auditor: each answers 403 with a problem, is recorded as denied, and
// changes nothing.
func TestAuditorCannotCallAnyMutation(t *testing.T) {
	env := apitest.Start(t)
	auditor := env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor")
	c := env.Client(t, auditor.Secret)
	before := state(t, env)
	mutations := 0
	for _, op := range env.Index.Operations() {
		if api.IsRead(op.Method) || op.Public {
			continue
		}
		if op.AgentAuth {
			// Not a role's operation at all: a bearer token is no agent.
			var body any
			if op.HasBody {
				body = map[string]any{}
			}
			p := c.Do(op.Method, concretePath(op.Path), body).Problem(t, http.StatusUnauthorized)
			assert.Equal(t, "agent_certificate_missing", p.Code)
			continue
		}
		mutations++
		t.Run(op.ID, func(t *testing.T) {
			var body any
			if op.HasBody {
				body = map[string]any{}
			}
			p := c.Do(op.Method, concretePath(op.Path), body).Problem(t, http.StatusForbidden)
			assert.Equal(t, "forbidden", p.Code)
			assert.Equal(t, "urn:edgeward:problem:forbidden", p.Type)
			assert.Equal(t, "the auditor role may not call "+op.ID, p.Detail)
		})
	}
	require.Positive(t, mutations)
	assert.Equal(t, before, state(t, env), "a refused call changed the tenant")

	var events struct {
		Items []struct {
			Outcome string `json:"outcome"`
			Target  struct {
				ID string `json:"id"`
			} `json:"target"`
		} `json:"items"`
	}
	env.Client(t, env.AdminToken).Do("GET", "/api/v1/audit/events?action=auth.denied&limit=200", nil).JSON(t, &events)
	assert.Len(t, events.Items, mutations, "each refusal is in the audit trail")
}

func TestRequestsTheSpecForbidsNeverReachAHandler(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	before := state(t, env)
	big := `{"name":"` + strings.Repeat("a", httpx.DefaultMaxBodyBytes) + `","role":"analyst"}`
	cases := []struct {
		name        string
		body        []byte
		contentType string
		status      int
		code        string
		detail      string
		pointer     string
	}{
		{"malformed JSON", []byte(`{"name": "x", "role": `), "", 400, "malformed_json", "ends early", ""},
		{"syntax error", []byte(`{"name": "x" "role": "analyst"}`), "", 400, "malformed_json", "at byte", ""},
		{"two values", []byte(`{"name":"x","role":"analyst"} {}`), "", 400, "malformed_json", "more than one JSON value", ""},
		{"duplicate key", []byte(`{"name":"x","role":"analyst","role":"tenant_admin"}`), "", 400, "malformed_json", "appears twice", "#/role"},
		{"empty body", []byte(` `), "", 400, "malformed_json", "empty", ""},
		{"unknown field", []byte(`{"name":"x","role":"analyst","admin":true}`), "", 422, "validation_failed", "", "#/admin"},
		{"wrong type", []byte(`{"name":42,"role":"analyst"}`), "", 422, "validation_failed", "", "#/name"},
		{"bad date", []byte(`{"name":"x","role":"analyst","expires_at":"tomorrow"}`), "", 422, "validation_failed", "", "#/expires_at"},
		{"not an object", []byte(`["name"]`), "", 422, "validation_failed", "", "#"},
		{"oversized", []byte(big), "", 413, "body_too_large", "exceeds", ""},
		{"form encoded", []byte(`name=x&role=analyst`), "application/x-www-form-urlencoded", 415, "unsupported_media_type", "application/json", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var opts []apitest.Option
			if tc.contentType != "" {
				opts = append(opts, apitest.Header("Content-Type", tc.contentType))
			}
			p := admin.Do("POST", "/api/v1/api-tokens", apitest.Raw(tc.body), opts...).Problem(t, tc.status)
			assert.Equal(t, tc.code, p.Code)
			assert.Contains(t, p.Detail, tc.detail)
			if tc.pointer != "" {
				require.NotEmpty(t, p.Errors)
				assert.Equal(t, tc.pointer, p.Errors[0].Pointer, "%+v", p.Errors)
			}
		})
	}
	assert.Equal(t, before, state(t, env), "refused requests changed nothing")

	t.Run("body on a bodyless operation", func(t *testing.T) {
		p := admin.Do("DELETE", "/api/v1/api-tokens/"+uuid.NewString(), apitest.Raw(`{}`)).Problem(t, 400)
		assert.Equal(t, "unexpected_body", p.Code)
	})
	t.Run("unknown path", func(t *testing.T) {
		p := admin.Do("GET", "/api/v1/nothing-here", nil).Problem(t, 404)
		assert.Equal(t, "not_found", p.Code)
	})
	t.Run("unknown method", func(t *testing.T) {
		r := admin.Do("PUT", "/api/v1/api-tokens", apitest.Raw(`{}`))
		p := r.Problem(t, 405)
		assert.Equal(t, "method_not_allowed", p.Code)
		assert.Equal(t, "GET, POST", r.Header.Get("Allow"))
		p = env.Client(t, "").Do("POST", "/healthz", nil).Problem(t, 405)
		assert.Equal(t, "method_not_allowed", p.Code)
	})
}

func TestRequestIDsAreEchoedOrMade(t *testing.T) {
	env := apitest.Start(t)
	c := env.Client(t, env.AdminToken)
	r := c.Do("GET", "/api/v1/me", nil, apitest.Header("X-Request-Id", "trace-abc.123"))
	assert.Equal(t, "trace-abc.123", r.Header.Get("X-Request-Id"))
	r = c.Do("GET", "/api/v1/me", nil, apitest.Header("X-Request-Id", "bad id\twith spaces"))
	_, err := uuid.Parse(r.Header.Get("X-Request-Id"))
	assert.NoError(t, err, "an unusable id is replaced")
	p := c.Do("GET", "/api/v1/api-tokens/x", nil, apitest.Header("X-Request-Id", "req-42")).Problem(t, 400)
	assert.Equal(t, "req-42", p.RequestID)
	assert.Contains(t, env.Logs.String(), `"request_id":"req-42"`)
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	env := apitest.Start(t)
	anon := env.Client(t, "")
	assert.JSONEq(t, `{"status":"ok"}`, string(anon.Do("GET", "/healthz", nil).Body))
	r := anon.Do("GET", "/readyz", nil)
	assert.Equal(t, http.StatusOK, r.Status)
	assert.JSONEq(t, `{"status":"ready","checks":{"database":"ok"}}`, string(r.Body))

	env.Client(t, env.AdminToken).Do("GET", "/api/v1/me", nil)
	m := anon.Do("GET", "/metrics", nil)
	require.Equal(t, http.StatusOK, m.Status)
	body := string(m.Body)
	assert.Contains(t, body, `edgeward_http_requests_total{method="GET",operation="getMe",status="200"} 1`)
	assert.Contains(t, body, "edgeward_db_pool_connections")
	assert.NotContains(t, body, env.Tenant.ID.String(), "metrics never name tenants")

	// The database goes away: not ready. It comes back: ready again.
	ctx := context.Background()
	superURL, err := dbtest.SuperuserURL(ctx)
	require.NoError(t, err)
	su, err := pgx.Connect(ctx, superURL)
	require.NoError(t, err)
	defer func() { _ = su.Close(ctx) }()
	_, err = su.Exec(ctx, "ALTER DATABASE "+env.DB.Name+" ALLOW_CONNECTIONS false")
	require.NoError(t, err)
	_, err = su.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = $2", env.DB.Name, db.RuntimeRole)
	require.NoError(t, err)
	r = anon.Do("GET", "/readyz", nil)
	assert.Equal(t, http.StatusServiceUnavailable, r.Status)
	assert.JSONEq(t, `{"status":"unavailable","checks":{"database":"unavailable"}}`, string(r.Body))
	_, err = su.Exec(ctx, "ALTER DATABASE "+env.DB.Name+" ALLOW_CONNECTIONS true")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, anon.Do("GET", "/readyz", nil).Status)
	assert.Equal(t, http.StatusOK, env.Client(t, env.AdminToken).Do("GET", "/api/v1/me", nil).Status, "requests work again")
}
