package agents_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/pki"
	"github.com/edgeward/edgeward/proto/enrollment"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

func TestEnrollmentTokensAPI(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	siteID := uuid.Must(uuid.NewV7())
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO sites (tenant_id, id, name) VALUES ($1, $2, 'Berlin')", env.Tenant.ID, siteID)
		return err
	}))

	r := admin.Do("POST", "/api/v1/enrollment-tokens", map[string]any{
		"name": "Berlin laptops", "site_id": siteID.String(), "labels": map[string]string{"team": "it", "env/stage": "prod"}, "max_uses": 5,
	})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var created struct {
		ID            string            `json:"id"`
		Token         string            `json:"token"`
		Status        string            `json:"status"`
		MaxUses       int               `json:"max_uses"`
		Labels        map[string]string `json:"labels"`
		ExpiresAt     time.Time         `json:"expires_at"`
		CAFingerprint string            `json:"ca_fingerprint"`
	}
	r.JSON(t, &created)
	assert.Equal(t, "active", created.Status)
	assert.Equal(t, 5, created.MaxUses)
	assert.WithinDuration(t, time.Now().Add(24*time.Hour), created.ExpiresAt, time.Minute, "default lifetime 24 h")
	tok, err := enrollment.Parse(created.Token)
	require.NoError(t, err)
	assert.Equal(t, env.Tenant.ID, uuid.UUID(tok.TenantID))
	assert.Equal(t, env.Server.CA.Fingerprint(), hex.EncodeToString(tok.CAFingerprint[:]), "the token pins the CA")
	assert.Equal(t, env.Server.CA.Fingerprint(), created.CAFingerprint)

	// Reads never show the secret, to admins or auditors.
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	for _, c := range []*apitest.Client{admin, auditor} {
		for _, path := range []string{"/api/v1/enrollment-tokens", "/api/v1/enrollment-tokens/" + created.ID} {
			r := c.Do("GET", path, nil)
			require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
			assert.NotContains(t, string(r.Body), created.Token)
		}
	}
	assert.Equal(t, "forbidden", auditor.Do("POST", "/api/v1/enrollment-tokens", map[string]any{"name": "x"}).Problem(t, 403).Code)

	for name, tc := range map[string]struct {
		body    map[string]any
		pointer string
	}{
		"expired":         {map[string]any{"name": "x", "expires_at": time.Now().Add(-time.Minute).Format(time.RFC3339)}, "#/expires_at"},
		"too long":        {map[string]any{"name": "x", "expires_at": time.Now().Add(31 * 24 * time.Hour).Format(time.RFC3339)}, "#/expires_at"},
		"unknown site":    {map[string]any{"name": "x", "site_id": uuid.NewString()}, "#/site_id"},
		"bad label key":   {map[string]any{"name": "x", "labels": map[string]string{"Bad Key": "v"}}, "#/labels/Bad Key"},
		"max_uses zero":   {map[string]any{"name": "x", "max_uses": 0}, "#/max_uses"},
		"label not a str": {map[string]any{"name": "x", "labels": map[string]any{"a": 1}}, "#/labels/a"},
	} {
		t.Run(name, func(t *testing.T) {
			p := admin.Do("POST", "/api/v1/enrollment-tokens", tc.body).Problem(t, http.StatusUnprocessableEntity)
			require.NotEmpty(t, p.Errors)
			assert.Equal(t, tc.pointer, p.Errors[0].Pointer, "%+v", p.Errors)
		})
	}

	r = admin.Do("POST", "/api/v1/enrollment-tokens/"+created.ID+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status)
	var revoked struct {
		Status string `json:"status"`
	}
	r.JSON(t, &revoked)
	assert.Equal(t, "revoked", revoked.Status)
	assert.Equal(t, http.StatusOK, admin.Do("POST", "/api/v1/enrollment-tokens/"+created.ID+"/revoke", nil).Status, "revoking again changes nothing")
	var list struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
	admin.Do("GET", "/api/v1/enrollment-tokens?status=revoked", nil).JSON(t, &list)
	require.Len(t, list.Items, 1)
	admin.Do("GET", "/api/v1/enrollment-tokens?status=active&limit=1", nil).JSON(t, &list)
	assert.Empty(t, list.Items)
	assert.Equal(t, "not_found", admin.Do("GET", "/api/v1/enrollment-tokens/"+uuid.NewString(), nil).Problem(t, 404).Code)
	assert.Equal(t, "not_found", admin.Do("POST", "/api/v1/enrollment-tokens/"+uuid.NewString()+"/revoke", nil).Problem(t, 404).Code)
}

