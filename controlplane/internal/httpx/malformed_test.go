package httpx_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/apitest"
)

// MalformedRoundsEnv sets how many rounds of random combined mutations
// TestEveryOperationSurvivesMalformedInput sends after its fixed ones
// (`make fuzz` sets it; `make test` sends only the fixed ones).
const MalformedRoundsEnv = "EDGEWARD_MALFORMED_ROUNDS"

// badValues stand in for one JSON value: each class of input that once
// made, or could make, a 5xx (NUL, invalid text, numbers Go or PostgreSQL
// cannot hold, wrong types, nulls, empties, huge and deep values).
var badValues = []string{
	`null`, `""`, `"\u0000"`, `"a\u0000b"`, `"\ud800"`, "\"\xff\xfe\"", `" "`,
	`5.0`, `5e0`, `-1`, `0`, `2147483648`, `9223372036854775807`, `9223372036854775808`, `-9223372036854775809`,
	`18446744073709551616`, `1e400`, `-0.0`, `0.5`,
	`true`, `[]`, `{}`, `[null]`, `[""]`, `["\u0000"]`, `[5.0]`, `[{}]`,
	`"` + strings.Repeat("a", 5000) + `"`, `"x"`, `"2026-02-30T25:61:00Z"`, `"0001-01-01T00:00:00Z"`, `"9999-12-31T23:59:59Z"`,
	`"00000000-0000-0000-0000-000000000000"`, `"not-a-uuid"`, `"::/0"`, `"0.0.0.0/0"`, `"https://127.0.0.1/"`,
	strings.Repeat("[", 70) + strings.Repeat("]", 70),
}

// badParams stand in for one query, path or header value.
var badParams = []string{
	"", "%00", "%ff", "%zz", "-1", "0", "99999999999999999999", "1e3", "5.0", "x", "true",
	"2026-13-45", "2026-02-30T25:61:00Z", "00000000-0000-0000-0000-000000000000", strings.Repeat("a", 3000),
	"nist-800-53-r5:IA-3", "IA-3", "a:b:c", `"v1"`, `W/"v1"`, "v1", `"v99999999999999999999"`, "*",
}

// malformedRequest is one request of the test.
type malformedRequest struct {
	method, path string
	body         apitest.Raw
	headers      map[string]string
	what         string
}

// TestEveryOperationSurvivesMalformedInput sends every operation of the
// spec malformed bodies, wrong types, boundary numbers, NUL and invalid
// UTF-8 in bodies, queries, paths and headers, against real resources of a
// real control plane. Every answer must be a response the spec describes,
// and none may be a 5xx.
func TestEveryOperationSurvivesMalformedInput(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	fx := newFixtures(t, env)
	agent := env.CertClient(t, fx.sighting.Agent.TLSCertificate())

	// Agent operations first, and destructive ones last, so the resources
	// every request aims at exist for as long as possible.
	ops := slices.Clone(env.Index.Operations())
	rank := map[string]int{"GET": 1, "PUT": 2, "PATCH": 3, "POST": 4, "DELETE": 5}
	sort.SliceStable(ops, func(i, j int) bool {
		ri, rj := rank[ops[i].Method], rank[ops[j].Method]
		if ops[i].AgentAuth {
			ri = 0
		}
		if ops[j].AgentAuth {
			rj = 0
		}
		return ri < rj
	})
	rounds, _ := strconv.Atoi(os.Getenv(MalformedRoundsEnv))
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	sent, byStatus := 0, map[int]int{}
	start := time.Now()
	for _, op := range ops {
		c := admin
		if op.AgentAuth {
			c = agent
		}
		reqs := fixedVariants(op, fx)
		for range rounds {
			reqs = append(reqs, randomVariant(op, fx, rng))
		}
		for _, req := range reqs {
			var opts []apitest.Option
			for k, v := range req.headers {
				opts = append(opts, apitest.Header(k, v))
			}
			var body any
			if req.body != nil {
				body = req.body
			}
			r := c.Do(req.method, req.path, body, opts...)
			sent++
			byStatus[r.Status]++
			if r.Status >= 500 {
				t.Errorf("%s %s (%s): %d %s\nbody: %.300s", req.method, req.path, req.what, r.Status, r.Body, req.body)
			}
		}
	}
	summary := fmt.Sprintf("malformed input: %d requests to %d operations in %v, %d answered 5xx; by status: %v",
		sent, len(ops), time.Since(start).Round(time.Millisecond), fivexx(byStatus), byStatus)
	t.Log(summary)
	if dir := os.Getenv(apitest.CoverageDirEnv); dir != "" {
		// make test prints the summaries after the run.
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(filepath.Join(dir, "malformed-input.summary"), []byte(summary+"\n"), 0o644)
	}
}

func fivexx(byStatus map[int]int) int {
	n := 0
	for status, count := range byStatus {
		if status >= 500 {
			n += count
		}
	}
	return n
}

// fixtures are real resources of the tenant that path parameters name.
type fixtures struct {
	sighting apitest.Sighting
	ids      map[string]string // path parameter name -> a real value
}

