package agents_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1/agentv1connect"
)

// TestAgentProtocolRefusesBadInput: a sequence number past 2^63 was
// acknowledged but never applied (the agent would have deleted a report the
// server dropped), and one past 2^53 could not be read back exactly by a
// JSON client; a Connect JSON body gets the same check as REST bodies.
func TestAgentProtocolRefusesBadInput(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m1", "h1")
	_, err := a.heartbeat(a.report())
	require.NoError(t, err)

	for _, seq := range []uint64{math.MaxInt64 + 1, 1 << 53} {
		huge := a.report()
		huge.Seq = seq
		_, err = a.heartbeat(huge)
		require.Error(t, err)
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), err.Error())
		assert.Contains(t, err.Error(), "2^53-1")
	}
	assert.EqualValues(t, 1, getAgent(t, env, a.AgentID).LastSeq, "nothing applied")

	cfg := env.TLSConfig()
	cfg.Certificates = []tls.Certificate{a.tlsCert()}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	post := func(body string) (int, string) {
		req, err := http.NewRequestWithContext(context.Background(), "POST", env.Server.URL+agentv1connect.AgentServiceHeartbeatProcedure, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		var e struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, e.Code + " " + string(b)
	}
	// The JSON form works at all...
	status, body := post(`{"reports":[{"seq":"2"}]}`)
	require.Equal(t, 200, status, body)
	// ...and refuses what REST refuses.
	for name, body := range map[string]string{
		"deep":          `{"reports":[` + strings.Repeat("[", 100_000) + `]}`,
		"repeated key":  `{"reports":[],"reports":[]}`,
		"invalid UTF-8": "{\"reports\":[{\"seq\":\"3\",\"facts\":{\"hostname\":\"\xff\"}}]}",
	} {
		status, got := post(body)
		assert.Equal(t, 400, status, name)
		assert.True(t, strings.HasPrefix(got, "invalid_argument "), "%s: %s", name, got)
	}
	assert.EqualValues(t, 2, getAgent(t, env, a.AgentID).LastSeq)
}
