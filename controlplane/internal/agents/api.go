package agents

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/discovery"
	"github.com/edgeward/edgeward/controlplane/internal/outbox"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// Agent is an enrolled agent as the REST API shows it.
type Agent struct {
	ID              uuid.UUID
	MachineID       string
	Hostname        string
	OS              string
	Platform        string
	PlatformVersion string
	KernelVersion   string
	Arch            string
	AgentVersion    string
	Status          string
	Labels          map[string]string
	SiteID          *uuid.UUID
	EnrolledAt      time.Time
	LastSeenAt      *time.Time
	Interval        int
	QueueDepth      int64
	QueueDropped    int64
	QueueUnqueued   int64
	QueueErrorKind  *string
	QueueErrorAt    *time.Time
	QueueFailing    *time.Time
	LastSeq         int64
	FirstSeq        int64
	ReportsApplied  int64
	AssetID         uuid.UUID
	RevokedAt       *time.Time
	CertSerial      *string
	CertFingerprint []byte
	CertNotBefore   *time.Time
	CertNotAfter    *time.Time
}

// statusSQL derives an agent's state: revoked, stale after three missed
// intervals, else active.
const statusSQL = `CASE WHEN a.revoked_at IS NOT NULL THEN 'revoked'
	WHEN coalesce(a.last_seen_at, a.enrolled_at) < now() - make_interval(secs => 3 * a.heartbeat_interval_seconds) THEN 'stale'
	ELSE 'active' END`

const agentColumns = `a.id, a.machine_id, a.hostname, a.os, a.platform, a.platform_version, a.kernel_version, a.arch, a.agent_version,
	` + statusSQL + `, a.labels, a.site_id, a.enrolled_at, a.last_seen_at, a.heartbeat_interval_seconds, a.queue_depth, a.queue_dropped,
	a.queue_unqueued, a.queue_error_kind, a.queue_error_at, a.queue_failing_since, a.last_seq, a.first_seq, a.reports_applied, a.asset_id, a.revoked_at, c.serial, c.fingerprint, c.not_before, c.not_after`

const agentFrom = ` FROM agents a LEFT JOIN agent_certificates c
	ON c.tenant_id = a.tenant_id AND c.agent_id = a.id AND c.state = 'current' AND a.revoked_at IS NULL`

func scanAgent(row pgx.Row) (Agent, error) {
	var a Agent
	err := row.Scan(&a.ID, &a.MachineID, &a.Hostname, &a.OS, &a.Platform, &a.PlatformVersion, &a.KernelVersion, &a.Arch, &a.AgentVersion,
		&a.Status, &a.Labels, &a.SiteID, &a.EnrolledAt, &a.LastSeenAt, &a.Interval, &a.QueueDepth, &a.QueueDropped,
		&a.QueueUnqueued, &a.QueueErrorKind, &a.QueueErrorAt, &a.QueueFailing, &a.LastSeq, &a.FirstSeq, &a.ReportsApplied, &a.AssetID, &a.RevokedAt, &a.CertSerial, &a.CertFingerprint, &a.CertNotBefore, &a.CertNotAfter)
	a.EnrolledAt = a.EnrolledAt.UTC()
	a.LastSeenAt, a.RevokedAt, a.CertNotBefore, a.CertNotAfter = api.UTC(a.LastSeenAt), api.UTC(a.RevokedAt), api.UTC(a.CertNotBefore), api.UTC(a.CertNotAfter)
	a.QueueErrorAt, a.QueueFailing = api.UTC(a.QueueErrorAt), api.UTC(a.QueueFailing)
	return a, err
}