func newFixtures(t *testing.T, env *apitest.Env) *fixtures {
	admin := env.Client(t, env.AdminToken)
	fx := &fixtures{sighting: env.UnauthorizedDevice(t, "02:de:ad:be:ef:42", "198.51.100.142"), ids: map[string]string{}}
	create := func(path string, body any) string {
		var out struct {
			ID string `json:"id"`
		}
		r := admin.Do("POST", path, body)
		if r.Status >= 300 {
			t.Fatalf("fixture %s: %d %s", path, r.Status, r.Body)
		}
		r.JSON(t, &out)
		return out.ID
	}
	fx.ids["site_id"] = fx.sighting.SiteID
	fx.ids["alert_id"] = fx.sighting.AlertID
	fx.ids["asset_id"] = fx.sighting.AssetID
	fx.ids["agent_id"] = fx.sighting.Agent.AgentID
	fx.ids["ticket_id"] = create("/api/v1/tickets", map[string]any{"title": "fixture", "description": "d"})
	fx.ids["token_id"] = create("/api/v1/api-tokens", map[string]any{"name": "fixture", "role": "analyst"})
	fx.ids["control_id"] = "nist-800-53-r5:cm-8"
	fx.ids["policy_id"] = "unauthorized-device-response"
	var evidence struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	admin.Do("GET", "/api/v1/alerts/"+fx.sighting.AlertID+"/evidence", nil).JSON(t, &evidence)
	if len(evidence.Items) > 0 {
		fx.ids["evidence_id"] = evidence.Items[0].ID
	}
	return fx
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// path fills the operation's template with real ids, or with override for
// the parameter named in it.
func (fx *fixtures) path(op *api.Operation, override map[string]string) string {
	return pathParam.ReplaceAllStringFunc(op.Path, func(m string) string {
		name := m[1 : len(m)-1]
		if v, ok := override[name]; ok {
			return v
		}
		if v, ok := fx.ids[name]; ok {
			return url.PathEscape(v)
		}
		return uuid.NewString()
	})
}

// parameters of the operation, by location.
func parameters(op *api.Operation, in string) []*openapi3.Parameter {
	var out []*openapi3.Parameter
	for _, p := range op.Spec.Parameters {
		if p.Value != nil && p.Value.In == in {
			out = append(out, p.Value)
		}
	}
	return out
}

func requestSchema(op *api.Operation) *openapi3.Schema {
	if op.Spec.RequestBody == nil || op.Spec.RequestBody.Value == nil {
		return nil
	}
	mt := op.Spec.RequestBody.Value.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		return nil
	}
	return mt.Schema.Value
}

// fixedVariants are the deterministic malformed requests of op: each bad
// value in each body property (one level into nested objects and array
// items), whole bodies of the wrong shape, and each bad value in each path,
// query and header parameter, the rest of the request left plausible.
func fixedVariants(op *api.Operation, fx *fixtures) []malformedRequest {
	schema := requestSchema(op)
	base := malformedRequest{method: op.Method, path: fx.path(op, nil), headers: plausibleHeaders(op)}
	if schema != nil {
		base.body = mustJSON(skeleton(schema, fx, 0))
	}
	var out []malformedRequest
	if schema != nil {
		for _, whole := range []string{`null`, `[]`, `"x"`, `0`, `{}`, strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat(`}`, 70), "{\"\xff\":1}", `{"a":"\u0000"}`} {
			v := base
			v.body, v.what = apitest.Raw(whole), "whole body "+whole
			out = append(out, v)
		}
		for _, path := range propertyPaths(schema, nil, 0) {
			for _, bad := range badValues {
				v := base
				v.body, v.what = setPath(skeleton(schema, fx, 0), path, bad), fmt.Sprintf("%s = %.40s", strings.Join(path, "/"), bad)
				out = append(out, v)
			}
		}
	}
	for _, p := range parameters(op, "path") {
		for _, bad := range badParams {
			v := base
			v.path, v.what = fx.path(op, map[string]string{p.Name: escapeOrRaw(bad)}), "path "+p.Name+"="+bad
			if v.path == op.Path || strings.Contains(v.path, "//") {
				continue // an empty segment is another path
			}
			out = append(out, v)
		}
	}
	for _, p := range parameters(op, "query") {
		for _, bad := range badParams {
			v := base
			v.path, v.what = base.path+"?"+p.Name+"="+escapeOrRaw(bad), "query "+p.Name+"="+bad
			out = append(out, v)
		}
	}
	for _, p := range parameters(op, "header") {
		for _, bad := range badParams {
			if strings.ContainsAny(bad, "%") {
				continue // not a header value a client library sends
			}
			v := base
			v.headers = map[string]string{p.Name: bad}
			v.what = "header " + p.Name + "=" + bad
			out = append(out, v)
		}
	}
	return out
}

