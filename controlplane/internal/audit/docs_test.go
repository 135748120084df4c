package audit_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
)

const auditDoc = "../../../docs/api/audit.md"

// docSection returns the lines of doc after the line starting with heading,
// up to the next heading.
func docSection(t *testing.T, heading string) []string {
	t.Helper()
	b, err := os.ReadFile(auditDoc)
	require.NoError(t, err)
	var out []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, heading):
			in = true
		case in && strings.HasPrefix(line, "#"):
			return out
		case in:
			out = append(out, line)
		}
	}
	require.True(t, in, "%s has no section %q", auditDoc, heading)
	return out
}

// codeActions finds the action of every audit.Entry literal in the control
// plane's code: exact names, and prefixes ("alert." + kind) where the rest
// is computed.
func codeActions(t *testing.T) (exact, prefixes map[string]string) {
	t.Helper()
	exact, prefixes = map[string]string{}, map[string]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		// String literals assigned to each name in this file, for actions
		// held in a variable.
		assigned := map[string][]string{}
		ast.Inspect(f, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == len(as.Rhs) {
				for i, l := range as.Lhs {
					if id, ok := l.(*ast.Ident); ok {
						if s, ok := stringLit(as.Rhs[i]); ok {
							assigned[id.Name] = append(assigned[id.Name], s)
						}
					}
				}
			}
			return true
		})
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok || !isEntryType(lit.Type) {
				return true
			}
			for _, el := range lit.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok || !isIdent(kv.Key, "Action") {
					continue
				}
				where := fset.Position(kv.Pos()).String()
				switch v := kv.Value.(type) {
				case *ast.BasicLit:
					s, _ := stringLit(v)
					exact[s] = where
				case *ast.BinaryExpr:
					if s, ok := stringLit(v.X); ok && v.Op == token.ADD {
						prefixes[s] = where
					} else {
						t.Errorf("%s: cannot tell which audit action this is", where)
					}
				case *ast.Ident:
					if len(assigned[v.Name]) == 0 {
						t.Errorf("%s: cannot tell which audit action %s is", where, v.Name)
					}
					for _, s := range assigned[v.Name] {
						exact[s] = where
					}
				default:
					t.Errorf("%s: cannot tell which audit action this is", where)
				}
			}
			return true
		})
		return nil
	})
	require.NoError(t, err)
	return exact, prefixes
}

func isEntryType(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.SelectorExpr:
		return isIdent(x.X, "audit") && x.Sel.Name == "Entry"
	case *ast.Ident:
		return x.Name == "Entry"
	}
	return false
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// TestDocsListEveryAuditAction: the action table of docs/api/audit.md names
// every action the code records, and nothing the code does not.
func TestDocsListEveryAuditAction(t *testing.T) {
	exact, prefixes := codeActions(t)
	require.Contains(t, exact, "tenant.created", "the code scan found nothing")

	actionRE := regexp.MustCompile("`([a-z_]+\\.[a-z_]+)`")
	documented := map[string]bool{}
	for _, line := range docSection(t, "Actions so far") {
		if strings.HasPrefix(line, "| ") {
			for _, m := range actionRE.FindAllStringSubmatch(line, -1) {
				documented[m[1]] = true
			}
		}
	}
	for action, where := range exact {
		assert.True(t, documented[action], "%s records %s, which %s does not list", where, action, auditDoc)
	}
	for prefix, where := range prefixes {
		found := false
		for d := range documented {
			found = found || strings.HasPrefix(d, prefix)
		}
		assert.True(t, found, "%s records %s…, and %s lists none of them", where, prefix, auditDoc)
	}
	var stale []string
	for d := range documented {
		ok := exact[d] != ""
		for prefix := range prefixes {
			ok = ok || strings.HasPrefix(d, prefix)
		}
		if !ok {
			stale = append(stale, d)
		}
	}
	sort.Strings(stale)
	assert.Empty(t, stale, "%s lists actions no code records", auditDoc)
}

// TestDocsShowTheHashedOccurredAt: the doc's examples of the API's
// occurred_at and the hashed form are what the API writes and what the
// chain hashes, and its Go layout formats them that way.
func TestDocsShowTheHashedOccurredAt(t *testing.T) {
	section := docSection(t, "### `occurred_at` in the API is not the hashed form")
	rowRE := regexp.MustCompile("^\\| `([^`]+)` \\| `([^`]+)` \\|$")
	layoutRE := regexp.MustCompile(`Format\("([^"]+)"\)`)
	var layout string
	for _, line := range section {
		if m := layoutRE.FindStringSubmatch(line); m != nil {
			layout = m[1]
		}
	}
	require.NotEmpty(t, layout, "the doc shows the Go layout")
	differ, rows := 0, 0
	for _, line := range section {
		m := rowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rows++
		api, hashed := m[1], m[2]
		at, err := time.Parse(time.RFC3339Nano, api)
		require.NoError(t, err, api)
		// What the API writes (encoding/json writes time.Time as RFC 3339 with nanoseconds).
		b, err := at.MarshalJSON()
		require.NoError(t, err)
		assert.Equal(t, `"`+api+`"`, string(b), "the API does not write %s so", api)
		ev := audit.Event{TenantID: uuid.New(), Seq: 1, ID: uuid.New(), OccurredAt: at, SchemeVersion: 1, Details: json.RawMessage(`{}`), PrevHash: audit.GenesisHash}
		canon, err := ev.Canonical()
		require.NoError(t, err)
		assert.Contains(t, string(canon), `"occurred_at":"`+hashed+`"`, "the chain does not hash %s as %s", api, hashed)
		if api != hashed {
			differ++
		}
		assert.Equal(t, hashed, at.UTC().Format(layout), "the doc's Go layout")
	}
	assert.GreaterOrEqual(t, rows, 3, "the doc's table of occurred_at examples")
	assert.GreaterOrEqual(t, differ, 2, "the doc shows where the API's form and the hashed form differ")
}
