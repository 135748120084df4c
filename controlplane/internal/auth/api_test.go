package auth_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/auth"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
)

type me struct {
	TenantID          string   `json:"tenant_id"`
	TenantName        string   `json:"tenant_name"`
	PrincipalID       string   `json:"principal_id"`
	PrincipalName     string   `json:"principal_name"`
	PrincipalKind     string   `json:"principal_kind"`
	Role              string   `json:"role"`
	TokenID           string   `json:"token_id"`
	AllowedOperations []string `json:"allowed_operations"`
}

type token struct {
	ID            string     `json:"id"`
	Name          string     `json:"name"`
	Role          string     `json:"role"`
	PrincipalID   string     `json:"principal_id"`
	PrincipalName string     `json:"principal_name"`
	Status        string     `json:"status"`
	CreatedBy     *string    `json:"created_by"`
	ExpiresAt     time.Time  `json:"expires_at"`
	LastUsedAt    *time.Time `json:"last_used_at"`
	RevokedAt     *time.Time `json:"revoked_at"`
	Token         string     `json:"token"`
}

type tokenList struct {
	Items      []token `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

func countTokens(t *testing.T, env *apitest.Env, tenantID uuid.UUID) int {
	t.Helper()
	var n int
	require.NoError(t, db.InTenant(context.Background(), env.DB.Owner, tenantID, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), "SELECT count(*) FROM api_tokens").Scan(&n)
	}))
	return n
}

func TestMeDescribesTheCaller(t *testing.T) {
	env := apitest.Start(t)
	r := env.Client(t, env.AdminToken).Do("GET", "/api/v1/me", nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var m me
	r.JSON(t, &m)
	assert.Equal(t, env.Tenant.ID.String(), m.TenantID)
	assert.Equal(t, "acme", m.TenantName)
	assert.Equal(t, "admin", m.PrincipalName)
	assert.Equal(t, "user", m.PrincipalKind)
	assert.Equal(t, "tenant_admin", m.Role)
	assert.Contains(t, m.AllowedOperations, "createApiToken")

	auditor := env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "external auditor")
	r = env.Client(t, auditor.Secret).Do("GET", "/api/v1/me", nil)
	r.JSON(t, &m)
	assert.Equal(t, "auditor", m.Role)
	assert.Subset(t, m.AllowedOperations, []string{"getMe", "listAuditEvents", "getAuditIntegrity"})
	assert.NotContains(t, m.AllowedOperations, "createApiToken")
	for _, id := range m.AllowedOperations {
		assert.Equal(t, "GET", env.Index.Operation(id).Method, "an auditor is offered reads only, not %s", id)
	}
}

func TestBadTokensAreRejectedWithTheirReason(t *testing.T) {
	env := apitest.Start(t)
	ctx := context.Background()
	expired := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "expired")
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", expired.ID)
		return err
	}))
	revoked := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "revoked")
	r := env.Client(t, env.AdminToken).Do("DELETE", "/api/v1/api-tokens/"+revoked.ID.String(), nil)
	require.Equal(t, http.StatusNoContent, r.Status, "%s", r.Body)

	// A well-formed token of a tenant that never issued it.
	unknown, _ := auth.NewToken(env.Tenant.ID)
	// A valid token with one character changed fails its checksum.
	tampered := []byte(env.AdminToken)
	tampered[10] ^= 1

	cases := []struct {
		name, header, code, detail string
	}{
		{"no token", "", "token_missing", "needs an API token"},
		{"not bearer", "Basic dXNlcjpwYXNz", "token_malformed", "Bearer <token>"},
		{"garbage", "Bearer hello", "token_malformed", "not an Edgeward API token"},
		{"checksum", "Bearer " + string(tampered), "token_malformed", "not an Edgeward API token"},
		{"unknown", "Bearer " + unknown, "token_invalid", "not known"},
		{"expired", "Bearer " + expired.Secret, "token_expired", "expired at"},
		{"revoked", "Bearer " + revoked.Secret, "token_revoked", "revoked"},
	}
	before := countTokens(t, env, env.Tenant.ID)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var opts []apitest.Option
			if tc.header != "" {
				opts = append(opts, apitest.Header("Authorization", tc.header))
			}
			// A mutation, to show a rejected call changes nothing.
			r := env.Client(t, "").Do("POST", "/api/v1/api-tokens", map[string]any{"name": "x", "role": "auditor"}, opts...)
			p := r.Problem(t, http.StatusUnauthorized)
			assert.Equal(t, tc.code, p.Code)
			assert.Equal(t, "urn:edgeward:problem:"+tc.code, p.Type)
			assert.Equal(t, "Unauthorized", p.Title)
			assert.Equal(t, 401, p.Status)
			assert.Contains(t, p.Detail, tc.detail)
			assert.Equal(t, "/api/v1/api-tokens", p.Instance)
			assert.Equal(t, r.Header.Get("X-Request-Id"), p.RequestID)
			assert.True(t, strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer "), "RFC 6750 challenge")
		})
	}
	assert.Equal(t, before, countTokens(t, env, env.Tenant.ID), "rejected calls created tokens")

	// Uses of expired and revoked tokens are in the audit trail.
	var l struct {
		Items []struct {
			Outcome string         `json:"outcome"`
			Target  map[string]any `json:"target"`
			Details map[string]any `json:"details"`
		} `json:"items"`
	}
	env.Client(t, env.AdminToken).Do("GET", "/api/v1/audit/events?action=auth.token_rejected", nil).JSON(t, &l)
	reasons := map[string]bool{}
	for _, ev := range l.Items {
		assert.Equal(t, "denied", ev.Outcome)
		reasons[fmt.Sprint(ev.Details["reason"])] = true
	}
	assert.Equal(t, map[string]bool{"token_expired": true, "token_revoked": true}, reasons)
}

func TestCreateTokenShowsTheSecretOnce(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	r := admin.Do("POST", "/api/v1/api-tokens", map[string]any{"name": "CI pipeline", "role": "analyst"})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var created token
	r.JSON(t, &created)
	assert.True(t, strings.HasPrefix(created.Token, "ew_"))
	assert.Len(t, created.Token, auth.TokenLen)
	assert.Equal(t, "active", created.Status)
	assert.Equal(t, "CI pipeline", created.PrincipalName, "a new principal is named after the token")
	assert.NotNil(t, created.CreatedBy)
	assert.WithinDuration(t, time.Now().Add(auth.DefaultTokenTTL), created.ExpiresAt, time.Minute)

	// The token works and carries its role.
	var m me
	env.Client(t, created.Token).Do("GET", "/api/v1/me", nil).JSON(t, &m)
	assert.Equal(t, "analyst", m.Role)
	assert.Equal(t, created.ID, m.TokenID)

	// No read shows the secret or its hash again; nor does the log.
	get := admin.Do("GET", "/api/v1/api-tokens/"+created.ID, nil)
	require.Equal(t, http.StatusOK, get.Status)
	list := admin.Do("GET", "/api/v1/api-tokens", nil)
	for _, body := range [][]byte{get.Body, list.Body} {
		assert.NotContains(t, string(body), created.Token)
		assert.NotContains(t, string(body), "token_hash")
	}
	var got token
	get.JSON(t, &got)
	assert.Empty(t, got.Token)
	assert.NotNil(t, got.LastUsedAt, "last_used_at is set once the token is used")
	assert.NotContains(t, env.Logs.String(), created.Token)
	assert.NotContains(t, env.Logs.String(), env.AdminToken)
	assert.Contains(t, env.Logs.String(), `"operation":"createApiToken"`, "the access log names operations")
}

func TestCreateTokenRules(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	svc := env.IssueToken(t, env.Tenant.ID, caller.RoleServiceAccount, "scim")
	before := countTokens(t, env, env.Tenant.ID)

	cases := []struct {
		name    string
		body    map[string]any
		pointer string
	}{
		{"past expiry", map[string]any{"name": "x", "role": "analyst", "expires_at": time.Now().Add(-time.Hour).Format(time.RFC3339)}, "#/expires_at"},
		{"too long", map[string]any{"name": "x", "role": "analyst", "expires_at": time.Now().AddDate(2, 0, 0).Format(time.RFC3339)}, "#/expires_at"},
		{"unknown principal", map[string]any{"name": "x", "role": "analyst", "principal_id": uuid.NewString()}, "#/principal_id"},
		{"role misfit", map[string]any{"name": "x", "role": "tenant_admin", "principal_id": svc.PrincipalID.String()}, "#/role"},
		{"unknown role", map[string]any{"name": "x", "role": "root"}, "#/role"},
		{"empty name", map[string]any{"name": "", "role": "analyst"}, "#/name"},
		{"control chars", map[string]any{"name": "a\nb", "role": "analyst"}, "#/name"},
		{"missing role", map[string]any{"name": "x"}, "#/role"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := admin.Do("POST", "/api/v1/api-tokens", tc.body).Problem(t, http.StatusUnprocessableEntity)
			assert.Equal(t, "validation_failed", p.Code)
			require.NotEmpty(t, p.Errors)
			assert.Equal(t, tc.pointer, p.Errors[0].Pointer, "%+v", p.Errors)
		})
	}
	assert.Equal(t, before, countTokens(t, env, env.Tenant.ID), "refused creations changed nothing")

	// A second token for an existing principal (rotation).
	r := admin.Do("POST", "/api/v1/api-tokens", map[string]any{"name": "scim rotated", "role": "service_account", "principal_id": svc.PrincipalID.String(),
		"expires_at": time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var rotated token
	r.JSON(t, &rotated)
	assert.Equal(t, svc.PrincipalID.String(), rotated.PrincipalID)
	assert.Equal(t, "scim", rotated.PrincipalName)
}

func TestRevokeTakesEffectAtOnce(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	analyst := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst")
	c := env.Client(t, analyst.Secret)
	require.Equal(t, http.StatusOK, c.Do("GET", "/api/v1/me", nil).Status)

	require.Equal(t, http.StatusNoContent, admin.Do("DELETE", "/api/v1/api-tokens/"+analyst.ID.String(), nil).Status)
	assert.Equal(t, "token_revoked", c.Do("GET", "/api/v1/me", nil).Problem(t, http.StatusUnauthorized).Code)
	// Revoking again changes nothing and says so the same way.
	assert.Equal(t, http.StatusNoContent, admin.Do("DELETE", "/api/v1/api-tokens/"+analyst.ID.String(), nil).Status)

	var got token
	admin.Do("GET", "/api/v1/api-tokens/"+analyst.ID.String(), nil).JSON(t, &got)
	assert.Equal(t, "revoked", got.Status)
	assert.NotNil(t, got.RevokedAt)

	var revokedList tokenList
	admin.Do("GET", "/api/v1/api-tokens?status=revoked", nil).JSON(t, &revokedList)
	require.Len(t, revokedList.Items, 1)
	assert.Equal(t, analyst.ID.String(), revokedList.Items[0].ID)

	var events struct {
		Items []struct{ Action string } `json:"items"`
	}
	admin.Do("GET", "/api/v1/audit/events?action=api_token.revoked&target_id="+analyst.ID.String(), nil).JSON(t, &events)
	assert.Len(t, events.Items, 1, "one revocation, one audit event")

	p := admin.Do("DELETE", "/api/v1/api-tokens/"+uuid.NewString(), nil).Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
	p = admin.Do("GET", "/api/v1/api-tokens/not-a-uuid", nil).Problem(t, http.StatusBadRequest)
	assert.Equal(t, "invalid_parameter", p.Code)
	assert.Equal(t, "token_id", p.Errors[0].Parameter)
}

func TestListTokensPagesWithACursor(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	for i := 0; i < 6; i++ {
		env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, fmt.Sprintf("t%d", i))
	}
	var ids []string
	path := "/api/v1/api-tokens?limit=3"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5, "pagination does not end")
		var l tokenList
		admin.Do("GET", path, nil).JSON(t, &l)
		for _, it := range l.Items {
			ids = append(ids, it.ID)
		}
		if l.NextCursor == nil {
			break
		}
		path = "/api/v1/api-tokens?limit=3&cursor=" + *l.NextCursor
	}
	assert.Len(t, ids, 7, "six tokens and the bootstrap token, each once")
	seen := map[string]bool{}
	for i, id := range ids {
		assert.False(t, seen[id], "duplicate %s", id)
		seen[id] = true
		if i > 0 {
			assert.Greater(t, ids[i-1], id, "newest first")
		}
	}

	p := admin.Do("GET", "/api/v1/api-tokens?cursor=%21%21", nil).Problem(t, http.StatusBadRequest)
	assert.Equal(t, "invalid_cursor", p.Code)
	p = admin.Do("GET", "/api/v1/api-tokens?limit=500", nil).Problem(t, http.StatusBadRequest)
	assert.Equal(t, "invalid_parameter", p.Code)
	assert.Equal(t, "limit", p.Errors[0].Parameter)
	p = admin.Do("GET", "/api/v1/api-tokens?status=sleeping", nil).Problem(t, http.StatusBadRequest)
	assert.Equal(t, "status", p.Errors[0].Parameter)

	var byPrincipal tokenList
	var m me
	admin.Do("GET", "/api/v1/me", nil).JSON(t, &m)
	admin.Do("GET", "/api/v1/api-tokens?status=active&principal_id="+m.PrincipalID, nil).JSON(t, &byPrincipal)
	require.Len(t, byPrincipal.Items, 1)
	assert.Equal(t, "bootstrap", byPrincipal.Items[0].Name)
}
