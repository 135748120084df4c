package api

import (
	_ "embed"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
)

// Extension names the control plane reads from specs/openapi.yaml.
const (
	// ExtRoles lists the roles that may call an operation.
	ExtRoles = "x-edgeward-roles"
	// ExtPublic marks an operation that needs no credential (health, metrics).
	ExtPublic = "x-edgeward-public"
	// ExtAuth names a credential other than a bearer token; the only value
	// is "agent-certificate": the agent's mutual-TLS client certificate.
	ExtAuth = "x-edgeward-auth"
	// AuthAgentCertificate is the ExtAuth value for agent operations.
	AuthAgentCertificate = "agent-certificate"
)

// IdempotencyKeyHeader is the request header that makes a retry safe. An
// operation takes it when the spec declares it as a header parameter
// (components/parameters/IdempotencyKey); the gate then answers a retry with
// the first response instead of running it again.
const IdempotencyKeyHeader = "Idempotency-Key"

func init() {
	// kin-openapi checks date-time and int formats by default; ids are UUIDs.
	openapi3.DefineStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562))
}

// Operation is one method on one path of the spec, with the facts the HTTP
// layer enforces.
type Operation struct {
	ID     string
	Method string
	Path   string // the spec's path template, e.g. /api/v1/api-tokens/{token_id}
	Roles  []string
	Public bool
	// AgentAuth marks operations authenticated by an agent certificate.
	AgentAuth bool
	HasBody   bool
	// BodyRequired is false for operations whose body may be omitted.
	BodyRequired bool
	Spec         *openapi3.Operation
	PathItem     *openapi3.PathItem

	// Idempotent marks operations that take an Idempotency-Key header.
	Idempotent bool

	segments []string
}

// Allows reports whether role may call the operation.
func (o *Operation) Allows(role string) bool {
	return o.Public || slices.Contains(o.Roles, role)
}

// Route is the kin-openapi route of the operation, for request and response
// validation.
func (o *Operation) Route(doc *openapi3.T) *routers.Route {
	return &routers.Route{Spec: doc, Path: o.Path, PathItem: o.PathItem, Method: o.Method, Operation: o.Spec}
}

// Index is the parsed spec with its operations in a form the server can
// enforce: routing to an operation, its roles and its public flag.
type Index struct {
	Doc *openapi3.T
	ops []*Operation
}

// SpecYAML is specs/openapi.yaml, copied here by `make generate` so the binary
// carries the exact contract it enforces (a test checks the copy is current).
//
//go:embed openapi.yaml
var SpecYAML []byte

var (
	loadOnce sync.Once
	loaded   *Index
	loadErr  error
)

// Spec returns the index of the spec embedded in this binary.
func Spec() (*Index, error) {
	loadOnce.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(SpecYAML)
		if err == nil {
			err = doc.Validate(openapi3.NewLoader().Context)
		}
		if err != nil {
			loadErr = fmt.Errorf("load embedded spec: %w", err)
			return
		}
		loaded, loadErr = NewIndex(doc)
	})
	return loaded, loadErr
}

