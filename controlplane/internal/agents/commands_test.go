package agents_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

type commandJSON struct {
	ID          string     `json:"id"`
	AgentID     string     `json:"agent_id"`
	Type        string     `json:"type"`
	Status      string     `json:"status"`
	CreatedBy   *string    `json:"created_by"`
	DeliveredAt *time.Time `json:"delivered_at"`
	CompletedAt *time.Time `json:"completed_at"`
	Result      *string    `json:"result"`
}

// A command travels: queued by an admin over REST, delivered once in the
// agent's next heartbeat response, settled by the result the agent reports,
// and readable as history by every role.
func TestCommandsAreDeliveredOnceAndSettledByTheAgent(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m1", "h1")
	other := mustEnroll(t, env, "m2", "h2")
	admin := env.Client(t, env.AdminToken)
	analyst := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst").Secret)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)

	var cmd commandJSON
	r := admin.Do("POST", "/api/v1/agents/"+a.AgentID+"/commands", map[string]any{"type": "refresh_facts"})
	require.Equal(t, http.StatusCreated, r.Status)
	r.JSON(t, &cmd)
	assert.Equal(t, "queued", cmd.Status)
	assert.Equal(t, a.AgentID, cmd.AgentID)
	require.NotNil(t, cmd.CreatedBy)

	// Bad input changes nothing; only admins queue.
	assert.Equal(t, "validation_failed", admin.Do("POST", "/api/v1/agents/"+a.AgentID+"/commands", map[string]any{"type": "rm -rf /"}).Problem(t, 422).Code)
	assert.Equal(t, http.StatusUnprocessableEntity, admin.Do("POST", "/api/v1/agents/"+a.AgentID+"/commands", map[string]any{"type": "run_discovery", "expires_in_seconds": 1}).Status)
	assert.Equal(t, http.StatusForbidden, analyst.Do("POST", "/api/v1/agents/"+a.AgentID+"/commands", map[string]any{"type": "refresh_facts"}).Status)
	assert.Equal(t, "not_found", admin.Do("POST", "/api/v1/agents/"+uuid.NewString()+"/commands", map[string]any{"type": "refresh_facts"}).Problem(t, 404).Code)

	// The other agent does not receive it; this one does, exactly once.
	resp, err := other.heartbeat(other.report())
	require.NoError(t, err)
	assert.Empty(t, resp.GetCommands())
	resp, err = a.heartbeat(a.report())
	require.NoError(t, err)
	require.Len(t, resp.GetCommands(), 1)
	assert.Equal(t, cmd.ID, resp.GetCommands()[0].GetId())
	assert.Equal(t, agentv1.CommandType_COMMAND_TYPE_REFRESH_FACTS, resp.GetCommands()[0].GetType())
	resp, err = a.heartbeat(a.report())
	require.NoError(t, err)
	assert.Empty(t, resp.GetCommands(), "delivered once")
	analyst.Do("GET", "/api/v1/commands/"+cmd.ID, nil).JSON(t, &cmd)
	assert.Equal(t, "delivered", cmd.Status)
	assert.NotNil(t, cmd.DeliveredAt)

	// Another agent cannot settle it; its own agent can, once.
	result := &agentv1.CommandResult{CommandId: cmd.ID, Succeeded: true, Summary: "facts refreshed", CompletedAt: timestamppb.Now()}
	rep := other.report()
	rep.CommandResults = []*agentv1.CommandResult{{CommandId: cmd.ID, Succeeded: false, Summary: "forged", CompletedAt: timestamppb.Now()}}
	_, err = other.heartbeat(rep)
	require.NoError(t, err)
	analyst.Do("GET", "/api/v1/commands/"+cmd.ID, nil).JSON(t, &cmd)
	assert.Equal(t, "delivered", cmd.Status, "another agent's result is ignored")
	rep = a.report()
	rep.CommandResults = []*agentv1.CommandResult{result}
	_, err = a.heartbeat(rep)
	require.NoError(t, err)
	rep = a.report()
	rep.CommandResults = []*agentv1.CommandResult{{CommandId: cmd.ID, Succeeded: false, Summary: "late duplicate", CompletedAt: timestamppb.Now()}}
	_, err = a.heartbeat(rep)
	require.NoError(t, err)
	auditor.Do("GET", "/api/v1/commands/"+cmd.ID, nil).JSON(t, &cmd)
	assert.Equal(t, "succeeded", cmd.Status)
	require.NotNil(t, cmd.Result)
	assert.Equal(t, "facts refreshed", *cmd.Result)
	assert.NotNil(t, cmd.CompletedAt)

	// A command nobody collects in time shows as expired and is never
	// delivered.
	var late commandJSON
	admin.Do("POST", "/api/v1/agents/"+a.AgentID+"/commands", map[string]any{"type": "run_discovery", "expires_in_seconds": 10}).JSON(t, &late)
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE agent_commands SET created_at = now() - interval '1 minute', expires_at = now() - interval '1 second' WHERE id = $1", late.ID)
		return err
	}))
	resp, err = a.heartbeat(a.report())
	require.NoError(t, err)
	assert.Empty(t, resp.GetCommands())

	// History: newest first, paged, readable by auditors.
	var list struct {
		Items      []commandJSON `json:"items"`
		NextCursor *string       `json:"next_cursor"`
	}
	auditor.Do("GET", "/api/v1/agents/"+a.AgentID+"/commands?limit=1", nil).JSON(t, &list)
	require.Len(t, list.Items, 1)
	assert.Equal(t, late.ID, list.Items[0].ID)
	assert.Equal(t, "expired", list.Items[0].Status)
	require.NotNil(t, list.NextCursor)
	auditor.Do("GET", "/api/v1/agents/"+a.AgentID+"/commands?limit=1&cursor="+*list.NextCursor, nil).JSON(t, &list)
	require.Len(t, list.Items, 1)
	assert.Equal(t, cmd.ID, list.Items[0].ID)
	assert.Nil(t, list.NextCursor)
	assert.Equal(t, "not_found", auditor.Do("GET", "/api/v1/agents/"+uuid.NewString()+"/commands", nil).Problem(t, 404).Code)
	assert.Equal(t, "not_found", auditor.Do("GET", "/api/v1/commands/"+uuid.NewString(), nil).Problem(t, 404).Code)
	assert.Equal(t, "invalid_cursor", auditor.Do("GET", "/api/v1/agents/"+a.AgentID+"/commands?cursor=not-a-cursor", nil).Problem(t, 400).Code)

	// A revoked agent will never collect a command: queueing is refused.
	require.Equal(t, http.StatusOK, admin.Do("POST", "/api/v1/agents/"+other.AgentID+"/revoke", nil).Status)
	assert.Equal(t, "conflict", admin.Do("POST", "/api/v1/agents/"+other.AgentID+"/commands", map[string]any{"type": "refresh_facts"}).Problem(t, 409).Code)

	// Other tenants see nothing of it.
	oTenant, oAdmin := env.NewTenant(t, "other")
	_ = oTenant
	assert.Equal(t, "not_found", env.Client(t, oAdmin).Do("GET", "/api/v1/commands/"+cmd.ID, nil).Problem(t, 404).Code)
}

