package tenants_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
)

// TestTenantsCannotSeeOrTouchEachOther: tenant B's administrator tries to
// read and change tenant A's rows through every route that takes an id. B
// sees 404s (A's rows look absent, not forbidden) and A is unchanged.
func TestTenantsCannotSeeOrTouchEachOther(t *testing.T) {
	env := apitest.Start(t)
	tenantA, adminA := env.Tenant, env.AdminToken
	tenantB, adminB := env.NewTenant(t, "globex")
	analystA := env.IssueToken(t, tenantA.ID, caller.RoleAnalyst, "a-analyst")
	a, b := env.Client(t, adminA), env.Client(t, adminB)

	var auditA struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	a.Do("GET", "/api/v1/audit/events?limit=200", nil).JSON(t, &auditA)

	p := b.Do("GET", "/api/v1/api-tokens/"+analystA.ID.String(), nil).Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
	p = b.Do("DELETE", "/api/v1/api-tokens/"+analystA.ID.String(), nil).Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
	p = b.Do("POST", "/api/v1/api-tokens", map[string]any{"name": "steal", "role": "analyst", "principal_id": analystA.PrincipalID.String()}).
		Problem(t, http.StatusUnprocessableEntity)
	assert.Equal(t, "#/principal_id", p.Errors[0].Pointer)

	// A's token still works: B's DELETE did nothing.
	assert.Equal(t, http.StatusOK, env.Client(t, analystA.Secret).Do("GET", "/api/v1/me", nil).Status)

	var listB struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	b.Do("GET", "/api/v1/api-tokens?limit=200", nil).JSON(t, &listB)
	require.Len(t, listB.Items, 1, "B sees only its own bootstrap token")
	// Filtering by A's principal finds nothing either.
	b.Do("GET", "/api/v1/api-tokens?principal_id="+analystA.PrincipalID.String(), nil).JSON(t, &listB)
	assert.Empty(t, listB.Items)

	var auditB struct {
		Items []struct {
			ID     string `json:"id"`
			Action string `json:"action"`
			Target struct {
				ID *string `json:"id"`
			} `json:"target"`
		} `json:"items"`
	}
	b.Do("GET", "/api/v1/audit/events?limit=200", nil).JSON(t, &auditB)
	idsA := map[string]bool{}
	for _, ev := range auditA.Items {
		idsA[ev.ID] = true
	}
	for _, ev := range auditB.Items {
		assert.False(t, idsA[ev.ID], "B sees A's audit event %s", ev.ID)
		if ev.Target.ID != nil {
			assert.NotEqual(t, analystA.ID.String(), *ev.Target.ID)
			assert.NotEqual(t, tenantA.ID.String(), *ev.Target.ID)
		}
	}
	b.Do("GET", "/api/v1/audit/events?target_id="+analystA.ID.String(), nil).JSON(t, &auditB)
	assert.Empty(t, auditB.Items)

	// And A's trail is exactly as it was, plus nothing B did.
	var after struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	a.Do("GET", "/api/v1/audit/events?limit=200", nil).JSON(t, &after)
	assert.Equal(t, len(auditA.Items), len(after.Items), "B's attempts wrote nothing into A's trail")

	var meB struct {
		TenantID string `json:"tenant_id"`
	}
	b.Do("GET", "/api/v1/me", nil).JSON(t, &meB)
	assert.Equal(t, tenantB.ID.String(), meB.TenantID)
}
