package tickets_test

import (
	"testing"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
)

func TestProbeUnassign(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	an := env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "a")
	tk := create(t, admin, map[string]any{"title": "x", "assignee_id": an.PrincipalID.String()})
	r := patch(admin, tk.ID, 1, map[string]any{"assignee_id": nil})
	t.Logf("status %d body %s etag %s", r.Status, r.Body, r.Header.Get("ETag"))
}