func TestEnrollIssuesAnIdentityAndAnAsset(t *testing.T) {
	env := apitest.Start(t)
	_, token := createToken(t, env, map[string]any{"name": "one", "labels": map[string]string{"team": "it"}})
	a, err := enroll(t, env, token, "machine-1", "laptop-1")
	require.NoError(t, err)

	tenant, agent, err := pki.ParseAgentURI(a.Cert)
	require.NoError(t, err)
	assert.Equal(t, env.Tenant.ID.String(), tenant)
	assert.Equal(t, a.AgentID, agent)
	assert.Equal(t, "spiffe://edgeward/tenant/"+tenant+"/agent/"+agent, a.Cert.URIs[0].String())
	assert.WithinDuration(t, time.Now().Add(30*24*time.Hour), a.Cert.NotAfter, time.Minute, "30-day certificates")
	_, err = a.Cert.Verify(x509.VerifyOptions{Roots: env.Server.CA.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)

	got := getAgent(t, env, a.AgentID)
	assert.Equal(t, "laptop-1", got.Hostname)
	assert.Equal(t, "machine-1", got.MachineID)
	assert.Equal(t, map[string]string{"team": "it"}, got.Labels, "the token's labels apply")
	assert.Equal(t, "active", got.Status)
	require.NotNil(t, got.Certificate)
	sum := sha256.Sum256(a.Cert.Raw)
	assert.Equal(t, hex.EncodeToString(sum[:]), got.Certificate.Fingerprint)

	var asset struct {
		ID        string  `json:"id"`
		Name      string  `json:"name"`
		Source    string  `json:"source"`
		AgentID   *string `json:"agent_id"`
		Addresses []string
		Macs      []string `json:"macs"`
	}
	admin := env.Client(t, env.AdminToken)
	admin.Do("GET", "/api/v1/assets/"+got.AssetID, nil).JSON(t, &asset)
	assert.Equal(t, "laptop-1", asset.Name)
	assert.Equal(t, "agent", asset.Source)
	assert.Equal(t, a.AgentID, *asset.AgentID)
	assert.Equal(t, []string{apitest.MACFor("machine-1")}, asset.Macs)

	// A used-up single-use token is refused with a clear message.
	_, err = enroll(t, env, token, "machine-2", "laptop-2")
	assertRefused(t, err, connect.CodeUnauthenticated, "already been used 1 of 1 times")

	var events struct {
		Items []struct {
			Action string `json:"action"`
			Actor  struct {
				Type string `json:"type"`
			} `json:"actor"`
		} `json:"items"`
	}
	admin.Do("GET", "/api/v1/audit/events?action=agent.enrolled", nil).JSON(t, &events)
	require.Len(t, events.Items, 1)
	assert.Equal(t, "agent", events.Items[0].Actor.Type)
}

func assertRefused(t *testing.T, err error, code connect.Code, msg string) {
	t.Helper()
	require.Error(t, err)
	assert.Equal(t, code, connect.CodeOf(err), "%v", err)
	assert.Contains(t, err.Error(), msg)
}

func TestEnrollRefusesBadTokens(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	ctx := context.Background()

	expiredID, expired := createToken(t, env, nil)
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE enrollment_tokens SET expires_at = now() - interval '1 minute' WHERE id = $1", expiredID)
		return err
	}))
	revokedID, revoked := createToken(t, env, nil)
	require.Equal(t, http.StatusOK, admin.Do("POST", "/api/v1/enrollment-tokens/"+revokedID+"/revoke", nil).Status)
	otherCA, _ := enrollment.New(env.Tenant.ID, [32]byte{1, 2, 3})
	unknown, _ := enrollment.New(env.Tenant.ID, sha256.Sum256(env.Server.CA.Cert.Raw))

	for name, tc := range map[string]struct{ token, msg string }{
		"expired":    {expired, "expired at"},
		"revoked":    {revoked, "was revoked"},
		"other CA":   {otherCA, "issued by a different control plane"},
		"unknown":    {unknown, "not known"},
		"malformed":  {"ewe_nope", "not an Edgeward enrollment token"},
		"api token":  {env.AdminToken, "not an Edgeward enrollment token"},
		"whitespace": {"   ", "not an Edgeward enrollment token"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := enroll(t, env, tc.token, "m-"+name, "h")
			assertRefused(t, err, connect.CodeUnauthenticated, tc.msg)
		})
	}
	var agents struct {
		Items []any `json:"items"`
	}
	admin.Do("GET", "/api/v1/agents", nil).JSON(t, &agents)
	assert.Empty(t, agents.Items, "no refused enrollment created an agent")

	// A CSR for a weak key is refused too.
	_, good := createToken(t, env, nil)
	_, err := enrollClient(env).Enroll(ctx, connect.NewRequest(&agentv1.EnrollRequest{Token: good, CsrDer: []byte("junk"), Facts: facts("m", "h")}))
	assertRefused(t, err, connect.CodeInvalidArgument, "certificate request")
	_, err = enrollClient(env).Enroll(ctx, connect.NewRequest(&agentv1.EnrollRequest{Token: good, CsrDer: csr(t, newKey(t)), Facts: facts("", "h")}))
	assertRefused(t, err, connect.CodeInvalidArgument, "machine id")
}