// The REST heartbeat's answer cannot carry commands, so it leaves them
// queued; a delivered command whose result never comes is offered again
// once its lease runs out, and its first result settles it.
func TestCommandsSurviveALostResponse(t *testing.T) {
	env := apitest.Start(t)
	a := mustEnroll(t, env, "m1", "h1")
	admin := env.Client(t, env.AdminToken)
	var cmd commandJSON
	admin.Do("POST", "/api/v1/agents/"+a.AgentID+"/commands", map[string]any{"type": "run_discovery"}).JSON(t, &cmd)

	a.Seq++
	r := env.CertClient(t, a.tlsCert()).Do("POST", "/api/v1/agents/"+a.AgentID+"/telemetry/heartbeat",
		map[string]any{"seq": a.Seq, "sent_at": time.Now().UTC().Format(time.RFC3339)})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	admin.Do("GET", "/api/v1/commands/"+cmd.ID, nil).JSON(t, &cmd)
	assert.Equal(t, "queued", cmd.Status, "a REST heartbeat does not take commands it cannot carry")

	resp, err := a.heartbeat(a.report())
	require.NoError(t, err)
	require.Len(t, resp.GetCommands(), 1)
	// The response is lost. Within the lease the command is not offered
	// again; after it, it is.
	resp, err = a.heartbeat(a.report())
	require.NoError(t, err)
	assert.Empty(t, resp.GetCommands())
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE agent_commands SET delivered_at = now() - interval '6 minutes' WHERE id = $1", cmd.ID)
		return err
	}))
	resp, err = a.heartbeat(a.report())
	require.NoError(t, err)
	require.Len(t, resp.GetCommands(), 1, "offered again after the lease")
	assert.Equal(t, cmd.ID, resp.GetCommands()[0].GetId())

	rep := a.report()
	rep.CommandResults = []*agentv1.CommandResult{{CommandId: cmd.ID, Succeeded: true, Summary: "3 neighbours", CompletedAt: timestamppb.Now()}}
	_, err = a.heartbeat(rep)
	require.NoError(t, err)
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE agent_commands SET delivered_at = now() - interval '6 minutes' WHERE id = $1", cmd.ID)
		return err
	}))
	resp, err = a.heartbeat(a.report())
	require.NoError(t, err)
	assert.Empty(t, resp.GetCommands(), "a settled command is never offered again")
	admin.Do("GET", "/api/v1/commands/"+cmd.ID, nil).JSON(t, &cmd)
	assert.Equal(t, "succeeded", cmd.Status)
}
