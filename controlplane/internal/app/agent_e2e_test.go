package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
	"github.com/edgeward/edgeward/proto/enrollment"
)

// controlPlane is a running edgeward-controlplane serve on a test database.
type controlPlane struct {
	t       *testing.T
	db      *dbtest.DB
	addr    string
	dataDir string
	args    []string
	proc    *process
	http    *http.Client
	admin   string // a tenant_admin token
	tenant  string
}

// newControlPlane migrates a fresh database, bootstraps a tenant and serves.
func newControlPlane(t *testing.T, args ...string) *controlPlane {
	t.Helper()
	return newControlPlaneOn(t, freeAddr(t), args...)
}

// newControlPlaneOn is newControlPlane listening on addr.
func newControlPlaneOn(t *testing.T, addr string, args ...string) *controlPlane {
	t.Helper()
	cp := &controlPlane{t: t, db: dbtest.New(t), addr: addr, dataDir: t.TempDir(), args: args}
	admin := []string{"EDGEWARD_ADMIN_DATABASE_URL=" + cp.db.OwnerURL}
	out, errOut, code := run(t, admin, "bootstrap", "--tenant", "acme", "--json")
	require.Equal(t, 0, code, errOut)
	var boot struct {
		TenantID string `json:"tenant_id"`
		Token    string `json:"token"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &boot))
	cp.admin, cp.tenant = boot.Token, boot.TenantID
	cp.start()
	return cp
}

func (cp *controlPlane) url() string { return "https://" + cp.addr }

func (cp *controlPlane) start() {
	cp.t.Helper()
	args := append([]string{"serve", "--database-url", cp.db.AppURL, "--data-dir", cp.dataDir, "--listen", cp.addr}, cp.args...)
	cp.proc = start(cp.t, nil, args...)
	caFile := filepath.Join(cp.dataDir, "ca.crt")
	eventually(cp.t, 30*time.Second, "the CA file", func() bool { _, err := os.Stat(caFile); return err == nil })
	cp.http = httpsClient(cp.t, caFile)
	waitReady(cp.t, cp.http, cp.url(), cp.proc)
}

func (cp *controlPlane) stop() { cp.t.Helper(); cp.proc.stop(cp.t) }

// api calls the REST API like curl, as the tenant admin, and validates the
// response against the spec.
func (cp *controlPlane) api(method, path string, body any) (int, []byte) {
	cp.t.Helper()
	status, _, got := cp.call(cp.admin, method, path, body, nil)
	return status, got
}

// call is api with any bearer token and extra request headers; it returns
// the response headers too.
func (cp *controlPlane) call(token, method, path string, body any, header http.Header) (int, http.Header, []byte) {
	cp.t.Helper()
	var raw []byte
	if body != nil {
		var err error
		raw, err = json.Marshal(body)
		require.NoError(cp.t, err)
	}
	req, err := http.NewRequest(method, cp.url()+path, bytes.NewReader(raw))
	require.NoError(cp.t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cp.http.Do(req)
	require.NoError(cp.t, err)
	defer func() { _ = resp.Body.Close() }()
	got, err := io.ReadAll(resp.Body)
	require.NoError(cp.t, err)
	_, err = apitest.Validate(req, raw, resp.StatusCode, resp.Header, got)
	require.NoError(cp.t, err, "%s %s: %s", method, path, got)
	return resp.StatusCode, resp.Header, got
}

func (cp *controlPlane) enrollmentToken(body map[string]any) (id, token string) {
	cp.t.Helper()
	status, b := cp.api("POST", "/api/v1/enrollment-tokens", body)
	require.Equal(cp.t, http.StatusCreated, status, "%s", b)
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	require.NoError(cp.t, json.Unmarshal(b, &out))
	return out.ID, out.Token
}

type agentView struct {
	ID             string `json:"id"`
	Status         string `json:"status"`
	LastSeq        int64  `json:"last_seq"`
	FirstSeq       int64  `json:"first_seq"`
	ReportsApplied int64  `json:"reports_applied"`
	AssetID        string `json:"asset_id"`
	Queue          struct {
		Dropped       int64   `json:"dropped"`
		Unqueued      int64   `json:"unqueued"`
		Writable      bool    `json:"writable"`
		FailingSince  *string `json:"failing_since"`
		LastErrorKind *string `json:"last_error_kind"`
	} `json:"queue"`
	Certificate *struct {
		Serial string `json:"serial"`
	} `json:"certificate"`
}

func (cp *controlPlane) agent(id string) agentView {
	cp.t.Helper()
	status, b := cp.api("GET", "/api/v1/agents/"+id, nil)
	require.Equal(cp.t, http.StatusOK, status, "%s", b)
	var a agentView
	require.NoError(cp.t, json.Unmarshal(b, &a))
	return a
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agentDir is a state directory for one agent.
func agentDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	return dir
}

func enrollAgent(t *testing.T, cp *controlPlane, dir, token string) string {
	t.Helper()
	out, errOut, code := runProgram(t, agentBinary, nil, "enroll", "--server", cp.url(), "--token", token, "--state-dir", dir, "--force")
	require.Equal(t, 0, code, "%s%s", out, errOut)
	var cfg struct {
		AgentID string `json:"agent_id"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &cfg))
	return cfg.AgentID
}