// NewIndex indexes doc. It fails when an operation lacks an operationId or
// declares its roles in a form the server cannot read.
func NewIndex(doc *openapi3.T) (*Index, error) {
	ix := &Index{Doc: doc}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				return nil, fmt.Errorf("%s %s has no operationId", method, path)
			}
			o := &Operation{
				ID:           op.OperationID,
				Method:       method,
				Path:         path,
				Spec:         op,
				PathItem:     item,
				HasBody:      op.RequestBody != nil,
				BodyRequired: op.RequestBody != nil && op.RequestBody.Value != nil && op.RequestBody.Value.Required,
				segments:     strings.Split(strings.TrimPrefix(path, "/"), "/"),
			}
			if v, ok := op.Extensions[ExtPublic]; ok {
				b, isBool := v.(bool)
				if !isBool {
					return nil, fmt.Errorf("%s: %s must be a boolean", o.ID, ExtPublic)
				}
				o.Public = b
			}
			if v, ok := op.Extensions[ExtAuth]; ok {
				if v != AuthAgentCertificate {
					return nil, fmt.Errorf("%s: %s must be %q", o.ID, ExtAuth, AuthAgentCertificate)
				}
				o.AgentAuth = true
			}
			for _, p := range append(slices.Clone(item.Parameters), op.Parameters...) {
				if p.Value != nil && p.Value.In == openapi3.ParameterInHeader && strings.EqualFold(p.Value.Name, IdempotencyKeyHeader) {
					o.Idempotent = true
				}
			}
			if o.Idempotent && (IsRead(method) || o.Public || o.AgentAuth) {
				// Keys belong to a principal; reads need none.
				return nil, fmt.Errorf("%s: only mutations called with a bearer token take %s", o.ID, IdempotencyKeyHeader)
			}
			if v, ok := op.Extensions[ExtRoles]; ok {
				list, isList := v.([]any)
				if !isList {
					return nil, fmt.Errorf("%s: %s must be a list of role names", o.ID, ExtRoles)
				}
				for _, r := range list {
					s, isString := r.(string)
					if !isString {
						return nil, fmt.Errorf("%s: %s must be a list of role names", o.ID, ExtRoles)
					}
					o.Roles = append(o.Roles, s)
				}
			}
			ix.ops = append(ix.ops, o)
		}
	}
	sort.Slice(ix.ops, func(i, j int) bool { return ix.ops[i].ID < ix.ops[j].ID })
	return ix, nil
}

// Operations lists every operation, sorted by id.
func (ix *Index) Operations() []*Operation { return ix.ops }

// Operation returns the operation with the given id, or nil.
func (ix *Index) Operation(id string) *Operation {
	for _, o := range ix.ops {
		if o.ID == id {
			return o
		}
	}
	return nil
}

// AllowedFor lists the ids of the operations role may call, sorted.
func (ix *Index) AllowedFor(role string) []string {
	var ids []string
	for _, o := range ix.ops {
		if !o.Public && !o.AgentAuth && o.Allows(role) {
			ids = append(ids, o.ID)
		}
	}
	return ids
}

// Match finds the operation for a request. On a path the spec knows but a
// method it does not, op is nil and allowed lists the path's methods (for a
// 405); on an unknown path both are empty. Literal segments win over
// parameters, so /audit/events beats /audit/{id}.
func (ix *Index) Match(method, escapedPath string) (op *Operation, params map[string]string, allowed []string) {
	if !strings.HasPrefix(escapedPath, "/") {
		return nil, nil, nil
	}
	segs := strings.Split(strings.TrimPrefix(escapedPath, "/"), "/")
	bestScore := -1
	var bestPath string
	for _, o := range ix.ops {
		score, ok := matchSegments(o.segments, segs)
		if !ok || score < bestScore {
			continue
		}
		if score > bestScore {
			bestScore, bestPath = score, o.Path
			op, params, allowed = nil, nil, nil
		}
		if o.Path != bestPath {
			continue
		}
		allowed = append(allowed, o.Method)
		if o.Method == method {
			op = o
		}
	}
	if op == nil {
		sort.Strings(allowed)
		return nil, nil, allowed
	}
	params = map[string]string{}
	for i, s := range op.segments {
		if name, isParam := paramName(s); isParam {
			v, err := url.PathUnescape(segs[i])
			if err != nil {
				return nil, nil, nil
			}
			params[name] = v
		}
	}
	return op, params, nil
}

func matchSegments(tmpl, segs []string) (score int, ok bool) {
	if len(tmpl) != len(segs) {
		return 0, false
	}
	for i, t := range tmpl {
		if _, isParam := paramName(t); isParam {
			if segs[i] == "" {
				return 0, false
			}
			continue
		}
		if t != segs[i] {
			return 0, false
		}
		score++
	}
	return score, true
}

func paramName(seg string) (string, bool) {
	if len(seg) > 2 && seg[0] == '{' && seg[len(seg)-1] == '}' {
		return seg[1 : len(seg)-1], true
	}
	return "", false
}

// IsRead reports whether method only reads.
func IsRead(method string) bool {
	return method == http.MethodGet || method == http.MethodHead
}