// TestOneIdentityPerMachine: re-enrolling a machine keeps its agent id and
// asset and retires its old certificate; after a revocation the same token
// is refused, and a new token makes a new agent on the same asset.
func TestOneIdentityPerMachine(t *testing.T) {
	env := apitest.Start(t)
	first := mustEnroll(t, env, "machine-x", "host-x")
	_, err := first.heartbeat(first.report())
	require.NoError(t, err)

	_, token := createToken(t, env, map[string]any{"name": "reinstall", "max_uses": 5})
	// Claiming an active machine's id without its key is refused: a token
	// holder cannot take over another machine's agent.
	_, err = enroll(t, env, token, "machine-x", "impostor")
	assertRefused(t, err, connect.CodeFailedPrecondition, "already has an active agent "+first.AgentID)
	// The machine itself proves its identity and keeps its agent id.
	reenrolled, err := first.Reenroll(t, token, "host-x-reinstalled")
	require.NoError(t, err)
	second := &testAgent{Agent: reenrolled, t: t}
	assert.Equal(t, first.AgentID, second.AgentID, "same machine, same agent")
	// The re-enrolled agent starts its sequence numbers again.
	resp, err := second.heartbeat(second.report())
	require.NoError(t, err)
	assert.Equal(t, []uint64{1}, resp.GetAckedSeqs())
	got := getAgent(t, env, second.AgentID)
	assert.Equal(t, "host-x-reinstalled", got.Hostname)
	assert.EqualValues(t, 1, got.ReportsApplied)

	var assets struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	admin := env.Client(t, env.AdminToken)
	admin.Do("GET", "/api/v1/assets", nil).JSON(t, &assets)
	require.Len(t, assets.Items, 1, "one asset per machine")
	assetID := assets.Items[0].ID

	// A re-installed machine has lost its key; once its old agent has been
	// silent for three intervals, enrolling it again keeps the agent id.
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE agents SET last_seen_at = now() - interval '181 seconds' WHERE id = $1", second.AgentID)
		return err
	}))
	fresh, err := enroll(t, env, token, "machine-x", "host-x-reimaged")
	require.NoError(t, err)
	assert.Equal(t, first.AgentID, fresh.AgentID)
	second = fresh
	var proof struct {
		Items []struct {
			Details map[string]any `json:"details"`
		} `json:"items"`
	}
	admin.Do("GET", "/api/v1/audit/events?action=agent.reenrolled", nil).JSON(t, &proof)
	require.Len(t, proof.Items, 2)
	assert.Contains(t, proof.Items[0].Details["proof"], "silent")
	assert.Equal(t, "previous certificate key", proof.Items[1].Details["proof"])

	require.Equal(t, http.StatusOK, admin.Do("POST", "/api/v1/agents/"+second.AgentID+"/revoke", map[string]any{"reason": "reimaged"}).Status)
	var host struct {
		Authorization struct {
			State string  `json:"state"`
			Basis *string `json:"basis"`
		} `json:"authorization"`
	}
	admin.Do("GET", "/api/v1/assets/"+assetID, nil).JSON(t, &host)
	assert.Equal(t, "unauthorized", host.Authorization.State, "a revoked agent vouches for nothing")
	_, err = enroll(t, env, token, "machine-x", "host-x")
	assertRefused(t, err, connect.CodeUnauthenticated, "needs a new enrollment token")

	third := mustEnroll(t, env, "machine-x", "host-x")
	assert.NotEqual(t, second.AgentID, third.AgentID, "a revoked agent stays revoked; the machine gets a new one")
	admin.Do("GET", "/api/v1/assets", nil).JSON(t, &assets)
	require.Len(t, assets.Items, 1)
	assert.Equal(t, assetID, assets.Items[0].ID, "still one asset")
	admin.Do("GET", "/api/v1/assets/"+assetID, nil).JSON(t, &host)
	assert.Equal(t, "authorized", host.Authorization.State, "its new agent vouches for it")
	assert.Equal(t, "agent_host", *host.Authorization.Basis)

	var timeline struct {
		Items []struct {
			Kind string `json:"kind"`
		} `json:"items"`
	}
	admin.Do("GET", "/api/v1/assets/"+assetID+"/timeline", nil).JSON(t, &timeline)
	var kinds []string
	for _, e := range timeline.Items {
		kinds = append(kinds, e.Kind)
	}
	assert.Equal(t, []string{"enrolled", "authorized", "revoked", "unauthorized", "reenrolled", "reenrolled", "first_seen", "enrolled"}, kinds, "newest first")

	// An auditor reads the host with its MAC and addresses masked. Host
	// names are kept, as on /api/v1/agents and /api/v1/collectors: the
	// tenant named its enrolled machines; they are not devices seen on the
	// network.
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	mac := apitest.MACFor("machine-x")
	var red struct {
		Name      string   `json:"name"`
		MachineID string   `json:"machine_id"`
		Addresses []string `json:"addresses"`
		Macs      []string `json:"macs"`
		Redacted  bool     `json:"redacted"`
	}
	r := auditor.Do("GET", "/api/v1/assets/"+assetID, nil)
	r.JSON(t, &red)
	assert.True(t, red.Redacted)
	assert.Equal(t, "host-x", red.Name)
	assert.Equal(t, "machine-x", red.MachineID)
	assert.Equal(t, []string{mac[:8] + ":xx:xx:xx"}, red.Macs)
	assert.Equal(t, []string{"192.0.2.x", "fe80:0:0:0::x"}, red.Addresses)
	assert.NotContains(t, string(r.Body), mac)
	r = auditor.Do("GET", "/api/v1/assets/"+assetID+"/timeline", nil)
	assert.Contains(t, string(r.Body), `"hostname":"host-x-reimaged"`)
	assert.NotContains(t, string(r.Body), `"redacted":false`)
	assert.Contains(t, string(admin.Do("GET", "/api/v1/assets/"+assetID, nil).Body), mac, "the admin sees the MAC")
}

