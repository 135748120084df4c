package agents_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
	"github.com/jackc/pgx/v5"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
	"github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1/agentv1connect"
)

// testAgent is a simulated agent (apitest.Agent) bound to one test.
type testAgent struct {
	*apitest.Agent
	t *testing.T
}

func newKey(t *testing.T) *ecdsa.PrivateKey { return apitest.NewKey(t) }

func csr(t *testing.T, key *ecdsa.PrivateKey) []byte { return apitest.CSR(t, key) }

func facts(machineID, hostname string) *agentv1.HostFacts { return apitest.Facts(machineID, hostname) }

func createToken(t *testing.T, env *apitest.Env, body map[string]any) (id, token string) {
	return env.EnrollmentToken(t, body)
}

func enrollClient(env *apitest.Env) agentv1connect.EnrollmentServiceClient { return env.EnrollClient() }

func enroll(t *testing.T, env *apitest.Env, token, machineID, hostname string) (*testAgent, error) {
	t.Helper()
	a, err := env.Enroll(t, token, machineID, hostname)
	if err != nil {
		return nil, err
	}
	return &testAgent{Agent: a, t: t}, nil
}

func mustEnroll(t *testing.T, env *apitest.Env, machineID, hostname string) *testAgent {
	t.Helper()
	_, token := createToken(t, env, nil)
	a, err := enroll(t, env, token, machineID, hostname)
	require.NoError(t, err)
	return a
}

func (a *testAgent) tlsCert() tls.Certificate { return a.TLSCertificate() }

func (a *testAgent) rpc(opts ...connect.ClientOption) agentv1connect.AgentServiceClient {
	return a.RPC(a.t, opts...)
}

func (a *testAgent) report() *agentv1.Report { return a.Report() }

func (a *testAgent) heartbeat(reports ...*agentv1.Report) (*agentv1.HeartbeatResponse, error) {
	resp, err := a.rpc().Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: reports}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// heartbeatLive is heartbeat with the agent's live queue figures.
func (a *testAgent) heartbeatLive(queue *agentv1.QueueStats, reports ...*agentv1.Report) (*agentv1.HeartbeatResponse, error) {
	resp, err := a.rpc().Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: reports, Queue: queue}))
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

// terminateListeners ends every LISTEN connection of the test database, as
// a network blip or a database restart would.
func terminateListeners(t *testing.T, env *apitest.Env) {
	t.Helper()
	ctx := context.Background()
	superURL, err := dbtest.SuperuserURL(ctx)
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, superURL)
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1 AND query ILIKE 'LISTEN%'`, env.DB.Name).Scan(&n))
	require.Positive(t, n, "no listening connection found")
}