type agentStatus struct {
	State        string    `json:"state"`
	QueueDepth   int       `json:"queue_depth"`
	LastSendAt   time.Time `json:"last_send_at"`
	LastError    string    `json:"last_error"`
	QueueDropped int       `json:"queue_dropped"`
}

func readAgentStatus(t *testing.T, dir string) agentStatus {
	var st agentStatus
	b, err := os.ReadFile(filepath.Join(dir, "status.json"))
	if err == nil {
		_ = json.Unmarshal(b, &st)
	}
	return st
}

// inOrderExactlyOnce is the delivery invariant: the agent numbers reports
// contiguously; every one applied exactly once means
// applied == last - first + 1.
func inOrderExactlyOnce(t *testing.T, a agentView) {
	t.Helper()
	assert.Zero(t, a.Queue.Dropped)
	assert.Positive(t, a.FirstSeq)
	assert.Equal(t, a.LastSeq-a.FirstSeq+1, a.ReportsApplied, "every report arrived exactly once and in order")
}

// TestAgentSurvivesOutagesAndCrashes runs the real agent against the real
// control plane: enrollment, heartbeats, a control plane outage, kill -9
// of the agent at the worst moment and at a random one, and revocation.
func TestAgentSurvivesOutagesAndCrashes(t *testing.T) {
	t.Parallel() // its own database, ports and directories
	cp := newControlPlane(t, "--agent-heartbeat-interval", "1s")
	_, token := cp.enrollmentToken(map[string]any{"name": "e2e"})
	dir := agentDir(t)
	agentID := enrollAgent(t, cp, dir, token)

	ag := startProgram(t, agentBinary, nil, "run", "--state-dir", dir)
	eventually(t, 30*time.Second, "three heartbeats", func() bool { return cp.agent(agentID).ReportsApplied >= 3 })
	a := cp.agent(agentID)
	assert.Equal(t, "active", a.Status)
	status, body := cp.api("GET", "/api/v1/assets/"+a.AssetID, nil)
	require.Equal(t, http.StatusOK, status, "%s", body)
	host, _ := os.Hostname()
	assert.Contains(t, string(body), `"name":"`+host+`"`)

	// The control plane goes away; the agent keeps queueing.
	cp.stop()
	eventually(t, 30*time.Second, "the agent to queue reports during the outage", func() bool {
		st := readAgentStatus(t, dir)
		return st.State == "retrying" && st.QueueDepth >= 3
	})
	queued := readAgentStatus(t, dir).QueueDepth
	cp.start()
	eventually(t, 60*time.Second, "the queue to drain after the outage", func() bool {
		st := readAgentStatus(t, dir)
		return st.State == "ok" && st.QueueDepth == 0
	})
	a = cp.agent(agentID)
	inOrderExactlyOnce(t, a)
	assert.GreaterOrEqual(t, a.LastSeq, int64(3+queued))

	// kill -9 at the worst moment: after the server applied a batch, before
	// the agent deleted it. The restarted agent resends; nothing applies twice.
	ag.stop(t)
	crash := startProgram(t, agentBinary, []string{"EDGEWARD_AGENT_TEST_CRASH=acked-before-delete"}, "run", "--state-dir", dir)
	select {
	case <-crash.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the agent did not reach the crash point")
	}
	assert.Equal(t, 137, crash.cmd.ProcessState.ExitCode(), "%s", crash.stderr.String())
	ag = startProgram(t, agentBinary, nil, "run", "--state-dir", dir)
	target := cp.agent(agentID).LastSeq + 3
	eventually(t, 30*time.Second, "heartbeats after the crash", func() bool { return cp.agent(agentID).LastSeq >= target })
	inOrderExactlyOnce(t, cp.agent(agentID))

	// And a plain kill -9 wherever the agent happens to be.
	require.NoError(t, ag.cmd.Process.Signal(syscall.SIGKILL))
	<-ag.done
	ag = startProgram(t, agentBinary, nil, "run", "--state-dir", dir)
	target = cp.agent(agentID).LastSeq + 3
	eventually(t, 30*time.Second, "heartbeats after kill -9", func() bool { return cp.agent(agentID).LastSeq >= target })
	eventually(t, 30*time.Second, "an empty queue", func() bool { return readAgentStatus(t, dir).QueueDepth == 0 })
	inOrderExactlyOnce(t, cp.agent(agentID))

	out, _, code := runProgram(t, agentBinary, nil, "status", "--state-dir", dir)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, agentID)
	assert.Contains(t, out, "State:        ok")
	assert.Contains(t, out, "0 dropped")

	// Enrolling again: not while the agent runs; afterwards the machine
	// proves its identity and keeps its agent id and its queue.
	_, again := cp.enrollmentToken(map[string]any{"name": "again"})
	_, errOut, code := runProgram(t, agentBinary, nil, "enroll", "--server", cp.url(), "--token", again, "--state-dir", dir, "--force")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "an agent is running")
	ag.stop(t)
	assert.Equal(t, agentID, enrollAgent(t, cp, dir, again), "same machine, same agent")
	ag = startProgram(t, agentBinary, nil, "run", "--state-dir", dir)
	eventually(t, 30*time.Second, "heartbeats after re-enrollment", func() bool { return cp.agent(agentID).ReportsApplied >= 2 })
	inOrderExactlyOnce(t, cp.agent(agentID))

	// Revocation: the next call is refused, and status says so.
	status, body = cp.api("POST", "/api/v1/agents/"+agentID+"/revoke", map[string]any{"reason": "e2e"})
	require.Equal(t, http.StatusOK, status, "%s", body)
	eventually(t, 30*time.Second, "the agent to see its revocation", func() bool { return readAgentStatus(t, dir).State == "refused" })
	out, _, _ = runProgram(t, agentBinary, nil, "status", "--state-dir", dir)
	assert.Contains(t, out, "REFUSED by the control plane")
	assert.Contains(t, out, "revoked")
	ag.stop(t)
}