func TestHeartbeatsAreAppliedOnceInOrder(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m1", "h1")
	r1, r2, r3 := a.report(), a.report(), a.report()
	resp, err := a.heartbeat(r1, r2)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2}, resp.GetAckedSeqs())
	assert.Equal(t, time.Minute, resp.GetNextInterval().AsDuration())

	// A resend after a lost acknowledgement: 1 and 2 again, with 3.
	resp, err = a.heartbeat(r1, r2, r3)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 3}, resp.GetAckedSeqs(), "duplicates are acknowledged")
	got := getAgent(t, env, a.AgentID)
	assert.EqualValues(t, 3, got.LastSeq)
	assert.EqualValues(t, 3, got.ReportsApplied, "and not applied twice")
	assert.EqualValues(t, 1, got.Queue.Depth)

	// A stock gRPC client works on the same listener.
	resp2, err := a.rpc(connect.WithGRPC()).Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{a.report()}}))
	require.NoError(t, err)
	assert.Equal(t, []uint64{4}, resp2.Msg.GetAckedSeqs())
	_, err = a.rpc(connect.WithGRPCWeb()).Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{a.report()}}))
	require.NoError(t, err, "and gRPC-Web")

	// Changed facts leave one timeline entry naming what changed.
	rep := a.report()
	rep.Facts.PlatformVersion = "13"
	rep.Facts.Interfaces[0].Addresses = []string{"192.0.2.99/24"}
	_, err = a.heartbeat(rep)
	require.NoError(t, err)
	same := a.report()
	same.Facts.PlatformVersion = "13"
	same.Facts.Interfaces[0].Addresses = []string{"192.0.2.99/24"}
	same.Facts.Uptime = nil
	_, err = a.heartbeat(same)
	require.NoError(t, err)
	var timeline struct {
		Items []struct {
			Kind    string         `json:"kind"`
			Summary string         `json:"summary"`
			Details map[string]any `json:"details"`
		} `json:"items"`
	}
	env.Client(t, env.AdminToken).Do("GET", "/api/v1/assets/"+got.AssetID+"/timeline", nil).JSON(t, &timeline)
	require.Len(t, timeline.Items, 3, "enrolled, first_seen, one facts_changed")
	assert.Equal(t, "facts_changed", timeline.Items[0].Kind)
	assert.Equal(t, "changed: platform_version, interfaces", timeline.Items[0].Summary)

	_, err = a.rpc().Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{{Seq: 0}}}))
	assertRefused(t, err, connect.CodeInvalidArgument, "start at 1")

	m := env.Client(t, "").Do("GET", "/metrics", nil)
	assert.Contains(t, string(m.Body), `edgeward_agent_reports_total{result="duplicate"} 2`)
	assert.Contains(t, string(m.Body), `edgeward_agent_reports_total{result="applied"} 7`)
	assert.Contains(t, string(m.Body), `edgeward_agent_enrollments_total{result="enrolled"} 1`)
	assert.Contains(t, string(m.Body), `edgeward_agent_identity_checks_total{result="cache"}`)
}

