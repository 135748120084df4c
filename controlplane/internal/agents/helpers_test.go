package agents_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
	"github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1/agentv1connect"
)

// testAgent is an agent written for the tests, speaking the real protocol
// over real TLS to a real control plane.
type testAgent struct {
	t         *testing.T
	env       *apitest.Env
	key       *ecdsa.PrivateKey
	cert      *x509.Certificate
	agentID   string
	tenantID  string
	machineID string
	hostname  string
	seq       uint64
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

func csr(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "test"}}, key)
	require.NoError(t, err)
	return der
}

func facts(machineID, hostname string) *agentv1.HostFacts {
	return &agentv1.HostFacts{
		Hostname: hostname, Os: "linux", Platform: "debian", PlatformVersion: "12", Arch: "amd64", MachineId: machineID, AgentVersion: "test",
		Interfaces: []*agentv1.NetworkInterface{{Name: "eth0", Mac: "02:00:00:00:00:01", Addresses: []string{"192.0.2.10/24"}}},
	}
}

// createToken issues an enrollment token through the REST API.
func createToken(t *testing.T, env *apitest.Env, body map[string]any) (id, token string) {
	t.Helper()
	if body == nil {
		body = map[string]any{"name": "test"}
	}
	r := env.Client(t, env.AdminToken).Do("POST", "/api/v1/enrollment-tokens", body)
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	r.JSON(t, &out)
	return out.ID, out.Token
}

func enrollClient(env *apitest.Env) agentv1connect.EnrollmentServiceClient {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: env.TLSConfig(), ForceAttemptHTTP2: true}}
	return agentv1connect.NewEnrollmentServiceClient(hc, env.Server.URL)
}

// enroll enrolls a test agent, returning the Connect error when refused.
func enroll(t *testing.T, env *apitest.Env, token, machineID, hostname string) (*testAgent, error) {
	t.Helper()
	a := &testAgent{t: t, env: env, key: newKey(t), machineID: machineID, hostname: hostname}
	resp, err := enrollClient(env).Enroll(context.Background(), connect.NewRequest(&agentv1.EnrollRequest{
		Token: token, CsrDer: csr(t, a.key), Facts: facts(machineID, hostname),
	}))
	if err != nil {
		return nil, err
	}
	a.cert, err = x509.ParseCertificate(resp.Msg.GetCertificateDer())
	require.NoError(t, err)
	a.agentID, a.tenantID = resp.Msg.GetAgentId(), resp.Msg.GetTenantId()
	return a, nil
}

func mustEnroll(t *testing.T, env *apitest.Env, machineID, hostname string) *testAgent {
	t.Helper()
	_, token := createToken(t, env, nil)
	a, err := enroll(t, env, token, machineID, hostname)
	require.NoError(t, err)
	return a
}

func (a *testAgent) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{a.cert.Raw}, PrivateKey: a.key, Leaf: a.cert}
}

// rpc is an AgentService client presenting the agent's certificate.
func (a *testAgent) rpc(opts ...connect.ClientOption) agentv1connect.AgentServiceClient {
	cfg := a.env.TLSConfig()
	cfg.Certificates = []tls.Certificate{a.tlsCert()}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	a.t.Cleanup(tr.CloseIdleConnections)
	return agentv1connect.NewAgentServiceClient(&http.Client{Timeout: 30 * time.Second, Transport: tr}, a.env.Server.URL, opts...)
}

// report makes the next report.
func (a *testAgent) report() *agentv1.Report {
	a.seq++
	return &agentv1.Report{Seq: a.seq, CreatedAt: timestamppb.Now(), Facts: facts(a.machineID, a.hostname), Queue: &agentv1.QueueStats{Depth: 1}}
}

func (a *testAgent) heartbeat(reports ...*agentv1.Report) (*agentv1.HeartbeatResponse, error) {
	resp, err := a.rpc().Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: reports}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// agentJSON is the REST view of an agent.
type agentJSON struct {
	ID             string            `json:"id"`
	Hostname       string            `json:"hostname"`
	MachineID      string            `json:"machine_id"`
	Status         string            `json:"status"`
	Labels         map[string]string `json:"labels"`
	SiteID         *string           `json:"site_id"`
	LastSeenAt     *time.Time        `json:"last_seen_at"`
	LastSeq        int64             `json:"last_seq"`
	ReportsApplied int64             `json:"reports_applied"`
	AssetID        string            `json:"asset_id"`
	Queue          struct {
		Depth   int64 `json:"depth"`
		Dropped int64 `json:"dropped"`
	} `json:"queue"`
	Certificate *struct {
		Serial      string    `json:"serial"`
		Fingerprint string    `json:"sha256_fingerprint"`
		NotAfter    time.Time `json:"not_after"`
	} `json:"certificate"`
}

func getAgent(t *testing.T, env *apitest.Env, id string) agentJSON {
	t.Helper()
	r := env.Client(t, env.AdminToken).Do("GET", "/api/v1/agents/"+id, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var a agentJSON
	r.JSON(t, &a)
	return a
}
