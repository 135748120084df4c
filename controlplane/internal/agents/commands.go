package agents

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// Command types: built-in and safe, never arbitrary execution.
const (
	CommandRefreshFacts      = "refresh_facts"
	CommandRunDiscovery      = "run_discovery"
	CommandRotateCertificate = "rotate_certificate"
	// DefaultCommandTTL is how long a command may wait for delivery.
	DefaultCommandTTL = time.Hour
)

// PendingCommand is a command handed to an agent.
type PendingCommand struct {
	ID   uuid.UUID
	Type string
}

var commandTypes = map[string]agentv1.CommandType{
	CommandRefreshFacts:      agentv1.CommandType_COMMAND_TYPE_REFRESH_FACTS,
	CommandRunDiscovery:      agentv1.CommandType_COMMAND_TYPE_RUN_DISCOVERY,
	CommandRotateCertificate: agentv1.CommandType_COMMAND_TYPE_ROTATE_CERTIFICATE,
}

func (c PendingCommand) proto() *agentv1.Command {
	return &agentv1.Command{Id: c.ID.String(), Type: commandTypes[c.Type]}
}

// CommandLease is how long a delivered command waits for its result before
// it is offered again: a response lost on the way must not lose the
// command. The built-in commands are safe to run twice, and the first
// result settles a command.
const CommandLease = 5 * time.Minute

// deliverCommands hands the agents of a heartbeat batch their unexpired
// commands: queued ones, and delivered ones whose lease ran out without a
// result. One statement, served by a partial index that is empty for
// almost every agent.
func deliverCommands(ctx context.Context, tx pgx.Tx, agents []uuid.UUID) (map[uuid.UUID][]PendingCommand, error) {
	if len(agents) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `
		UPDATE agent_commands SET status = 'delivered', delivered_at = now()
		 WHERE agent_id = ANY($1) AND status IN ('queued', 'delivered') AND expires_at > now()
		   AND (status = 'queued' OR delivered_at < now() - $2::interval)
		RETURNING agent_id, id, type`, db.UUIDs(agents), CommandLease)
	if err != nil {
		return nil, fmt.Errorf("deliver commands: %w", err)
	}
	defer rows.Close()
	out := map[uuid.UUID][]PendingCommand{}
	for rows.Next() {
		var agent uuid.UUID
		var c PendingCommand
		if err := rows.Scan(&agent, &c.ID, &c.Type); err != nil {
			return nil, err
		}
		out[agent] = append(out[agent], c)
	}
	return out, rows.Err()
}

// completeCommands records what agents reported about their commands. A
// result for a command that is not the reporting agent's, or not
// outstanding, is ignored: one agent cannot settle another's command, and
// the same report may be delivered twice.
func completeCommands(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, results []CommandResult) error {
	for _, r := range results {
		status := "failed"
		if r.Succeeded {
			status = "succeeded"
		}
		summary := clean(r.Summary)
		if len(summary) > 500 {
			summary = summary[:500]
		}
		tag, err := tx.Exec(ctx, `
			UPDATE agent_commands SET status = $2, completed_at = $3, result = $4
			 WHERE id = $1 AND agent_id = $5 AND status IN ('queued', 'delivered')`, r.ID, status, r.CompletedAt, summary, r.agentID)
		if err != nil {
			return fmt.Errorf("complete command: %w", err)
		}
		if tag.RowsAffected() == 1 {
			if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "command." + status, TargetType: "command", TargetID: r.ID.String(),
				Details: map[string]any{"summary": redact.Masked(summary)}}); err != nil {
				return err
			}
		}
	}
	return nil
}

// commandColumns reports an undelivered command past its deadline as
// expired without writing: reads stay reads (auditors read in read-only
// transactions).
const commandColumns = `id, agent_id, type,
	CASE WHEN status = 'queued' AND expires_at <= now() THEN 'expired' ELSE status END,
	created_at, created_by, expires_at, delivered_at, completed_at, result`

func scanCommand(r pgx.Row) (api.Command, error) {
	var c api.Command
	var typ, status string
	var createdBy *uuid.UUID
	err := r.Scan(&c.Id, &c.AgentId, &typ, &status, &c.CreatedAt, &createdBy, &c.ExpiresAt, &c.DeliveredAt, &c.CompletedAt, &c.Result)
	c.Type, c.Status = api.CommandType(typ), api.CommandStatus(status)
	if createdBy != nil {
		s := createdBy.String()
		c.CreatedBy = &s
	}
	c.CreatedAt, c.ExpiresAt = c.CreatedAt.UTC(), c.ExpiresAt.UTC()
	c.DeliveredAt, c.CompletedAt = api.UTC(c.DeliveredAt), api.UTC(c.CompletedAt)
	return c, err
}