func TestRESTHeartbeatIsBoundToTheCertificate(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m-a", "a")
	b := mustEnroll(t, env, "m-b", "b")
	otherTenant, otherAdmin := env.NewTenant(t, "globex")
	_ = otherTenant
	// An agent of another tenant.
	r := env.Client(t, otherAdmin).Do("POST", "/api/v1/enrollment-tokens", map[string]any{"name": "x"})
	var tok struct {
		Token string `json:"token"`
	}
	r.JSON(t, &tok)
	c, err := enroll(t, env, tok.Token, "m-c", "c")
	require.NoError(t, err)

	body := map[string]any{"seq": 1, "sent_at": time.Now().UTC().Format(time.RFC3339), "facts": map[string]any{"hostname": "a", "machine_id": "m-a", "uptime_seconds": 10},
		"queue": map[string]any{"depth": 0, "dropped": 2}, "observations": []any{map[string]any{"mac": "02:00:00:00:00:09", "ip": "192.0.2.50", "seen_at": time.Now().UTC().Format(time.RFC3339)}}}
	ac := env.CertClient(t, a.tlsCert())
	r = ac.Do("POST", "/api/v1/agents/"+a.AgentID+"/telemetry/heartbeat", body)
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	assert.JSONEq(t, `{"accepted":true,"duplicate":false,"next_interval_seconds":60}`, string(r.Body))
	r = ac.Do("POST", "/api/v1/agents/"+a.AgentID+"/telemetry/heartbeat", body)
	assert.JSONEq(t, `{"accepted":true,"duplicate":true,"next_interval_seconds":60}`, string(r.Body), "a repeated seq is acknowledged, not applied")
	assert.EqualValues(t, 2, getAgent(t, env, a.AgentID).Queue.Dropped)

	// A's certificate cannot post for B, nor for C of another tenant.
	p := ac.Do("POST", "/api/v1/agents/"+b.AgentID+"/telemetry/heartbeat", body).Problem(t, http.StatusForbidden)
	assert.Contains(t, p.Detail, "belongs to agent "+a.AgentID)
	p = ac.Do("POST", "/api/v1/agents/"+c.AgentID+"/telemetry/heartbeat", body).Problem(t, http.StatusForbidden)
	assert.Equal(t, "forbidden", p.Code)
	// C's certificate, valid in its own tenant, cannot post for A either.
	p = env.CertClient(t, c.tlsCert()).Do("POST", "/api/v1/agents/"+a.AgentID+"/telemetry/heartbeat", body).Problem(t, http.StatusForbidden)
	assert.Equal(t, "forbidden", p.Code)
	assert.EqualValues(t, 0, getAgent(t, env, b.AgentID).ReportsApplied)

	// No certificate, or a bearer token instead: unauthenticated.
	p = env.Client(t, env.AdminToken).Do("POST", "/api/v1/agents/"+a.AgentID+"/telemetry/heartbeat", body).Problem(t, http.StatusUnauthorized)
	assert.Equal(t, "agent_certificate_missing", p.Code)

	// Schema violations are 422 naming the field.
	bad := map[string]any{"seq": 0, "sent_at": "now"}
	p = ac.Do("POST", "/api/v1/agents/"+a.AgentID+"/telemetry/heartbeat", bad).Problem(t, http.StatusUnprocessableEntity)
	assert.Len(t, p.Errors, 2)
}

