package etag

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

func TestCheck(t *testing.T) {
	for header, want := range map[string]int{
		`"v2"`:             0,
		`W/"v2"`:           0,
		`*`:                0,
		`"v1", "v2"`:       0,
		` "v1" ,, "v2" `:   0,
		`"v1"`:             http.StatusPreconditionFailed,
		`"a,b", "v3"`:      http.StatusPreconditionFailed,
		`v2`:               http.StatusBadRequest,
		`"v2`:              http.StatusBadRequest,
		`v2"`:              http.StatusBadRequest,
		`"v 2"`:            http.StatusBadRequest,
		`"v1", v2`:         http.StatusBadRequest,
		`W/v2`:             http.StatusBadRequest,
		`"v2"x`:            http.StatusBadRequest,
		`'v2'`:             http.StatusBadRequest,
		"":                 http.StatusPreconditionRequired,
		"  ":               http.StatusPreconditionRequired,
		`"v2" "v1"`:        http.StatusBadRequest,
		`"v2", *`:          0,
		`"v\u00e92", "v2"`: 0, // obs-text is allowed in a tag
	} {
		err := Check(&header, 2)
		if want == 0 {
			assert.NoError(t, err, header)
			continue
		}
		p, ok := problem.As(err)
		require.True(t, ok, header)
		assert.Equal(t, want, p.Status, header)
	}
	assert.Equal(t, http.StatusPreconditionRequired, mustProblem(t, Check(nil, 2)).Status)
}

// TestUnquotedTagSaysHowToQuoteIt: `If-Match: v2` used to be called an
// older version whose current one is "v2".
func TestUnquotedTagSaysHowToQuoteIt(t *testing.T) {
	h := "v2"
	p := mustProblem(t, Check(&h, 2))
	assert.Equal(t, http.StatusBadRequest, p.Status)
	assert.Equal(t, problem.CodeInvalidParameter, p.Code)
	assert.Equal(t, `If-Match must be the ETag as the read answered it, in double quotes (RFC 9110 entity-tag): If-Match: "v2", not v2`, p.Detail)
	assert.NotContains(t, p.Detail, "older version")
	require.Len(t, p.Errors, 1)
	assert.Equal(t, "If-Match", p.Errors[0].Parameter)
	assert.Equal(t, `"v2"`, p.Header.Get("ETag"))
}

func mustProblem(t *testing.T, err error) *problem.Problem {
	t.Helper()
	p, ok := problem.As(err)
	require.True(t, ok, "%v", err)
	return p
}