func getAgent(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Agent, error) {
	a, err := scanAgent(tx.QueryRow(ctx, `SELECT `+agentColumns+agentFrom+` WHERE a.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, problem.NotFound("agent")
	}
	return a, err
}

func (a Agent) toAPI() api.Agent {
	labels := a.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	out := api.Agent{
		Id: a.ID, MachineId: a.MachineID, Hostname: a.Hostname, Os: a.OS, Platform: a.Platform, PlatformVersion: a.PlatformVersion,
		KernelVersion: a.KernelVersion, Arch: a.Arch, AgentVersion: a.AgentVersion, Status: api.AgentStatus(a.Status), Labels: labels,
		SiteId: a.SiteID, EnrolledAt: a.EnrolledAt, LastSeenAt: a.LastSeenAt, HeartbeatIntervalSeconds: a.Interval,
		Queue: api.AgentQueueHealth{Depth: a.QueueDepth, Dropped: a.QueueDropped, Unqueued: a.QueueUnqueued,
			Writable: a.QueueFailing == nil, FailingSince: a.QueueFailing, LastErrorAt: a.QueueErrorAt},
		AssetId: a.AssetID, RevokedAt: a.RevokedAt,
		LastSeq: a.LastSeq, FirstSeq: a.FirstSeq, ReportsApplied: a.ReportsApplied,
	}
	if a.QueueErrorKind != nil {
		kind := api.AgentQueueErrorKind(*a.QueueErrorKind)
		out.Queue.LastErrorKind = &kind
	}
	if a.CertSerial != nil && a.CertNotBefore != nil && a.CertNotAfter != nil {
		out.Certificate = &api.AgentCertificate{Serial: *a.CertSerial, Sha256Fingerprint: hex.EncodeToString(a.CertFingerprint),
			NotBefore: *a.CertNotBefore, NotAfter: *a.CertNotAfter}
	}
	return out
}

// ListAgents implements GET /api/v1/agents.
func (s *Service) ListAgents(ctx context.Context, req api.ListAgentsRequestObject) (api.ListAgentsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	q := `SELECT ` + agentColumns + agentFrom + ` WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if req.Params.Status != nil {
		q += " AND " + statusSQL + " = " + arg(string(*req.Params.Status))
	}
	if req.Params.SiteId != nil {
		q += " AND a.site_id = " + arg(*req.Params.SiteId)
	}
	var cur idCursor
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		q += " AND a.id < " + arg(cur.ID)
	}
	q += " ORDER BY a.id DESC LIMIT " + arg(limit+1)
	var list []Agent
	if err := db.InTenant(ctx, s.cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Agent, error) { return scanAgent(r) })
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListAgents200JSONResponse{Items: make([]api.Agent, 0, len(list))}
	for _, a := range list {
		out.Items = append(out.Items, a.toAPI())
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].ID})
	}
	return out, nil
}

