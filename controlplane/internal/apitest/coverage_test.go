package apitest_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/apitest"
)

// TestEveryOperationIsExercised fails when an operation of the spec was not
// called by any test in this run. `make test` runs it after the whole suite,
// with EDGEWARD_API_COVERAGE_CHECK=1 and the directory the suite recorded
// into; on its own it has nothing to check and says so.
func TestEveryOperationIsExercised(t *testing.T) {
	dir := os.Getenv(apitest.CoverageDirEnv)
	if os.Getenv("EDGEWARD_API_COVERAGE_CHECK") != "1" || dir == "" {
		t.Skip("run by `make test` after the suite: needs EDGEWARD_API_COVERAGE_CHECK=1 and " + apitest.CoverageDirEnv)
	}
	index, err := api.Spec()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			op, status, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			if seen[op] == nil {
				seen[op] = map[string]bool{}
			}
			seen[op][status] = true
		}
	}
	var missing []string
	for _, op := range index.Operations() {
		statuses := seen[op.ID]
		if len(statuses) == 0 {
			missing = append(missing, op.ID)
			continue
		}
		var list []string
		for s := range statuses {
			list = append(list, s)
		}
		sort.Strings(list)
		t.Logf("%-22s %s", op.ID, strings.Join(list, " "))
	}
	if len(missing) > 0 {
		t.Fatalf("operations of specs/openapi.yaml that no test exercised: %s", strings.Join(missing, ", "))
	}
}
