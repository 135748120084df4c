package httpx_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/db"
)

// ticketCount is what a refused ticket or token request could have changed.
func rowCounts(t *testing.T, env *apitest.Env) string {
	t.Helper()
	ctx := context.Background()
	var s string
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT concat_ws('|', (SELECT count(*) FROM tickets), (SELECT count(*) FROM enrollment_tokens),
			(SELECT count(*) FROM sites), (SELECT count(*) FROM audit_events WHERE action NOT LIKE 'auth.%'))`).Scan(&s)
	}))
	return s
}

// TestDeepJSONIsRefusedCheaply: nesting once grew memory with the square of
// the depth (37 MB to 975 MB at depth 30 000; out of memory at 60 000).
// Any depth past the bound is now a fast 400, and the server's heap does
// not grow with the depth.
func TestDeepJSONIsRefusedCheaply(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	before := rowCounts(t, env)
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	heapBefore := m.HeapAlloc
	for _, body := range map[string]string{
		"depth 65":                       strings.Repeat("[", 65) + strings.Repeat("]", 65),
		"depth 10 000":                   strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000),
		"depth 30 000 (the report's)":    strings.Repeat("[", 30_000) + strings.Repeat("]", 30_000),
		"depth 1 000 000 (unterminated)": strings.Repeat("[", 1_000_000),
		"deep inside an object":          `{"title":"x","description":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat("}", 100) + `}`,
	} {
		start := time.Now()
		p := admin.Do("POST", "/api/v1/tickets", apitest.Raw(body)).Problem(t, http.StatusBadRequest)
		assert.Equal(t, "json_too_deep", p.Code)
		assert.Contains(t, p.Detail, "deeper than 64 levels")
		t.Logf("refused %d bytes in %v", len(body), time.Since(start))
	}
	runtime.ReadMemStats(&m)
	// The test process hosts the server: its heap must not have grown by
	// anything like the bodies' quadratic cost (hundreds of MB).
	assert.Less(t, int64(m.HeapAlloc)-int64(heapBefore), int64(64<<20), "heap growth")
	assert.Equal(t, before, rowCounts(t, env))
	// Depth 64, the bound itself, reaches the schema (and fails there).
	p := admin.Do("POST", "/api/v1/tickets", apitest.Raw(strings.Repeat("[", 64)+strings.Repeat("]", 64))).Problem(t, 422)
	assert.Equal(t, "validation_failed", p.Code)
}

// TestBadInputIsAClientError holds the line on the inputs that once made
// 500s: each is a 4xx problem that names what is wrong and changes nothing.
func TestBadInputIsAClientError(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	before := rowCounts(t, env)
	cases := []struct {
		name, method, path, body string
		status                   int
		code, pointer            string
	}{
		{"NUL in a description", "POST", "/api/v1/tickets", `{"title":"t","description":"a\u0000b"}`, 400, "invalid_text", "#/description"},
		{"NUL in a key", "POST", "/api/v1/tickets", `{"title":"t","desc\u0000":"x"}`, 400, "invalid_text", ""},
		{"NUL in a site name", "POST", "/api/v1/sites", `{"name":"x\u0000"}`, 400, "invalid_text", "#/name"},
		{"invalid UTF-8", "POST", "/api/v1/tickets", "{\"title\":\"t\",\"description\":\"caf\xe9\"}", 400, "invalid_text", ""},
		{"a lone surrogate", "POST", "/api/v1/tickets", `{"title":"t","description":"\ud800"}`, 400, "invalid_text", ""},
		{"integer written 5.0", "POST", "/api/v1/enrollment-tokens", `{"name":"t","max_uses":5.0}`, 422, "validation_failed", "#/max_uses"},
		{"integer written 5e0", "POST", "/api/v1/enrollment-tokens", `{"name":"t","max_uses":5e0}`, 422, "validation_failed", "#/max_uses"},
		{"expiry written 3600.0", "POST", "/api/v1/enrollment-tokens", `{"name":"t","expires_in_seconds":3600.0}`, 422, "validation_failed", "#/expires_in_seconds"},
		{"integer past int64", "POST", "/api/v1/enrollment-tokens", `{"name":"t","max_uses":99999999999999999999}`, 422, "validation_failed", "#/max_uses"},
		{"q=%00 on assets", "GET", "/api/v1/assets?q=%00", "", 400, "invalid_parameter", ""},
		{"q=%ff on assets", "GET", "/api/v1/assets?q=%ff", "", 400, "invalid_parameter", ""},
		{"q=%00 on controls", "GET", "/api/v1/compliance/controls?q=%00", "", 400, "invalid_parameter", ""},
		{"q=%ff on controls", "GET", "/api/v1/compliance/controls?q=%ff", "", 400, "invalid_parameter", ""},
		{"a bad escape", "GET", "/api/v1/assets?q=%zz", "", 400, "invalid_parameter", ""},
		{"NUL in a path parameter", "GET", "/api/v1/compliance/controls/nist%00", "", 400, "invalid_parameter", ""},
		{"a cursor holding NUL", "GET", "/api/v1/alerts?cursor=" + base64.RawURLEncoding.EncodeToString([]byte(`{"id":"\u0000"}`)), "", 400, "invalid_cursor", ""},
		{"a POST without a body", "POST", "/api/v1/tickets", "", 400, "malformed_json", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = apitest.Raw(tc.body)
			}
			p := admin.Do(tc.method, tc.path, body).Problem(t, tc.status)
			assert.Equal(t, tc.code, p.Code, p.Detail)
			if tc.pointer != "" {
				require.NotEmpty(t, p.Errors, p.Detail)
				assert.Equal(t, tc.pointer, p.Errors[0].Pointer)
			}
		})
	}
	t.Run("a POST without a body or content type says a body is required", func(t *testing.T) {
		p := admin.Do("POST", "/api/v1/tickets", nil).Problem(t, 400)
		assert.Contains(t, p.Detail, "a JSON body is required")
	})
	assert.Equal(t, before, rowCounts(t, env), "refused requests changed nothing")
}