// randomVariant combines several bad values at once.
func randomVariant(op *api.Operation, fx *fixtures, rng *rand.Rand) malformedRequest {
	v := fixedVariants(op, fx)
	if len(v) == 0 {
		return malformedRequest{method: op.Method, path: fx.path(op, nil), what: "plain"}
	}
	r := v[rng.IntN(len(v))]
	if schema := requestSchema(op); schema != nil {
		body := skeleton(schema, fx, 0)
		for _, path := range propertyPaths(schema, nil, 0) {
			if rng.IntN(3) == 0 {
				body = mustParse(setPath(body, path, badValues[rng.IntN(len(badValues))]))
			}
		}
		r.body, r.what = mustJSON(body), r.what+" and random body values"
	}
	return r
}

func escapeOrRaw(v string) string {
	if strings.HasPrefix(v, "%") {
		return v // already an escape, possibly a broken one
	}
	return url.QueryEscape(v)
}

// plausibleHeaders fills required header parameters (If-Match) with a value
// of the right form, so requests get past them to the body.
func plausibleHeaders(op *api.Operation) map[string]string {
	h := map[string]string{}
	for _, p := range parameters(op, "header") {
		if p.Required {
			h[p.Name] = `"v1"`
		}
	}
	return h
}

// skeleton is a plausible value of schema: required properties only, enums
// at their first value, numbers at their minimum, ids of real fixtures.
func skeleton(s *openapi3.Schema, fx *fixtures, depth int) any {
	if s == nil || depth > 6 {
		return nil
	}
	for _, group := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
		for _, ref := range group {
			if ref.Value != nil && !(ref.Value.Type.Is("null")) {
				return skeleton(ref.Value, fx, depth+1)
			}
		}
	}
	if len(s.Enum) > 0 {
		return s.Enum[0]
	}
	switch {
	case s.Type.Is("object") || len(s.Properties) > 0:
		out := map[string]any{}
		for _, name := range s.Required {
			if p := s.Properties[name]; p != nil {
				out[name] = skeletonProperty(name, p.Value, fx, depth)
			}
		}
		return out
	case s.Type.Is("array"):
		if s.MinItems > 0 && s.Items != nil {
			return []any{skeleton(s.Items.Value, fx, depth+1)}
		}
		return []any{}
	case s.Type.Is("integer"), s.Type.Is("number"):
		if s.Min != nil {
			return *s.Min
		}
		return 1
	case s.Type.Is("boolean"):
		return true
	case s.Type.Is("string"):
		switch s.Format {
		case "uuid":
			return uuid.NewString()
		case "date-time":
			return time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		case "uri", "url":
			return "https://hooks.example.com/edgeward"
		}
		n := int(s.MinLength)
		if n < 1 {
			n = 1
		}
		return strings.Repeat("x", n)
	}
	return nil
}

func skeletonProperty(name string, s *openapi3.Schema, fx *fixtures, depth int) any {
	if v, ok := fx.ids[name]; ok && s != nil && s.Type.Is("string") {
		return v
	}
	return skeleton(s, fx, depth+1)
}

// propertyPaths lists the properties to corrupt: every property, and one
// level into object properties and array items (index 0).
func propertyPaths(s *openapi3.Schema, prefix []string, depth int) [][]string {
	if s == nil || depth > 1 {
		return nil
	}
	for _, group := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
		for _, ref := range group {
			if ref.Value != nil && !ref.Value.Type.Is("null") {
				return propertyPaths(ref.Value, prefix, depth)
			}
		}
	}
	var out [][]string
	names := make([]string, 0, len(s.Properties))
	for n := range s.Properties {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := append(slices.Clone(prefix), n)
		out = append(out, p)
		ps := s.Properties[n].Value
		if ps == nil {
			continue
		}
		if ps.Type.Is("array") && ps.Items != nil && ps.Items.Value != nil {
			out = append(out, append(slices.Clone(p), "0"))
			out = append(out, propertyPaths(ps.Items.Value, append(slices.Clone(p), "0"), depth+1)...)
		} else {
			out = append(out, propertyPaths(ps, p, depth+1)...)
		}
	}
	return out
}

// setPath puts the raw JSON value bad at path inside body, creating the
// objects and arrays on the way, and returns the encoded body. bad may be
// invalid JSON text on purpose (invalid UTF-8), so it is spliced as text.
func setPath(body any, path []string, bad string) apitest.Raw {
	const marker = `"@@MALFORMED@@"`
	var set func(v any, path []string) any
	set = func(v any, path []string) any {
		if len(path) == 0 {
			return json.RawMessage(marker)
		}
		if i, err := strconv.Atoi(path[0]); err == nil && i == 0 {
			arr, _ := v.([]any)
			if len(arr) == 0 {
				arr = []any{map[string]any{}}
			}
			arr = slices.Clone(arr)
			arr[0] = set(arr[0], path[1:])
			return arr
		}
		obj, _ := v.(map[string]any)
		out := map[string]any{}
		for k, val := range obj {
			out[k] = val
		}
		out[path[0]] = set(out[path[0]], path[1:])
		return out
	}
	encoded := string(mustJSON(set(body, path)))
	return apitest.Raw(strings.Replace(encoded, marker, bad, 1))
}

func mustJSON(v any) apitest.Raw {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func mustParse(raw apitest.Raw) any {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return map[string]any{} // an invalid value was spliced in; start over
	}
	return v
}