// TestAgentEnrollRefusals: each bad token is refused with a message that
// says what is wrong, and leaves no agent behind.
func TestAgentEnrollRefusals(t *testing.T) {
	cp := newControlPlane(t)
	ctx := context.Background()

	_, used := cp.enrollmentToken(map[string]any{"name": "single"})
	enrollAgent(t, cp, agentDir(t), used)
	expiredID, expired := cp.enrollmentToken(map[string]any{"name": "expired"})
	require.NoError(t, db.InTenant(ctx, cp.db.Owner, uuidOf(t, cp.tenant), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", expiredID)
		return err
	}))
	revokedID, revoked := cp.enrollmentToken(map[string]any{"name": "revoked"})
	status, _ := cp.api("POST", "/api/v1/enrollment-tokens/"+revokedID+"/revoke", nil)
	require.Equal(t, http.StatusOK, status)
	otherCA, _ := enrollment.New(uuidOf(t, cp.tenant), [32]byte{0xde, 0xad})

	for name, tc := range map[string]struct{ token, msg string }{
		"used up":  {used, "already been used 1 of 1 times"},
		"expired":  {expired, "expired at"},
		"revoked":  {revoked, "was revoked"},
		"other CA": {otherCA, "does not chain to the CA this token pins"},
		"garbage":  {"hello", "not an Edgeward enrollment token"},
	} {
		t.Run(name, func(t *testing.T) {
			out, errOut, code := runProgram(t, agentBinary, nil, "enroll", "--server", cp.url(), "--token", tc.token, "--state-dir", agentDir(t))
			assert.Equal(t, 1, code, out+errOut)
			assert.Contains(t, errOut, tc.msg)
		})
	}
	_, body := cp.api("GET", "/api/v1/agents", nil)
	assert.Equal(t, 1, strings.Count(string(body), `"machine_id"`), "only the first, good enrollment made an agent")

	_, errOut, code := runProgram(t, agentBinary, nil, "enroll", "--server", "http://"+cp.addr, "--token", used, "--state-dir", agentDir(t))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "must use https")
	_, errOut, code = runProgram(t, agentBinary, nil, "run", "--state-dir", agentDir(t))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not enrolled")
}

