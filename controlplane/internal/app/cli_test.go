package app

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
)

// cli runs the command line in this process, as the binary would.
func cli(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = Main(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestCLIGroupsPrintTheirUsage: tenant, token and audit list their
// subcommands with each one's flags when asked for help (exit 0), and when
// the subcommand is missing or unknown (exit 2).
func TestCLIGroupsPrintTheirUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"tenant", "-h"}, []string{"tenant create|list", "tenant create [flags]", "tenant list [flags]", "--name", "--json", "--admin-database-url", "EDGEWARD_ADMIN_DATABASE_URL"}},
		{[]string{"tenant", "--help"}, []string{"tenant create [flags]", "tenant list [flags]"}},
		{[]string{"tenant", "help"}, []string{"tenant create [flags]", "tenant list [flags]"}},
		{[]string{"help", "tenant"}, []string{"tenant create [flags]", "tenant list [flags]"}},
		{[]string{"token", "-h"}, []string{"token create [flags]", "--tenant", "tenant id or name", "--role", "tenant_admin, analyst, auditor, service_account", "--expires-in"}},
		{[]string{"audit", "-h"}, []string{"audit verify [flags]", "--tenant", "tenant id or name", "--json"}},
		{[]string{"tenant", "help", "create"}, []string{"tenant create [flags]", "--name"}},
		{[]string{"token", "create", "-h"}, []string{"token create [flags]", "--principal"}},
	} {
		_, errOut, code := cli(tc.args...)
		assert.Equal(t, 0, code, "%v: %s", tc.args, errOut)
		for _, w := range tc.want {
			assert.Contains(t, errOut, w, "%v", tc.args)
		}
	}
	_, errOut, code := cli("tenant", "help", "create")
	require.Equal(t, 0, code)
	assert.NotContains(t, errOut, "tenant list", "help SUB is about SUB")

	for args, want := range map[string]string{
		"tenant":        "tenant: name a subcommand: create, list",
		"tenant rename": `tenant: unknown subcommand "rename"`,
		"token":         "token: name a subcommand: create",
		"audit check":   `audit: unknown subcommand "check"`,
	} {
		_, errOut, code := cli(strings.Fields(args)...)
		assert.Equal(t, 2, code, args)
		assert.Contains(t, errOut, want, args)
		assert.Contains(t, errOut, "Flags (each also read", "%s: the usage lists the flags", args)
	}
}

// TestCLITakesTenantNamesAndListsRoles: --tenant takes a tenant's name
// (any case) as well as its id; a bad role or tenant says what there is.
func TestCLITakesTenantNamesAndListsRoles(t *testing.T) {
	d := dbtest.New(t)
	t.Setenv("EDGEWARD_ADMIN_DATABASE_URL", d.OwnerURL)
	_, errOut, code := cli("tenant", "create", "--name", "Demo")
	require.Equal(t, 0, code, errOut)

	out, errOut, code := cli("token", "create", "--tenant", "demo", "--role", "auditor", "--name", "audit 2026", "--json")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `"role": "auditor"`)

	_, errOut, code = cli("token", "create", "--tenant", "DEMO", "--role", "admin", "--name", "x")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "unknown role")
	assert.Contains(t, errOut, "must be one of tenant_admin, analyst, auditor, service_account")

	_, errOut, code = cli("token", "create", "--tenant", "umbrella", "--role", "analyst", "--name", "x")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `no such tenant with id or name "umbrella" (see: edgeward-controlplane tenant list)`)
	assert.NotContains(t, errOut, "UUID")

	out, errOut, code = cli("audit", "verify", "--tenant", "Demo")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "verified")
	_, errOut, code = cli("audit", "verify", "--tenant", "00000000-0000-7000-8000-000000000000")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no such tenant")
}

// TestCLIReadsTheDatabaseFromDemoEnv: after sourcing the demo.env that
// dev writes, operator commands find the demo database; a flag on the
// command line wins over the variables.
func TestCLIReadsTheDatabaseFromDemoEnv(t *testing.T) {
	d := dbtest.New(t)
	for _, k := range []string{"EDGEWARD_ADMIN_DATABASE_URL", "EDGEWARD_DATABASE_URL"} {
		t.Setenv(k, "") // whatever the test's environment holds
	}
	path := filepath.Join(t.TempDir(), "demo.env")
	require.NoError(t, writeEnvFile(path, map[string]string{"URL": "https://127.0.0.1:8443", "CA": "/tmp/ca.crt", "TOKEN": "ew_x",
		"TENANT_ID": "t", envName("database-url"): d.AppURL, envName("admin-database-url"): d.OwnerURL}))
	// What a shell's `. demo.env` leaves in the environment of the
	// programs it runs.
	sourced, err := exec.Command("sh", "-c", `. "$0" && env`, path).Output()
	require.NoError(t, err)
	env := map[string]string{}
	for _, line := range strings.Split(string(sourced), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	assert.Equal(t, d.OwnerURL, env["EDGEWARD_ADMIN_DATABASE_URL"])
	assert.Equal(t, d.AppURL, env["EDGEWARD_DATABASE_URL"])
	assert.NotContains(t, env, "TOKEN", "the token is not exported")
	for k, v := range env {
		if strings.HasPrefix(k, "EDGEWARD_") {
			t.Setenv(k, v)
		}
	}
	_, errOut, code := cli("tenant", "create", "--name", "demo")
	require.Equal(t, 0, code, errOut)
	out, errOut, code := cli("tenant", "list")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "demo")

	// Flags win over the variables, --admin-database-url first.
	broken := "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	t.Setenv("EDGEWARD_ADMIN_DATABASE_URL", broken)
	out, errOut, code = cli("tenant", "list", "--database-url", d.OwnerURL)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "demo")
	_, _, code = cli("tenant", "list", "--database-url", d.OwnerURL, "--admin-database-url", broken)
	assert.Equal(t, 1, code)

	t.Setenv("EDGEWARD_ADMIN_DATABASE_URL", "")
	t.Setenv("EDGEWARD_DATABASE_URL", "")
	_, errOut, code = cli("tenant", "list")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "EDGEWARD_ADMIN_DATABASE_URL")
	assert.Contains(t, errOut, "demo.env")
}