func TestRevocationTakesEffectOnTheNextCall(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m", "h")
	for i := 0; i < 3; i++ { // warm the identity cache
		_, err := a.heartbeat(a.report())
		require.NoError(t, err)
	}
	admin := env.Client(t, env.AdminToken)
	r := admin.Do("POST", "/api/v1/agents/"+a.AgentID+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status)
	var got agentJSON
	r.JSON(t, &got)
	assert.Equal(t, "revoked", got.Status)
	assert.Nil(t, got.Certificate)

	_, err := a.heartbeat(a.report())
	assertRefused(t, err, connect.CodeUnauthenticated, "was revoked")
	p := env.CertClient(t, a.tlsCert()).Do("POST", "/api/v1/agents/"+a.AgentID+"/telemetry/heartbeat",
		map[string]any{"seq": 99, "sent_at": time.Now().UTC().Format(time.RFC3339)}).Problem(t, http.StatusUnauthorized)
	assert.Equal(t, "agent_revoked", p.Code)
	_, err = a.rpc().RotateCertificate(context.Background(), connect.NewRequest(&agentv1.RotateCertificateRequest{CsrDer: csr(t, newKey(t))}))
	assertRefused(t, err, connect.CodeUnauthenticated, "was revoked")

	var list struct {
		Items []agentJSON `json:"items"`
	}
	admin.Do("GET", "/api/v1/agents?status=revoked", nil).JSON(t, &list)
	require.Len(t, list.Items, 1)
	admin.Do("GET", "/api/v1/agents?status=active", nil).JSON(t, &list)
	assert.Empty(t, list.Items)
}

