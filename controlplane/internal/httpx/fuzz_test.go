package httpx_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/httpx"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// adminAuth lets every request in as a tenant admin, so the fuzzer spends
// its time past authentication, in the parts of the gate that read input.
type adminAuth struct{}

func (adminAuth) Authenticate(r *http.Request) (context.Context, error) {
	return caller.With(r.Context(), caller.Caller{TenantID: uuid.New(), PrincipalID: uuid.New(), TokenID: uuid.New(), Role: caller.RoleTenantAdmin}), nil
}

func (adminAuth) RecordDenied(context.Context, string, *http.Request) error { return nil }

func (adminAuth) AuthenticateAgent(*http.Request) (context.Context, error) {
	return nil, problem.New(http.StatusUnauthorized, "agent_certificate_missing", "no certificate")
}

// FuzzGate sends the request gate arbitrary paths, queries, content types
// and bodies for every operation of the spec. Whatever arrives, the gate
// answers with a problem or passes the request on; it never fails (5xx)
// and never panics. `make test` runs the seed corpus; `make fuzz` searches.
func FuzzGate(f *testing.F) {
	index, err := api.Spec()
	if err != nil {
		f.Fatal(err)
	}
	ops := index.Operations()
	seeds := []struct {
		param, query, contentType string
		body                      []byte
	}{
		{uuid.NewString(), "", "application/json", []byte(`{}`)},
		{"x", "limit=5&cursor=abc", "application/json", []byte(`{"name":"a\u0000"}`)},
		{"%00", "q=%ff", "application/json", []byte(strings.Repeat("[", 200))},
		{"%zz", "since=tomorrow", "text/plain", []byte("\xff\xfe")},
		{"nist-800-53-r5:ac-2", "limit=1e3", "application/json; charset=utf-8", []byte(`{"a":1,"a":2}`)},
		{uuid.NewString(), "status=open&status=", "application/json", []byte(`{"max_uses":5.0,"seq":18446744073709551616}`)},
	}
	for i, s := range seeds {
		for j := range ops {
			if (i+j)%7 == 0 {
				f.Add(uint16(j), s.param, s.query, s.contentType, s.body)
			}
		}
	}
	gate := httpx.Handler(httpx.Config{Index: index, Auth: adminAuth{}, AgentAuth: adminAuth{}},
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{}`))
		}))
	f.Fuzz(func(t *testing.T, opIndex uint16, param, query, contentType string, body []byte) {
		op := ops[int(opIndex)%len(ops)]
		target := pathParam.ReplaceAllLiteralString(op.Path, param)
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(op.Method, "https://edgeward.test"+target, strings.NewReader(string(body)))
		if err != nil {
			return // not a request a client could send
		}
		req.RemoteAddr = "192.0.2.1:1234"
		req.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		gate.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %q with %q (%q): %d %s", op.Method, target, body, contentType, w.Code, w.Body.String())
		}
	})
}
