package apitest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	"go.yaml.in/yaml/v3"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/apitest"
)

// TestRecordedResponsesPassASecondValidator runs a second OpenAPI 3.0
// validator over every response the suite recorded: pb33f's
// libopenapi-validator, with its own parser, router and JSON Schema engine,
// nothing shared with kin-openapi, reading `nullable` as OpenAPI 3.0.3
// defines it (see strictNullable). kin-openapi accepts things a strict
// validator refuses (a null where `nullable: true` stands beside `allOf`),
// and clients, proxies and generators in the wild are strict. `make test`
// runs it after the suite, with EDGEWARD_API_RESPONSES_CHECK=1 and the
// directory the suite recorded into; on its own it has nothing to check and
// says so.
func TestRecordedResponsesPassASecondValidator(t *testing.T) {
	dir := os.Getenv(apitest.ResponsesDirEnv)
	if os.Getenv("EDGEWARD_API_RESPONSES_CHECK") != "1" || dir == "" {
		t.Skip("run by `make test` after the suite: needs EDGEWARD_API_RESPONSES_CHECK=1 and " + apitest.ResponsesDirEnv)
	}
	recorded, err := apitest.ReadRecorded(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded) == 0 {
		t.Fatalf("no responses recorded in %s", dir)
	}
	checkWithSecondValidator(t, recorded)
}

// checkWithSecondValidator validates each recorded response, logs how many
// it checked, and fails t with every distinct failure (counted, with one
// example each).
func checkWithSecondValidator(t *testing.T, recorded []apitest.Recorded) {
	t.Helper()
	v := newSecondValidator(t)
	type failure struct {
		count   int
		example apitest.Recorded
	}
	failures := map[string]*failure{}
	operations := map[string]bool{}
	for _, r := range recorded {
		if r.Operation != "" {
			operations[r.Operation] = true
		}
		for _, msg := range v.check(r) {
			key := fmt.Sprintf("%s %s -> %d: %s", r.Method, orOutside(r), r.Status, msg)
			if f := failures[key]; f != nil {
				f.count++
			} else {
				failures[key] = &failure{count: 1, example: r}
			}
		}
	}
	failed := 0
	for _, f := range failures {
		failed += f.count
	}
	t.Logf("second validator (pb33f/libopenapi-validator) checked %d responses of %d operations: %d distinct failures in %d responses",
		len(recorded), len(operations), len(failures), failed)
	if len(failures) == 0 {
		return
	}
	keys := make([]string, 0, len(failures))
	for k := range failures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := failures[k]
		body := string(f.example.Body)
		if len(body) > 600 {
			body = body[:600] + "…"
		}
		t.Errorf("%dx %s; e.g. %s %s (%s): %s", f.count, k, f.example.Method, f.example.Path, f.example.Binary, body)
	}
}

func orOutside(r apitest.Recorded) string {
	switch {
	case r.Operation != "":
		return r.Operation
	case r.Status == http.StatusMethodNotAllowed:
		return "(a method the path lacks)"
	default:
		return "(outside the spec)"
	}
}

type secondValidator struct {
	index   *api.Index
	v       validator.Validator
	schemas schema_validation.SchemaValidator
	problem *base.Schema
}