// TestAgentRotationRecoversFromACrashAtEachStep: with short-lived
// certificates the agent rotates every few seconds. It is killed at each
// step of a rotation in turn; each time the restarted agent connects again
// and completes a later rotation.
func TestAgentRotationRecoversFromACrashAtEachStep(t *testing.T) {
	t.Parallel() // its own database, ports and directories
	cp := newControlPlane(t, "--agent-heartbeat-interval", "1s", "--agent-cert-lifetime", "16s")
	_, token := cp.enrollmentToken(map[string]any{"name": "rotation"})
	dir := agentDir(t)
	agentID := enrollAgent(t, cp, dir, token)

	for _, step := range []string{"rotate-key-saved", "rotate-issued", "rotate-cert-saved", "rotate-promoted"} {
		t.Run(step, func(t *testing.T) {
			serial := cp.agent(agentID).Certificate.Serial
			crash := startProgram(t, agentBinary, []string{"EDGEWARD_AGENT_TEST_CRASH=" + step}, "run", "--state-dir", dir)
			select {
			case <-crash.done:
			case <-time.After(60 * time.Second):
				t.Fatalf("the agent did not reach %s\n%s", step, crash.stderr.String())
			}
			require.Equal(t, 137, crash.cmd.ProcessState.ExitCode(), "%s", crash.stderr.String())

			ag := startProgram(t, agentBinary, nil, "run", "--state-dir", dir)
			target := cp.agent(agentID).LastSeq + 2
			eventually(t, 30*time.Second, "the agent to connect after the crash", func() bool { return cp.agent(agentID).LastSeq >= target })
			eventually(t, 60*time.Second, "a completed rotation", func() bool {
				a := cp.agent(agentID)
				return a.Certificate != nil && a.Certificate.Serial != serial && readAgentStatus(t, dir).State == "ok"
			})
			ag.stop(t)
			inOrderExactlyOnce(t, cp.agent(agentID))
		})
	}
	var events struct {
		Items []any `json:"items"`
	}
	_, body := cp.api("GET", "/api/v1/audit/events?action=agent.certificate_rotated&limit=200", nil)
	require.NoError(t, json.Unmarshal(body, &events))
	assert.GreaterOrEqual(t, len(events.Items), 4, "a completed rotation after each crash")
}

