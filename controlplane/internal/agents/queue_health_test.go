package agents_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/controlplane/internal/agents"
	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// queueHealth is the REST view of an agent's queue.
type queueHealth struct {
	Depth         int64      `json:"depth"`
	Dropped       int64      `json:"dropped"`
	Unqueued      int64      `json:"unqueued"`
	Writable      bool       `json:"writable"`
	FailingSince  *time.Time `json:"failing_since"`
	LastErrorKind *string    `json:"last_error_kind"`
	LastErrorAt   *time.Time `json:"last_error_at"`
}

func getQueueHealth(t *testing.T, env *apitest.Env, id string) (queueHealth, agentJSON) {
	t.Helper()
	r := env.Client(t, env.AdminToken).Do("GET", "/api/v1/agents/"+id, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var a struct {
		Queue queueHealth `json:"queue"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &a))
	return a.Queue, getAgent(t, env, id)
}

// TestQueueHealthReachesTheAgentDetail: an agent that cannot write its
// queue (a full disk) sends heartbeats with no reports and its live queue
// figures; the agent detail says the queue is not writable, since when,
// why, and how many reports were lost. When the agent recovers, its next
// report clears the condition and keeps the count and the last failure.
func TestQueueHealthReachesTheAgentDetail(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m-full", "full")
	_, err := a.heartbeat(a.report())
	require.NoError(t, err)
	q, _ := getQueueHealth(t, env, a.AgentID)
	assert.Equal(t, queueHealth{Depth: 1, Writable: true}, q, "a healthy queue")

	// The disk fills: nothing can be queued, two reports are lost.
	since := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	last := since.Add(time.Minute)
	live := &agentv1.QueueStats{Depth: 0, Unqueued: 2, LastErrorKind: agentv1.QueueErrorKind_QUEUE_ERROR_KIND_NO_SPACE,
		LastErrorAt: timestamppb.New(last), FailingSince: timestamppb.New(since)}
	resp, err := a.heartbeatLive(live)
	require.NoError(t, err)
	assert.Empty(t, resp.GetAckedSeqs())
	q, ag := getQueueHealth(t, env, a.AgentID)
	assert.False(t, q.Writable)
	assert.EqualValues(t, 2, q.Unqueued)
	require.NotNil(t, q.FailingSince)
	assert.Equal(t, since, *q.FailingSince)
	require.NotNil(t, q.LastErrorKind)
	assert.Equal(t, "no_space", *q.LastErrorKind)
	require.NotNil(t, q.LastErrorAt)
	assert.Equal(t, last, *q.LastErrorAt)
	assert.EqualValues(t, 1, ag.LastSeq, "no report was applied")
	assert.Equal(t, "active", ag.Status, "the agent still calls")

	// Space returns: the first queued report carries the count (never a
	// failing_since: it was written), and so do the live figures.
	rep := a.report()
	rep.Queue = &agentv1.QueueStats{Unqueued: 3, LastErrorKind: agentv1.QueueErrorKind_QUEUE_ERROR_KIND_NO_SPACE, LastErrorAt: timestamppb.New(last.Add(time.Minute))}
	_, err = a.heartbeatLive(&agentv1.QueueStats{Unqueued: 3, LastErrorKind: agentv1.QueueErrorKind_QUEUE_ERROR_KIND_NO_SPACE,
		LastErrorAt: timestamppb.New(last.Add(time.Minute))}, rep)
	require.NoError(t, err)
	q, ag = getQueueHealth(t, env, a.AgentID)
	assert.True(t, q.Writable)
	assert.Nil(t, q.FailingSince)
	assert.EqualValues(t, 3, q.Unqueued)
	require.NotNil(t, q.LastErrorKind)
	assert.Equal(t, "no_space", *q.LastErrorKind, "the last failure stays, as history")
	assert.Equal(t, last.Add(time.Minute), *q.LastErrorAt)
	assert.EqualValues(t, 2, ag.LastSeq)
	assert.EqualValues(t, 2, ag.ReportsApplied, "seqs 1 and 2: contiguous, the lost reports never had one")

	// An older agent reports no failures: it does not erase the last one.
	_, err = a.heartbeat(a.report())
	require.NoError(t, err)
	q, _ = getQueueHealth(t, env, a.AgentID)
	assert.True(t, q.Writable)
	require.NotNil(t, q.LastErrorKind)
	assert.Equal(t, "no_space", *q.LastErrorKind)

	// The REST heartbeat carries the count too.
	body := map[string]any{"seq": 10, "sent_at": time.Now().UTC().Format(time.RFC3339), "queue": map[string]any{"depth": 0, "dropped": 0, "unqueued": 7}}
	r := env.CertClient(t, a.tlsCert()).Do("POST", "/api/v1/agents/"+a.AgentID+"/telemetry/heartbeat", body)
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	q, _ = getQueueHealth(t, env, a.AgentID)
	assert.EqualValues(t, 7, q.Unqueued)
	assert.True(t, q.Writable)
}

// TestGarbledQueueFiguresDoNotFailTheHeartbeat: counts past 2^53-1 (the
// API's integer range) are clamped, timestamps no database can hold are dropped, unknown kinds are
// "other"; the reports are applied all the same.
func TestGarbledQueueFiguresDoNotFailTheHeartbeat(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m-garbled", "garbled")
	rep := a.report()
	rep.Queue = &agentv1.QueueStats{Unqueued: 1 << 63, LastErrorKind: agentv1.QueueErrorKind(99), LastErrorAt: timestamppb.New(time.Now()),
		FailingSince: &timestamppb.Timestamp{Seconds: 1 << 60}}
	resp, err := a.heartbeatLive(nil, rep)
	require.NoError(t, err)
	assert.Equal(t, []uint64{rep.GetSeq()}, resp.GetAckedSeqs())
	q, _ := getQueueHealth(t, env, a.AgentID)
	assert.EqualValues(t, agents.MaxInteger, q.Unqueued)
	assert.True(t, q.Writable, "an unreadable failing_since is no failure")
	require.NotNil(t, q.LastErrorKind)
	assert.Equal(t, "other", *q.LastErrorKind)
}