func newSecondValidator(t *testing.T) *secondValidator {
	t.Helper()
	spec, err := strictNullable(api.SpecYAML)
	if err != nil {
		t.Fatalf("second validator: %v", err)
	}
	doc, err := libopenapi.NewDocument(spec)
	if err != nil {
		t.Fatalf("second validator: parse spec: %v", err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("second validator: build model: %v", err)
	}
	problem := model.Model.Components.Schemas.GetOrZero("Problem")
	if problem == nil {
		t.Fatal("second validator: no Problem schema")
	}
	// Without OpenAPI mode the validator takes each schema as the JSON
	// Schema strictNullable made of it, instead of rewriting `nullable` its
	// own, lenient way.
	opts := []config.Option{config.WithFormatAssertions(), config.WithoutOpenAPIMode()}
	v, errs := validator.NewValidator(doc, opts...)
	if len(errs) > 0 {
		t.Fatalf("second validator: %v", errs)
	}
	index, err := api.Spec()
	if err != nil {
		t.Fatal(err)
	}
	return &secondValidator{index: index, v: v, schemas: schema_validation.NewSchemaValidator(opts...), problem: problem.Schema()}
}

// strictNullable rewrites an OpenAPI 3.0 document so that a JSON Schema
// validator reads `nullable` exactly as OpenAPI 3.0.3 defines it: "A true
// value adds "null" to the allowed types specified by the type keyword, only
// if type is explicitly defined within the same Schema Object. Other Schema
// Object constraints retain their defined behavior, and therefore may
// disallow the use of null as a value." So `type: T, nullable: true` becomes
// `type: [T, "null"]`, and nothing else admits null: not a `nullable` beside
// `allOf` or `$ref` (the `allOf` still refuses null), not a nullable `enum`
// without null in it. libopenapi-validator's own OpenAPI mode is lenient
// about both (it adds a null branch beside `allOf`, and null to every
// nullable enum), as kin-openapi is; strict validators are not.
func strictNullable(spec []byte) ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(spec, &doc); err != nil {
		return nil, fmt.Errorf("parse spec: %w", err)
	}
	var walk func(any)
	walk = func(n any) {
		switch n := n.(type) {
		case map[string]any:
			if nullable, ok := n["nullable"].(bool); ok {
				delete(n, "nullable")
				if t, ok := n["type"].(string); ok && nullable {
					n["type"] = []any{t, "null"}
				}
			}
			for _, v := range n {
				walk(v)
			}
		case []any:
			for _, v := range n {
				walk(v)
			}
		}
	}
	walk(doc)
	return json.Marshal(doc)
}

// check returns why r breaks the spec, if it does. A response outside the
// spec (unknown path, or a method the path lacks) has no operation to check
// against; it must be a problem document.
func (s *secondValidator) check(r apitest.Recorded) []string {
	target := "https://localhost:8443" + r.Path
	if r.Query != "" {
		target += "?" + r.Query
	}
	req, err := http.NewRequest(r.Method, target, nil)
	if err != nil {
		return []string{err.Error()}
	}
	if r.Operation == "" && r.Status == http.StatusMethodNotAllowed {
		// A method the path lacks: the answer must be the 405 its
		// operations declare, so check it as one of theirs.
		if _, _, allowed := s.index.Match(r.Method, r.Path); len(allowed) > 0 {
			req.Method = allowed[0]
			r.Operation = "405 of " + allowed[0]
		}
	}
	if r.Operation == "" {
		if r.Header.Get("X-Request-Id") == "" {
			return []string{"no X-Request-Id header"}
		}
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt != "application/problem+json" {
			return []string{fmt.Sprintf("content type %q, not application/problem+json", mt)}
		}
		ok, errs := s.schemas.ValidateSchemaBytes(s.problem, r.Body)
		if ok {
			return nil
		}
		return messages(errs)
	}
	resp := &http.Response{
		StatusCode: r.Status, Header: r.Header, Request: req,
		Body: io.NopCloser(bytes.NewReader(r.Body)), ContentLength: int64(len(r.Body)),
	}
	ok, errs := s.v.ValidateHttpResponse(req, resp)
	if ok {
		return nil
	}
	return messages(errs)
}

// messages says what each error found: the message, and for a schema
// failure each failing field and why. Request paths and array indexes are
// left out, so that one mistake in the spec reads as one failure however
// many responses and items it hit.
func messages(errs []*liberrors.ValidationError) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		msg := requestPath.ReplaceAllString(e.Message, "")
		if e.Reason != "" && len(e.SchemaValidationErrors) == 0 {
			msg += ": " + e.Reason
		}
		var fields []string
		for _, f := range e.SchemaValidationErrors {
			field := f.Reason
			if f.FieldPath != "" {
				field = arrayIndex.ReplaceAllString(f.FieldPath, "[*]") + ": " + f.Reason
			}
			if !slices.Contains(fields, field) {
				fields = append(fields, field)
			}
		}
		sort.Strings(fields)
		for _, f := range fields {
			msg += "; " + f
		}
		out = append(out, strings.TrimSpace(msg))
	}
	return out
}

var (
	requestPath = regexp.MustCompile(` for '[^']*'`)
	arrayIndex  = regexp.MustCompile(`\[\d+\]`)
)