// TestRotationNeverLocksTheAgentOut walks a rotation and its interruptions:
// the old certificate works until the new one is used; a rotation whose
// certificate never arrived leaves the old one working and is superseded.
func TestRotationNeverLocksTheAgentOut(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m", "h")
	ctx := context.Background()

	rotate := func(from *testAgent) *testAgent {
		t.Helper()
		key := newKey(t)
		resp, err := from.rpc().RotateCertificate(ctx, connect.NewRequest(&agentv1.RotateCertificateRequest{CsrDer: csr(t, key)}))
		require.NoError(t, err)
		agent := *from.Agent
		next := &testAgent{Agent: &agent, t: t}
		next.Key = key
		next.Cert, err = x509.ParseCertificate(resp.Msg.GetCertificateDer())
		require.NoError(t, err)
		return next
	}

	// Interrupted after the server issued (the agent never saved it).
	lost := rotate(a)
	_, err := a.heartbeat(a.report())
	require.NoError(t, err, "the old certificate still works")
	// The agent rotates again: the lost certificate is retired.
	next := rotate(a)
	_, err = lost.heartbeat(lost.report())
	assertRefused(t, err, connect.CodeUnauthenticated, "replaced")
	_, err = a.heartbeat(a.report())
	require.NoError(t, err, "old still works until the new one is used")

	// Same key twice is no rotation.
	_, err = a.rpc().RotateCertificate(ctx, connect.NewRequest(&agentv1.RotateCertificateRequest{CsrDer: csr(t, a.Key)}))
	assertRefused(t, err, connect.CodeInvalidArgument, "new key")

	// First use of the new certificate ends the rotation.
	next.Seq = a.Seq
	_, err = next.heartbeat(next.report())
	require.NoError(t, err)
	_, err = a.heartbeat(a.report())
	assertRefused(t, err, connect.CodeUnauthenticated, "replaced")
	got := getAgent(t, env, a.AgentID)
	sum := sha256.Sum256(next.Cert.Raw)
	assert.Equal(t, hex.EncodeToString(sum[:]), got.Certificate.Fingerprint)

	var events struct {
		Items []any `json:"items"`
	}
	env.Client(t, env.AdminToken).Do("GET", "/api/v1/audit/events?action=agent.certificate_rotated", nil).JSON(t, &events)
	assert.Len(t, events.Items, 2)
}