// GetAgent implements GET /api/v1/agents/{agent_id}.
func (s *Service) GetAgent(ctx context.Context, req api.GetAgentRequestObject) (api.GetAgentResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var a Agent
	if err := db.InTenant(ctx, s.cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		a, err = getAgent(ctx, tx, req.AgentId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetAgent200JSONResponse(a.toAPI()), nil
}

// RevokeAgent implements POST /api/v1/agents/{agent_id}/revoke. Every
// certificate of the agent stops working at once, on every replica.
func (s *Service) RevokeAgent(ctx context.Context, req api.RevokeAgentRequestObject) (api.RevokeAgentResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	reason := ""
	if req.Body != nil && req.Body.Reason != nil {
		reason = *req.Body.Reason
	}
	var a Agent
	err = db.InTenant(ctx, s.cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		var assetID uuid.UUID
		var hostname string
		err := tx.QueryRow(ctx, `UPDATE agents SET revoked_at = now(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING asset_id, hostname`,
			req.AgentId, c.PrincipalID).Scan(&assetID, &hostname)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			// Unknown, or revoked already: either way nothing changes.
		case err != nil:
			return err
		default:
			if _, err := tx.Exec(ctx, `UPDATE agent_certificates SET state = 'retired' WHERE agent_id = $1 AND state <> 'retired'`, req.AgentId); err != nil {
				return err
			}
			if err := s.cfg.Assets.DetachAgent(ctx, tx, c.TenantID, assetID, req.AgentId); err != nil {
				return err
			}
			details := map[string]any{"agent_id": req.AgentId.String(), "hostname": hostname}
			if reason != "" {
				details["reason"] = reason
			}
			if err := s.cfg.Assets.Record(ctx, tx, c.TenantID, []assets.TimelineEntry{{AssetID: assetID, At: s.cfg.now(), Kind: assets.KindRevoked,
				Summary: "agent revoked", Details: details}}); err != nil {
				return err
			}
			// The asset timeline keeps the reason as typed (it is redacted per
			// reader); the audit trail, which every reader reads alike, keeps
			// it masked.
			auditDetails := map[string]any{"agent_id": req.AgentId.String(), "hostname": hostname}
			if reason != "" {
				auditDetails["reason"] = redact.Masked(reason)
			}
			if err := audit.Record(ctx, tx, c.TenantID, audit.Entry{Action: "agent.revoked", TargetType: "agent", TargetID: req.AgentId.String(), Details: auditDetails}); err != nil {
				return err
			}
			if err := outbox.Publish(ctx, tx, c.TenantID, outbox.Event{Type: "agent.revoked", AggregateType: "agent", AggregateID: req.AgentId,
				Payload: map[string]any{"agent_id": req.AgentId, "asset_id": assetID, "hostname": hostname}}); err != nil {
				return err
			}
			if err := notifyIdentityChanged(ctx, tx, req.AgentId); err != nil {
				return err
			}
		}
		a, err = getAgent(ctx, tx, req.AgentId)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.verifier.Forget(req.AgentId)
	return api.RevokeAgent200JSONResponse(a.toAPI()), nil
}

// PostAgentHeartbeat implements POST /api/v1/agents/{agent_id}/telemetry/heartbeat,
// the REST form of AgentService.Heartbeat, on the same ingest path.
func (s *Service) PostAgentHeartbeat(ctx context.Context, req api.PostAgentHeartbeatRequestObject) (api.PostAgentHeartbeatResponseObject, error) {
	id, ok := IdentityFrom(ctx)
	if !ok {
		return nil, errors.New("agent heartbeat without an authenticated agent")
	}
	if id.AgentID != req.AgentId {
		return nil, problem.Newf(http.StatusForbidden, problem.CodeForbidden, "this client certificate belongs to agent %s, not %s", id.AgentID, req.AgentId)
	}
	b := req.Body
	r := Report{Seq: uint64(b.Seq), At: b.SentAt.UTC(), Facts: factsFromAPI(b.Facts)}
	if b.Queue != nil {
		r.Queue = &QueueStats{Depth: b.Queue.Depth, Dropped: b.Queue.Dropped}
		if b.Queue.Unqueued != nil {
			r.Queue.Unqueued = *b.Queue.Unqueued
		}
	}
	if b.Observations != nil {
		r.Counts = len(*b.Observations)
		for _, o := range *b.Observations {
			x := discovery.Observation{MAC: clean(o.Mac), IP: clean(o.Ip), SeenAt: o.SeenAt.UTC()}
			if o.Interface != nil {
				x.Interface = clean(*o.Interface)
			}
			if o.State != nil {
				x.State = clean(*o.State)
			}
			r.Observations = append(r.Observations, x)
		}
	}
	ack, err := s.ingester.Submit(ctx, id, []Report{r}, nil, false)
	if err != nil {
		var ie *IdentityError
		if errors.As(err, &ie) {
			return nil, identityProblem(ie)
		}
		return nil, err
	}
	return api.PostAgentHeartbeat202JSONResponse{Accepted: len(ack.Seqs) == 1, Duplicate: ack.Duplicates > 0, NextIntervalSeconds: int(ack.Interval / time.Second)}, nil
}

// AuthenticateAgent authenticates a REST call by the agent's client
// certificate, for operations marked x-edgeward-auth: agent-certificate.
func (s *Service) AuthenticateAgent(r *http.Request) (context.Context, error) {
	id, err := s.verifier.VerifyTLS(r.Context(), r.TLS)
	if err != nil {
		var ie *IdentityError
		if errors.As(err, &ie) {
			return nil, identityProblem(ie)
		}
		return nil, err
	}
	return WithIdentity(r.Context(), id), nil
}

func identityProblem(ie *IdentityError) *problem.Problem {
	return problem.New(http.StatusUnauthorized, ie.Code, ie.Msg)
}
