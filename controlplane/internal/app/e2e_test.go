package app_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
)

// binary and agentBinary are the real programs, built for these tests.
var binary, agentBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgeward-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "edgeward-controlplane")
	agentBinary = filepath.Join(dir, "edgeward-agent")
	for out, pkg := range map[string]string{
		binary:      "github.com/edgeward/edgeward/controlplane/cmd/edgeward-controlplane",
		agentBinary: "github.com/edgeward/edgeward/agent/cmd/edgeward-agent",
	} {
		build := exec.Command("go", "build", "-race", "-o", out, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg+":", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// run executes the binary to completion and returns its output and exit code.
func run(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runProgram(t, binary, env, args...)
}

func runProgram(t *testing.T, program string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(program, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code == -1 {
		t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// process is a long-running binary with its output captured.
type process struct {
	cmd    *exec.Cmd
	stdout *apitest.SyncBuffer
	stderr *apitest.SyncBuffer
	done   chan error
}

func start(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	return startProgram(t, binary, env, args...)
}

func startProgram(t *testing.T, program string, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(program, args...), stdout: &apitest.SyncBuffer{}, stderr: &apitest.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		require.NoError(t, err, "exit after SIGTERM\nstderr: %s", p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit 60s after SIGTERM\nstderr: %s", p.stderr.String())
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func httpsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// get calls the API like curl and validates the response against the spec.
func get(t *testing.T, c *http.Client, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	_, err = apitest.Validate(req, nil, resp.StatusCode, resp.Header, body)
	require.NoError(t, err, "response to GET %s does not match the spec: %s", url, body)
	return resp.StatusCode, body
}

// waitReady polls /readyz until the server answers, with a deadline.
func waitReady(t *testing.T, c *http.Client, base string, p *process) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			t.Fatalf("server exited: %v\nstderr: %s", err, p.stderr.String())
		default:
		}
		if resp, err := c.Get(base + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not ready within 60s\nstderr: %s", p.stderr.String())
}

func TestBinaryMigrateBootstrapServeAndStop(t *testing.T) {
	d := dbtest.New(t)
	admin := []string{"EDGEWARD_ADMIN_DATABASE_URL=" + d.OwnerURL}

	for i := 0; i < 2; i++ {
		out, errOut, code := run(t, admin, "migrate")
		require.Equal(t, 0, code, "migrate run %d: %s%s", i+1, out, errOut)
		assert.Contains(t, out, "migrations applied")
	}

	out, errOut, code := run(t, admin, "bootstrap", "--tenant", "initech", "--json")
	require.Equal(t, 0, code, errOut)
	var boot struct {
		TenantID string `json:"tenant_id"`
		Token    string `json:"token"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &boot))
	require.True(t, strings.HasPrefix(boot.Token, "ew_"))

	// Serving as the table owner is refused: RLS would not bind it.
	dataDir := t.TempDir()
	_, errOut, code = run(t, nil, "serve", "--database-url", d.OwnerURL, "--data-dir", dataDir, "--listen", freeAddr(t))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "owns")
	assert.Contains(t, errOut, db.RuntimeRole)

	addr := freeAddr(t)
	srv := start(t, []string{"EDGEWARD_DATABASE_URL=" + d.AppURL, "EDGEWARD_DATA_DIR=" + dataDir, "EDGEWARD_LISTEN=" + addr}, "serve", "--public-host", "cp.example.internal")
	caFile := filepath.Join(dataDir, "ca.crt")
	base := "https://" + addr
	// The CA is created before the listener opens.
	deadline := time.Now().Add(30 * time.Second)
	for _, err := os.Stat(caFile); err != nil && time.Now().Before(deadline); _, err = os.Stat(caFile) {
		time.Sleep(20 * time.Millisecond)
	}
	c := httpsClient(t, caFile)
	waitReady(t, c, base, srv)

	status, body := get(t, c, base+"/api/v1/me", boot.Token)
	require.Equal(t, http.StatusOK, status, "%s", body)
	var m struct {
		TenantID string `json:"tenant_id"`
		Role     string `json:"role"`
	}
	require.NoError(t, json.Unmarshal(body, &m))
	assert.Equal(t, boot.TenantID, m.TenantID)
	assert.Equal(t, "tenant_admin", m.Role)
	status, _ = get(t, c, base+"/api/v1/me", "")
	assert.Equal(t, http.StatusUnauthorized, status)

	// The server certificate names the public host and chains to ca.crt.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: c.Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "cp.example.internal"})
	require.NoError(t, err)
	_ = conn.Close()

	srv.stop(t)
	assert.Contains(t, srv.stderr.String(), `"msg":"stopped"`)
	assert.NotContains(t, srv.stderr.String(), boot.Token, "the token never reaches the log")
}

func TestBinaryOperatorCommandsAndAuditVerify(t *testing.T) {
	t.Parallel() // its own database, ports and directories
	d := dbtest.New(t)
	admin := []string{"EDGEWARD_ADMIN_DATABASE_URL=" + d.OwnerURL}

	out, errOut, code := run(t, admin, "tenant", "create", "--name", "umbrella", "--json")
	require.Equal(t, 0, code, errOut)
	var tn struct {
		TenantID string `json:"tenant_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &tn))
	_, errOut, code = run(t, admin, "tenant", "create", "--name", "UMBRELLA")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "already exists")

	out, _, code = run(t, admin, "tenant", "list", "--json")
	require.Equal(t, 0, code)
	assert.Contains(t, out, tn.TenantID)

	out, errOut, code = run(t, admin, "token", "create", "--tenant", tn.TenantID, "--role", "auditor", "--name", "external audit", "--expires-in", "720h", "--json")
	require.Equal(t, 0, code, errOut)
	var tok struct {
		Token string `json:"token"`
		Role  string `json:"role"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &tok))
	assert.Equal(t, "auditor", tok.Role)

	_, errOut, code = run(t, admin, "token", "create", "--tenant", tn.TenantID, "--role", "root", "--name", "x")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "unknown role")
	_, errOut, code = run(t, admin, "token", "create", "--tenant", tn.TenantID)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--tenant, --role and --name are required")

	out, errOut, code = run(t, admin, "audit", "verify", "--tenant", tn.TenantID)
	require.Equal(t, 0, code, out+errOut)
	assert.Contains(t, out, "verified 3 events")

	// Tamper as the owner role; verify names the row.
	ctx := context.Background()
	var tamperedID string
	tenantID := tn.TenantID
	require.NoError(t, db.InTenant(ctx, d.Owner, uuidOf(t, tenantID), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete"); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "UPDATE audit_events SET outcome = 'failure' WHERE seq = 2 RETURNING id::text").Scan(&tamperedID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")
		return err
	}))
	out, _, code = run(t, admin, "audit", "verify", "--tenant", tn.TenantID)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, fmt.Sprintf("BROKEN at seq 2 (event %s)", tamperedID))

	// Without --tenant every tenant is checked.
	out, _, code = run(t, admin, "audit", "verify", "--json")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `"verified": false`)

	_, errOut, code = run(t, nil, "frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "unknown command")
}

// TestBinaryDev runs what `make demo` runs: a private PostgreSQL cluster,
// migrations, a demo tenant and the server; then stops and restarts it,
// which reuses the cluster and the still-valid token.
func TestBinaryDev(t *testing.T) {
	dir := t.TempDir()
	// The cluster may run as an unprivileged user (when tests run as root),
	// which must be able to enter the directory.
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()) && d != os.TempDir() {
			require.NoError(t, os.Chmod(d, 0o755))
		}
	}
	devDir := filepath.Join(dir, ".edgeward")
	var firstToken string
	for round := 1; round <= 2; round++ {
		p := start(t, nil, "dev", "--dir", devDir, "--listen", "127.0.0.1:0")
		envFile := filepath.Join(devDir, "demo.env")
		vars := waitForEnv(t, p, envFile, round)
		c := httpsClient(t, vars["CA"])
		status, body := get(t, c, vars["URL"]+"/api/v1/me", vars["TOKEN"])
		require.Equal(t, http.StatusOK, status, "%s", body)
		assert.Contains(t, string(body), `"tenant_name":"demo"`)
		assert.Contains(t, p.stdout.String(), vars["TOKEN"], "dev prints the token")
		assert.Contains(t, p.stdout.String(), "curl --cacert")
		st, err := os.Stat(envFile)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "demo.env holds a token")
		if round == 1 {
			firstToken = vars["TOKEN"]
		} else {
			assert.Equal(t, firstToken, vars["TOKEN"], "a restart reuses the valid token")
		}
		// make demo runs an enrolled agent beside the server.
		assert.Contains(t, p.stdout.String(), "An agent is enrolled and running")
		assert.Contains(t, p.stdout.String(), "Its site's policy lets it watch ", "the demo says what it watches")
		eventually(t, 30*time.Second, "the demo agent's first heartbeat", func() bool {
			status, body := get(t, c, vars["URL"]+"/api/v1/agents?status=active", vars["TOKEN"])
			return status == http.StatusOK && strings.Contains(string(body), `"reports_applied":`) && !strings.Contains(string(body), `"reports_applied":0`)
		})
		// It observes for the demo site, whose policy covers the networks
		// this machine is attached to, passively.
		status, body = get(t, c, vars["URL"]+"/api/v1/discovery/policies", vars["TOKEN"])
		require.Equal(t, http.StatusOK, status, "%s", body)
		assert.Equal(t, 1, strings.Count(string(body), `"site_name":"demo: this machine's networks"`), "one demo site, however often the demo starts")
		assert.Contains(t, string(body), `"allowed_methods":["passive_neighbor"]`)
		status, body = get(t, c, vars["URL"]+"/api/v1/collectors", vars["TOKEN"])
		require.Equal(t, http.StatusOK, status, "%s", body)
		assert.Contains(t, string(body), `"observing":true`)
		p.stop(t)
	}
}

func waitForEnv(t *testing.T, p *process, path string, round int) map[string]string {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			t.Fatalf("dev exited: %v\nstdout: %s\nstderr: %s", err, p.stdout.String(), p.stderr.String())
		default:
		}
		// demo.env is rewritten on each start; the server is up once stdout says so.
		if strings.Contains(p.stdout.String(), "Press Ctrl-C to stop.") {
			f, err := os.Open(path)
			require.NoError(t, err)
			vars := map[string]string{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "="); ok && !strings.HasPrefix(k, "#") {
					vars[k] = strings.Trim(v, "'")
				}
			}
			_ = f.Close()
			return vars
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("dev round %d not up within 120s\nstderr: %s", round, p.stderr.String())
	return nil
}

func uuidOf(t *testing.T, s string) uuid.UUID {
	t.Helper()
	id, err := uuid.Parse(s)
	require.NoError(t, err)
	return id
}