// TestAgentFullDiskIsSeenAndCounted: the real agent's queue cannot be
// written (its writes fail with ENOSPC while a marker file exists, as on a
// full disk). Its status says so with the error and since when; the
// control plane's agent detail shows the queue not writable and the count
// of lost reports; once space returns both clear by themselves, the count
// stays, and no sequence number was skipped.
func TestAgentFullDiskIsSeenAndCounted(t *testing.T) {
	t.Parallel() // its own database, ports and directories
	cp := newControlPlane(t, "--agent-heartbeat-interval", "1s")
	_, token := cp.enrollmentToken(map[string]any{"name": "full disk"})
	dir := agentDir(t)
	out, errOut, code := runProgram(t, agentBinary, nil, "enroll", "--server", cp.url(), "--token", token, "--state-dir", dir)
	require.Equal(t, 0, code, "%s%s", out, errOut)
	assert.Contains(t, out, "edgeward-agent install --state-dir "+dir+" && edgeward-agent start", "the hints carry the state directory")
	assert.Contains(t, out, "edgeward-agent run --state-dir "+dir+"\n")
	var cfg struct {
		AgentID string `json:"agent_id"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &cfg))
	agentID := cfg.AgentID

	full := filepath.Join(t.TempDir(), "disk-full")
	ag := startProgram(t, agentBinary, []string{"EDGEWARD_AGENT_TEST_QUEUE_FULL=" + full}, "run", "--state-dir", dir)
	eventually(t, 30*time.Second, "two heartbeats", func() bool { return cp.agent(agentID).ReportsApplied >= 2 })
	a := cp.agent(agentID)
	assert.True(t, a.Queue.Writable)
	assert.Zero(t, a.Queue.Unqueued)

	// The disk fills.
	require.NoError(t, os.WriteFile(full, nil, 0o600))
	eventually(t, 30*time.Second, "the control plane to see the queue failing", func() bool {
		a := cp.agent(agentID)
		return !a.Queue.Writable && a.Queue.Unqueued >= 2
	})
	a = cp.agent(agentID)
	require.NotNil(t, a.Queue.FailingSince)
	require.NotNil(t, a.Queue.LastErrorKind)
	assert.Equal(t, "no_space", *a.Queue.LastErrorKind)
	assert.Equal(t, "active", a.Status, "the agent keeps calling")
	eventually(t, 30*time.Second, "the agent's status to say so", func() bool { return readAgentStatus(t, dir).State == "queue_failing" })
	out, _, code = runProgram(t, agentBinary, nil, "status", "--state-dir", dir)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "State:        QUEUE NOT WRITABLE since ")
	assert.Contains(t, out, "queue: append: write "+filepath.Join(dir, "queue.db")+": no space left on device")
	assert.Contains(t, out, "Sending:      ok")
	assert.Contains(t, ag.stderr.String(), "the queue cannot be written")
	lost := cp.agent(agentID).Queue.Unqueued

	// Space returns: both sides recover by themselves.
	require.NoError(t, os.Remove(full))
	eventually(t, 30*time.Second, "the control plane to see the queue writable", func() bool { return cp.agent(agentID).Queue.Writable })
	eventually(t, 30*time.Second, "the agent's status to recover", func() bool { return readAgentStatus(t, dir).State == "ok" })
	a = cp.agent(agentID)
	assert.GreaterOrEqual(t, a.Queue.Unqueued, lost, "the count stays")
	assert.Nil(t, a.Queue.FailingSince)
	require.NotNil(t, a.Queue.LastErrorKind)
	assert.Equal(t, "no_space", *a.Queue.LastErrorKind)
	inOrderExactlyOnce(t, a)
	out, _, _ = runProgram(t, agentBinary, nil, "status", "--state-dir", dir)
	assert.Contains(t, out, "State:        ok")
	assert.NotContains(t, out, "NOT WRITABLE")
	assert.Contains(t, out, "not queued (last write failure: no_space at ")

	ag.stop(t)
	assert.Contains(t, ag.stderr.String(), `msg="agent stopping" reason="signal SIGTERM"`)
	assert.Contains(t, ag.stderr.String(), "the queue can be written again")
}
