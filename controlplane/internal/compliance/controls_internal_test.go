package compliance

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// TestAControlOfSeveralFrameworksMustBeNamedWithOne: the catalog's keys are
// unique today, but a control written without its framework that two
// frameworks have is not guessed.
func TestAControlOfSeveralFrameworksMustBeNamedWithOne(t *testing.T) {
	_, err := pickControl("AC-1", []string{"nist-800-53-r4:ac-1", "nist-800-53-r5:ac-1"})
	p, ok := problem.As(err)
	require.True(t, ok)
	assert.Equal(t, http.StatusBadRequest, p.Status)
	assert.Equal(t, problem.CodeInvalidParameter, p.Code)
	assert.Contains(t, p.Detail, `"AC-1" names a control in several frameworks (nist-800-53-r4:ac-1, nist-800-53-r5:ac-1)`)
	assert.Equal(t, "control_id", p.Errors[0].Parameter)

	id, err := pickControl("AC-1", []string{"nist-800-53-r5:ac-1"})
	require.NoError(t, err)
	assert.Equal(t, "nist-800-53-r5:ac-1", id)
	assert.Equal(t, "nist-800-53-r5:cm-8.3", normalizeControl(" NIST-800-53-R5:CM-8 (3) "))
}