func TestAgentsGoStaleAndListByStatus(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m1", "h1")
	b := mustEnroll(t, env, "m2", "h2")
	_, err := a.heartbeat(a.report())
	require.NoError(t, err)
	_, err = b.heartbeat(b.report())
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE agents SET last_seen_at = now() - interval '181 seconds' WHERE id = $1", b.AgentID)
		return err
	}))
	admin := env.Client(t, env.AdminToken)
	var list struct {
		Items []agentJSON `json:"items"`
	}
	admin.Do("GET", "/api/v1/agents?status=stale", nil).JSON(t, &list)
	require.Len(t, list.Items, 1)
	assert.Equal(t, b.AgentID, list.Items[0].ID, "three missed 60 s intervals")
	admin.Do("GET", "/api/v1/agents?status=active", nil).JSON(t, &list)
	require.Len(t, list.Items, 1)
	assert.Equal(t, a.AgentID, list.Items[0].ID)

	// Pagination and the asset list's search.
	var page struct {
		Items      []agentJSON `json:"items"`
		NextCursor *string     `json:"next_cursor"`
	}
	admin.Do("GET", "/api/v1/agents?limit=1", nil).JSON(t, &page)
	require.NotNil(t, page.NextCursor)
	first := page.Items[0].ID
	admin.Do("GET", "/api/v1/agents?limit=1&cursor="+*page.NextCursor, nil).JSON(t, &page)
	require.Len(t, page.Items, 1)
	assert.NotEqual(t, first, page.Items[0].ID)
	assert.Nil(t, page.NextCursor)

	var assets struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
	admin.Do("GET", "/api/v1/assets?q=H2", nil).JSON(t, &assets)
	require.Len(t, assets.Items, 1)
	assert.Equal(t, "h2", assets.Items[0].Name)
	admin.Do("GET", "/api/v1/assets?q=192.0.2.10&source=agent&limit=1", nil).JSON(t, &assets)
	require.Len(t, assets.Items, 1)
	require.NotNil(t, assets.NextCursor)
	admin.Do("GET", "/api/v1/assets?q=192.0.2.10&limit=1&cursor="+*assets.NextCursor, nil).JSON(t, &assets)
	require.Len(t, assets.Items, 1)
	admin.Do("GET", "/api/v1/assets?source=discovery", nil).JSON(t, &assets)
	assert.Empty(t, assets.Items)
	assert.Equal(t, "not_found", admin.Do("GET", "/api/v1/assets/"+uuid.NewString(), nil).Problem(t, 404).Code)
	assert.Equal(t, "not_found", admin.Do("GET", "/api/v1/assets/"+uuid.NewString()+"/timeline", nil).Problem(t, 404).Code)
	assert.Equal(t, "not_found", admin.Do("GET", "/api/v1/agents/"+uuid.NewString(), nil).Problem(t, 404).Code)
	assert.Equal(t, "not_found", admin.Do("POST", "/api/v1/agents/"+uuid.NewString()+"/revoke", nil).Problem(t, 404).Code)

	// Another tenant sees none of it.
	_, other := env.NewTenant(t, "other")
	oc := env.Client(t, other)
	oc.Do("GET", "/api/v1/agents", nil).JSON(t, &list)
	assert.Empty(t, list.Items)
	assert.Equal(t, "not_found", oc.Do("GET", "/api/v1/agents/"+a.AgentID, nil).Problem(t, 404).Code)
	assert.Equal(t, "not_found", oc.Do("POST", "/api/v1/agents/"+a.AgentID+"/revoke", nil).Problem(t, 404).Code)
	assert.Equal(t, "active", getAgent(t, env, a.AgentID).Status)
}

// TestRevocationReachesEveryReplica: two control planes share the
// database. An agent's identity is cached on replica B; it is revoked
// through replica A; B refuses the agent as soon as A's notification
// arrives. While B's notification connection is down, B does not cache.
func TestRevocationReachesEveryReplica(t *testing.T) {
	envA := apitest.Start(t)
	envB := envA.StartReplica(t)
	a := mustEnroll(t, envA, "m-r", "replicated")
	onB := &testAgent{Agent: &apitest.Agent{}, t: t}
	*onB.Agent = *a.Agent
	onB.Env = envB
	for i := 0; i < 3; i++ { // B caches the identity
		_, err := onB.heartbeat(onB.report())
		require.NoError(t, err)
	}
	require.Equal(t, http.StatusOK, envA.Client(t, envA.AdminToken).Do("POST", "/api/v1/agents/"+a.AgentID+"/revoke", nil).Status)
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if _, err = onB.heartbeat(onB.report()); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	assertRefused(t, err, connect.CodeUnauthenticated, "was revoked")

	// Cut B's notification connection: B must stop trusting its cache.
	b := mustEnroll(t, envA, "m-r2", "second")
	onB2 := &testAgent{Agent: &apitest.Agent{}, t: t}
	*onB2.Agent = *b.Agent
	onB2.Env = envB
	_, err = onB2.heartbeat(onB2.report())
	require.NoError(t, err)
	terminateListeners(t, envA)
	require.Equal(t, http.StatusOK, envA.Client(t, envA.AdminToken).Do("POST", "/api/v1/agents/"+b.AgentID+"/revoke", nil).Status)
	_, err = onB2.heartbeat(onB2.report())
	assertRefused(t, err, connect.CodeUnauthenticated, "was revoked")
}