// TestEmptyPolicyListsPutASiteBackToDenyAll: empty lists were sent to
// PostgreSQL as NULL (a 500), so an admin could not undo a policy.
func TestEmptyPolicyListsPutASiteBackToDenyAll(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	var site struct {
		ID string `json:"id"`
	}
	admin.Do("POST", "/api/v1/sites", map[string]any{"name": "hq"}).JSON(t, &site)
	path := "/api/v1/discovery/policies/" + site.ID
	r := admin.Do("GET", path, nil)
	policy := map[string]any{"allowed_cidrs": []string{"10.0.0.0/8"}, "allowed_methods": []string{"passive_neighbor"},
		"collector_agent_ids": []string{}, "observation_retention_days": 30, "allowlist": []any{}}
	r = admin.Do("PUT", path, policy, apitest.Header("If-Match", r.Header.Get("ETag")))
	require.Equal(t, 200, r.Status, string(r.Body))
	policy["allowed_cidrs"], policy["allowed_methods"] = []string{}, []string{}
	r = admin.Do("PUT", path, policy, apitest.Header("If-Match", r.Header.Get("ETag")))
	require.Equal(t, 200, r.Status, string(r.Body))
	var got struct {
		AllowedCidrs   []string `json:"allowed_cidrs"`
		AllowedMethods []string `json:"allowed_methods"`
	}
	r.JSON(t, &got)
	assert.Empty(t, got.AllowedCidrs)
	assert.Empty(t, got.AllowedMethods)
}

// TestCursorsAreBoundToTheirList: a cursor of one list given to another, or
// to the same list with other filters, or altered, is refused; it once
// returned a shifted or empty page.
func TestCursorsAreBoundToTheirList(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	for i := range 3 {
		admin.Do("POST", "/api/v1/tickets", map[string]any{"title": fmt.Sprintf("t%d", i), "description": "d"})
	}
	var page struct {
		Items      []map[string]any `json:"items"`
		NextCursor *string          `json:"next_cursor"`
	}
	admin.Do("GET", "/api/v1/tickets?limit=1", nil).JSON(t, &page)
	require.NotNil(t, page.NextCursor)
	cursor := *page.NextCursor

	// Its own list, with another page size, takes it.
	admin.Do("GET", "/api/v1/tickets?limit=2&cursor="+cursor, nil).JSON(t, &page)
	assert.Len(t, page.Items, 2)

	var audit struct {
		NextCursor *string `json:"next_cursor"`
	}
	admin.Do("GET", "/api/v1/audit/events?limit=1", nil).JSON(t, &audit)
	require.NotNil(t, audit.NextCursor)
	tampered := []byte(cursor)
	tampered[2] ^= 1
	for name, path := range map[string]string{
		"a tickets cursor on alerts":        "/api/v1/alerts?cursor=" + cursor,
		"an audit cursor on alerts":         "/api/v1/alerts?cursor=" + *audit.NextCursor,
		"an audit cursor on tickets":        "/api/v1/tickets?cursor=" + *audit.NextCursor,
		"the same list with another filter": "/api/v1/tickets?status=open&cursor=" + cursor,
		"an altered cursor":                 "/api/v1/tickets?cursor=" + string(tampered),
		"a cursor without its signature":    "/api/v1/tickets?cursor=" + strings.Split(cursor, ".")[0],
		"a cursor made up by the client":    "/api/v1/tickets?cursor=" + base64.RawURLEncoding.EncodeToString([]byte(`{"id":"00000000-0000-0000-0000-000000000000"}`)),
		"a cursor with bytes added":         "/api/v1/tickets?cursor=" + cursor + "x",
	} {
		t.Run(name, func(t *testing.T) {
			p := admin.Do("GET", path, nil).Problem(t, 400)
			assert.Equal(t, "invalid_cursor", p.Code)
		})
	}

	// Another replica (same deployment keys) takes the cursor.
	replica := env.StartReplica(t).Client(t, env.AdminToken)
	replica.Do("GET", "/api/v1/tickets?limit=2&cursor="+cursor, nil).JSON(t, &page)
	assert.Len(t, page.Items, 2)
}
