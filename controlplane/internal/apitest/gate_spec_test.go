package apitest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/edgeward/edgeward/controlplane/internal/api"
)

// TestSpecDeclaresWhatTheGateAnswers fails when the spec leaves out a status
// or header that the request gate (package httpx) answers for every
// operation, whatever its handler does: 405 with Allow for another method on
// the operation's path, 400 unexpected_body when an operation without a
// request body gets one, X-Request-Id on every response, and
// Idempotent-Replayed on the successes of operations that take an
// Idempotency-Key. Validators accept these under `default` anyway; declaring
// them is for clients and generators, and this test keeps them declared.
func TestSpecDeclaresWhatTheGateAnswers(t *testing.T) {
	ix, err := api.Spec()
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ix.Operations() {
		r405 := op.Spec.Responses.Status(http.StatusMethodNotAllowed)
		if r405 == nil || r405.Value == nil {
			t.Errorf("%s: no 405 (another method on %s)", op.ID, op.Path)
		} else if h := r405.Value.Headers["Allow"]; h == nil || h.Value == nil || !h.Value.Required {
			t.Errorf("%s: its 405 must require the Allow header", op.ID)
		}
		if !op.HasBody && op.Spec.Responses.Status(http.StatusBadRequest) == nil {
			t.Errorf("%s: no 400 (unexpected_body, for a body it does not take)", op.ID)
		}
		for status, resp := range op.Spec.Responses.Map() {
			if resp.Value == nil {
				continue
			}
			h := resp.Value.Headers["X-Request-Id"]
			if h == nil || h.Value == nil || !h.Value.Required {
				t.Errorf("%s %s: X-Request-Id must be a required header", op.ID, status)
			}
			replayed := resp.Value.Headers["Idempotent-Replayed"] != nil
			if op.Idempotent && strings.HasPrefix(status, "2") && !replayed {
				t.Errorf("%s %s: takes an Idempotency-Key, so its success can be a replay: declare Idempotent-Replayed", op.ID, status)
			}
			if !op.Idempotent && replayed {
				t.Errorf("%s %s: takes no Idempotency-Key, so it is never replayed", op.ID, status)
			}
		}
	}
}