// TestSecondValidatorReadsNullableStrictly pins down how the second
// validator reads `nullable`, on a small document: as OpenAPI 3.0.3 says,
// not as lenient validators do.
func TestSecondValidatorReadsNullableStrictly(t *testing.T) {
	const spec = `
openapi: 3.0.3
info: {title: nullable, version: "1"}
paths: {}
components:
  schemas:
    Thing:
      type: object
      required: [id]
      properties:
        id: {type: string}
    NullValue:
      type: object
      nullable: true
      enum: [null]
    NullableBesideAllOf:
      type: object
      nullable: true
      allOf:
        - $ref: "#/components/schemas/Thing"
    NullableEnumWithoutNull:
      type: string
      nullable: true
      enum: [a, b]
    NullableEnumWithNull:
      type: string
      nullable: true
      enum: [a, b, null]
    NullableString:
      type: string
      nullable: true
    OneOfThingOrNull:
      oneOf:
        - $ref: "#/components/schemas/Thing"
        - $ref: "#/components/schemas/NullValue"
    Cases:
      type: object
      properties:
        NullableBesideAllOf: {$ref: "#/components/schemas/NullableBesideAllOf"}
        NullableEnumWithoutNull: {$ref: "#/components/schemas/NullableEnumWithoutNull"}
        NullableEnumWithNull: {$ref: "#/components/schemas/NullableEnumWithNull"}
        NullableString: {$ref: "#/components/schemas/NullableString"}
        OneOfThingOrNull: {$ref: "#/components/schemas/OneOfThingOrNull"}
        NullValue: {$ref: "#/components/schemas/NullValue"}
`
	strict, err := strictNullable([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(strict)
	if err != nil {
		t.Fatal(err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	// Each value is checked as a property of Cases: the validator skips a
	// document that is null as a whole.
	cases := model.Model.Components.Schemas.GetOrZero("Cases").Schema()
	schemas := schema_validation.NewSchemaValidator(config.WithoutOpenAPIMode())
	for _, c := range []struct {
		schema, body string
		valid        bool
	}{
		{"NullableBesideAllOf", `null`, false},
		{"NullableBesideAllOf", `{"id":"x"}`, true},
		{"NullableEnumWithoutNull", `null`, false},
		{"NullableEnumWithNull", `null`, true},
		{"NullableEnumWithNull", `"c"`, false},
		{"NullableString", `null`, true},
		{"OneOfThingOrNull", `null`, true},
		{"OneOfThingOrNull", `{"id":"x"}`, true},
		{"OneOfThingOrNull", `{}`, false},
		{"NullValue", `{}`, false},
	} {
		ok, errs := schemas.ValidateSchemaStringWithVersion(cases, fmt.Sprintf(`{%q: %s}`, c.schema, c.body), 3.0)
		if ok != c.valid {
			t.Errorf("%s with %s: valid %v, want %v (%v)", c.schema, c.body, ok, c.valid, messages(errs))
		}
	}
}

// TestSpecSaysNullTheStrictWay fails on every schema of the spec whose
// `nullable` a strict OpenAPI 3.0.3 validator reads differently from
// kin-openapi: `nullable` without a `type` beside it, or beside `allOf`,
// `oneOf`, `anyOf` or `$ref` (it admits nothing there), and a nullable
// `enum` without null in it. A field that is a referenced schema or null is
// `oneOf: [that schema, NullValue]`, with an `x-go-type` for the generator.
func TestSpecSaysNullTheStrictWay(t *testing.T) {
	var doc any
	if err := yaml.Unmarshal(api.SpecYAML, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, n any)
	walk = func(path string, n any) {
		switch n := n.(type) {
		case map[string]any:
			if nullable, _ := n["nullable"].(bool); nullable {
				if _, ok := n["type"]; !ok {
					t.Errorf("%s: nullable without a type admits nothing", path)
				}
				for _, k := range []string{"allOf", "oneOf", "anyOf", "$ref"} {
					if _, ok := n[k]; ok {
						t.Errorf("%s: nullable beside %s: the %s still refuses null; use oneOf: [schema, NullValue]", path, k, k)
					}
				}
				if enum, ok := n["enum"].([]any); ok && !slices.Contains(enum, nil) {
					t.Errorf("%s: a nullable enum must list null", path)
				}
			}
			if oneOf, ok := n["oneOf"].([]any); ok && slices.ContainsFunc(oneOf, isNullValueRef) {
				if _, ok := n["x-go-type"]; !ok {
					t.Errorf("%s: oneOf with NullValue needs x-go-type (e.g. \"*Schema\"), or oapi-codegen makes it a union", path)
				}
			}
			for k, v := range n {
				walk(path+"/"+k, v)
			}
		case []any:
			for i, v := range n {
				walk(fmt.Sprintf("%s/%d", path, i), v)
			}
		}
	}
	walk("#", doc)
}

func isNullValueRef(v any) bool {
	m, ok := v.(map[string]any)
	return ok && m["$ref"] == "#/components/schemas/NullValue"
}
