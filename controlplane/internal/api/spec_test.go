package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
)

const specPath = "../../../specs/openapi.yaml"

func TestEmbeddedSpecIsTheRepositorySpec(t *testing.T) {
	repo, err := os.ReadFile(specPath)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(repo, api.SpecYAML), "controlplane/internal/api/openapi.yaml is stale: run `make generate`")
}

// TestEveryOperationDeclaresItsRoles fails when an operation lacks
// x-edgeward-roles, names an unknown role, or lets an auditor call anything
// but a read; public operations must be reads with no credentials.
func TestEveryOperationDeclaresItsRoles(t *testing.T) {
	ix, err := api.Spec()
	require.NoError(t, err)
	require.NotEmpty(t, ix.Operations())
	for _, op := range ix.Operations() {
		if op.Public {
			assert.Empty(t, op.Roles, "%s: public operations name no roles", op.ID)
			assert.Equal(t, http.MethodGet, op.Method, "%s: only reads may be public", op.ID)
			assert.NotNil(t, op.Spec.Security, "%s: a public operation must say security: []", op.ID)
			continue
		}
		if op.AgentAuth {
			assert.Empty(t, op.Roles, "%s: agent operations name no roles", op.ID)
			assert.Contains(t, op.Path, "{agent_id}", "%s: an agent operation acts on the calling agent's own path", op.ID)
			assert.NotNil(t, op.Spec.Security, "%s: an agent operation must say security: [] (no bearer token)", op.ID)
			continue
		}
		assert.NotEmpty(t, op.Roles, "%s (%s %s) lacks %s", op.ID, op.Method, op.Path, api.ExtRoles)
		for _, r := range op.Roles {
			assert.True(t, caller.ValidRole(r), "%s: unknown role %q", op.ID, r)
			if r == caller.RoleAuditor {
				assert.True(t, api.IsRead(op.Method), "%s: auditors may not call %s", op.ID, op.Method)
			}
		}
		assert.NotNil(t, op.Spec.Responses.Default(), "%s: needs a default problem response", op.ID)
	}
}

func TestRoutingPrefersLiteralSegments(t *testing.T) {
	ix, err := api.Spec()
	require.NoError(t, err)
	op, params, _ := ix.Match("GET", "/api/v1/api-tokens/0193%2D4b7e")
	require.NotNil(t, op)
	assert.Equal(t, "getApiToken", op.ID)
	assert.Equal(t, "0193-4b7e", params["token_id"])
	op, _, allowed := ix.Match("PATCH", "/api/v1/api-tokens/x")
	assert.Nil(t, op)
	assert.Equal(t, []string{"DELETE", "GET"}, allowed)
	op, _, allowed = ix.Match("GET", "/api/v1/api-tokens/x/y")
	assert.Nil(t, op)
	assert.Empty(t, allowed)
}

// TestFixturesMatchTheirSchemas validates specs/fixtures/<Schema>[.variant].json
// against components.schemas.<Schema>, so the shapes a console is built
// against cannot drift from the contract.
func TestFixturesMatchTheirSchemas(t *testing.T) {
	ix, err := api.Spec()
	require.NoError(t, err)
	files, err := filepath.Glob("../../../specs/fixtures/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		name := strings.SplitN(filepath.Base(f), ".", 2)[0]
		t.Run(filepath.Base(f), func(t *testing.T) {
			schema, ok := ix.Doc.Components.Schemas[name]
			require.True(t, ok, "no schema %s for fixture %s", name, f)
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			var v any
			require.NoError(t, json.Unmarshal(b, &v))
			assert.NoError(t, schema.Value.VisitJSON(v, openapi3.MultiErrors()))
		})
	}
}