// redactCommand masks the MACs and addresses in the agent's result for a
// reader who does not see identifiers (red is nil for one who does): the
// agent writes it, and it may quote its neighbour table or an error.
func redactCommand(c *api.Command, red *redact.Redactor) {
	if red != nil && c.Result != nil {
		r := red.Text(*c.Result)
		c.Result = &r
	}
}

// QueueAgentCommand implements POST /api/v1/agents/{agent_id}/commands.
func (s *Service) QueueAgentCommand(ctx context.Context, req api.QueueAgentCommandRequestObject) (api.QueueAgentCommandResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	ttl := DefaultCommandTTL
	if req.Body.ExpiresInSeconds != nil {
		ttl = time.Duration(*req.Body.ExpiresInSeconds) * time.Second
	}
	var out api.Command
	err = db.InTenant(ctx, s.cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		var revoked bool
		err := tx.QueryRow(ctx, `SELECT revoked_at IS NOT NULL FROM agents WHERE id = $1`, req.AgentId).Scan(&revoked)
		if errors.Is(err, pgx.ErrNoRows) {
			return problem.NotFound("agent")
		}
		if err != nil {
			return err
		}
		if revoked {
			return problem.New(http.StatusConflict, problem.CodeConflict, "the agent is revoked: it will never receive the command")
		}
		id := uuid.Must(uuid.NewV7())
		if _, err := tx.Exec(ctx, `INSERT INTO agent_commands (tenant_id, id, agent_id, type, status, created_by, expires_at)
			VALUES ($1, $2, $3, $4, 'queued', $5, now() + $6::interval)`, c.TenantID, id, req.AgentId, string(req.Body.Type), c.PrincipalID, ttl); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, c.TenantID, audit.Entry{Action: "command.queued", TargetType: "agent", TargetID: req.AgentId.String(),
			Details: map[string]any{"command_id": id.String(), "type": string(req.Body.Type), "expires_in_seconds": int(ttl.Seconds())}}); err != nil {
			return err
		}
		out, err = scanCommand(tx.QueryRow(ctx, `SELECT `+commandColumns+` FROM agent_commands WHERE id = $1`, id))
		return err
	})
	if err != nil {
		return nil, err
	}
	return api.QueueAgentCommand201JSONResponse(out), nil
}

// ListAgentCommands implements GET /api/v1/agents/{agent_id}/commands.
func (s *Service) ListAgentCommands(ctx context.Context, req api.ListAgentCommandsRequestObject) (api.ListAgentCommandsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	var cur idCursor
	has, err := page.Decode(ctx, req.Params.Cursor, &cur)
	if err != nil {
		return nil, err
	}
	var list []api.Command
	err = db.InTenant(ctx, s.cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		if _, err := getAgent(ctx, tx, req.AgentId); err != nil {
			return err
		}
		q := `SELECT ` + commandColumns + ` FROM agent_commands WHERE agent_id = $1`
		args := []any{req.AgentId, limit + 1}
		if has {
			q += ` AND id < $3`
			args = append(args, cur.ID)
		}
		rows, err := tx.Query(ctx, q+` ORDER BY id DESC LIMIT $2`, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (api.Command, error) { return scanCommand(r) })
		if err != nil {
			return err
		}
		red, err := redact.ForReader(ctx, tx, c.TenantID, c.Role)
		for i := range list {
			redactCommand(&list[i], red)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListAgentCommands200JSONResponse{Items: list}
	if out.Items == nil {
		out.Items = []api.Command{}
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].Id})
	}
	return out, nil
}

// GetCommand implements GET /api/v1/commands/{command_id}.
func (s *Service) GetCommand(ctx context.Context, req api.GetCommandRequestObject) (api.GetCommandResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var out api.Command
	err = db.InTenant(ctx, s.cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		out, err = scanCommand(tx.QueryRow(ctx, `SELECT `+commandColumns+` FROM agent_commands WHERE id = $1`, req.CommandId))
		if errors.Is(err, pgx.ErrNoRows) {
			return problem.NotFound("command")
		}
		if err != nil {
			return err
		}
		red, err := redact.ForReader(ctx, tx, c.TenantID, c.Role)
		redactCommand(&out, red)
		return err
	})
	if err != nil {
		return nil, err
	}
	return api.GetCommand200JSONResponse(out), nil
}
