// Package compliance maps what Edgeward observes onto compliance controls:
// the shipped catalog (package catalog) read back from the database, each
// tenant's control status under row-level security, and the evaluators that
// compute status from live data and keep every result as evidence.
package compliance

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/evidence"
)

// Statuses of a control.
const (
	StatusPassing       = "passing"
	StatusFailing       = "failing"
	StatusNotApplicable = "not_applicable"
	StatusUnknown       = "unknown"
)

// Params are the tenant's policy settings the evaluators read. Defaults
// stand until the tenant's compliance policies set them.
type Params struct {
	// UnauthorizedSLA is how long an unauthorized-device alert may stay
	// unresolved.
	UnauthorizedSLA time.Duration
	// MissedHeartbeats is how many heartbeat intervals an agent may miss
	// before the inventory counts it stale.
	MissedHeartbeats int
	// MaxCertLifetime is the longest agent certificate lifetime accepted.
	MaxCertLifetime time.Duration
}

// DefaultParams are the baseline policies' defaults.
var DefaultParams = Params{UnauthorizedSLA: 24 * time.Hour, MissedHeartbeats: 3, MaxCertLifetime: 30 * 24 * time.Hour}

// result is one evaluator's verdict.
type result struct {
	Status  string
	Reason  string
	Figures map[string]any
	// Cited are evidence ids the verdict rests on (an overdue alert's).
	Cited []uuid.UUID
}

// evaluator computes a verdict for its controls from the tenant's data.
type evaluator struct {
	Name     string
	Controls []string
	Eval     func(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, p Params) (result, error)
}

// Evaluators are the automated checks, each with the controls it decides.
var evaluators = []evaluator{
	{Name: "asset_inventory_coverage", Controls: []string{"nist-800-53-r5:cm-8", "cis-v8:1.1"}, Eval: inventoryCoverage},
	{Name: "unauthorized_assets_within_sla", Controls: []string{"nist-800-53-r5:cm-8.3", "cis-v8:1.2"}, Eval: unauthorizedWithinSLA},
	{Name: "device_authentication", Controls: []string{"nist-800-53-r5:ia-3"}, Eval: deviceAuthentication},
	{Name: "audit_integrity", Controls: []string{"nist-800-53-r5:au-9"}, Eval: auditIntegrity},
	{Name: "audit_generation", Controls: []string{"nist-800-53-r5:au-2", "nist-800-53-r5:au-12"}, Eval: auditGeneration},
}

// EvaluatedControls lists every control an evaluator decides.
func EvaluatedControls() []string {
	var out []string
	for _, e := range evaluators {
		out = append(out, e.Controls...)
	}
	return out
}

// inventoryCoverage (CM-8, CIS 1.1): the inventory is current when every
// enrolled agent reports within its allowance of missed heartbeats.
func inventoryCoverage(ctx context.Context, tx pgx.Tx, _ uuid.UUID, p Params) (result, error) {
	var agents, stale, assets int
	err := tx.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE last_seen_at IS NULL OR last_seen_at < now() - make_interval(secs => heartbeat_interval_seconds * $1)),
		(SELECT count(*) FROM assets WHERE merged_into IS NULL)
		FROM agents WHERE revoked_at IS NULL`, p.MissedHeartbeats).Scan(&agents, &stale, &assets)
	if err != nil {
		return result{}, fmt.Errorf("inventory coverage: %w", err)
	}
	figures := map[string]any{"agents": agents, "stale_agents": stale, "assets": assets, "missed_heartbeats_allowed": p.MissedHeartbeats}
	switch {
	case agents == 0:
		return result{StatusUnknown, "no enrolled agent reports the inventory", figures, nil}, nil
	case stale > 0:
		return result{StatusFailing, fmt.Sprintf("%d of %d agents missed more than %d heartbeats: the inventory is not current", stale, agents, p.MissedHeartbeats), figures, nil}, nil
	}
	return result{StatusPassing, fmt.Sprintf("every enrolled agent reports within %d heartbeat intervals", p.MissedHeartbeats), figures, nil}, nil
}

// unauthorizedWithinSLA (CM-8(3), CIS 1.2): no unauthorized-device alert
// stays unresolved past the SLA. A failing verdict cites the overdue
// alerts' evidence.
func unauthorizedWithinSLA(ctx context.Context, tx pgx.Tx, _ uuid.UUID, p Params) (result, error) {
	var open, overdue int
	err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE first_seen_at < now() - make_interval(secs => $1))
		FROM alerts WHERE type = 'unauthorized_device' AND status <> 'resolved'`, p.UnauthorizedSLA.Seconds()).Scan(&open, &overdue)
	if err != nil {
		return result{}, fmt.Errorf("unauthorized within sla: %w", err)
	}
	figures := map[string]any{"open_alerts": open, "overdue_alerts": overdue, "sla_seconds": int64(p.UnauthorizedSLA.Seconds())}
	if overdue == 0 {
		return result{StatusPassing, fmt.Sprintf("no unauthorized-device alert is unresolved past the %s SLA", p.UnauthorizedSLA), figures, nil}, nil
	}
	rows, err := tx.Query(ctx, `SELECT e.id FROM alerts a JOIN evidence e ON e.tenant_id = a.tenant_id AND e.alert_id = a.id
		WHERE a.type = 'unauthorized_device' AND a.status <> 'resolved' AND a.first_seen_at < now() - make_interval(secs => $1)
		ORDER BY a.first_seen_at, e.id LIMIT 50`, p.UnauthorizedSLA.Seconds())
	if err != nil {
		return result{}, fmt.Errorf("unauthorized within sla: %w", err)
	}
	cited, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return result{}, err
	}
	return result{StatusFailing, fmt.Sprintf("%d unauthorized-device alerts unresolved past the %s SLA", overdue, p.UnauthorizedSLA), figures, cited}, nil
}

// deviceAuthentication (IA-3): every enrolled agent authenticates with a
// current certificate that has not expired and whose lifetime is within the
// tenant's policy. Certificates start a few minutes early (clock skew); up
// to an hour of that is not counted as lifetime.
func deviceAuthentication(ctx context.Context, tx pgx.Tx, _ uuid.UUID, p Params) (result, error) {
	var agents, expired, missing, tooLong int
	err := tx.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE c.not_after < now()),
		count(*) FILTER (WHERE c.agent_id IS NULL),
		count(*) FILTER (WHERE c.not_after - c.not_before > make_interval(secs => $1) + interval '1 hour')
		FROM agents a LEFT JOIN agent_certificates c ON c.tenant_id = a.tenant_id AND c.agent_id = a.id AND c.state = 'current'
		WHERE a.revoked_at IS NULL`, p.MaxCertLifetime.Seconds()).Scan(&agents, &expired, &missing, &tooLong)
	if err != nil {
		return result{}, fmt.Errorf("device authentication: %w", err)
	}
	figures := map[string]any{"agents": agents, "expired_certificates": expired, "without_certificate": missing,
		"lifetime_over_policy": tooLong, "max_lifetime_seconds": int64(p.MaxCertLifetime.Seconds())}
	switch {
	case agents == 0:
		return result{StatusUnknown, "no enrolled agents", figures, nil}, nil
	case expired+missing > 0:
		return result{StatusFailing, fmt.Sprintf("%d of %d agents have no valid current certificate", expired+missing, agents), figures, nil}, nil
	case tooLong > 0:
		return result{StatusFailing, fmt.Sprintf("%d of %d agents hold certificates valid longer than the policy's %s", tooLong, agents, p.MaxCertLifetime), figures, nil}, nil
	}
	return result{StatusPassing, "every enrolled agent authenticates with a valid current certificate within the lifetime policy", figures, nil}, nil
}

// auditIntegrity (AU-9): the tenant's audit hash chain verifies.
func auditIntegrity(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, _ Params) (result, error) {
	v, err := audit.Verify(ctx, tx, tenantID)
	if err != nil {
		return result{}, fmt.Errorf("audit integrity: %w", err)
	}
	figures := map[string]any{"events": v.EventCount, "head_seq": v.HeadSeq}
	if !v.OK() {
		figures["broken_at_seq"] = v.Broken.Seq
		return result{StatusFailing, fmt.Sprintf("the audit chain is broken at event %d: %s", v.Broken.Seq, v.Broken.Reason), figures, nil}, nil
	}
	return result{StatusPassing, "the audit hash chain verifies", figures, nil}, nil
}

// clockTolerance absorbs the difference between the database's clock
// (outbox times) and a replica's (audit times).
const clockTolerance = time.Minute

// auditGeneration (AU-2, AU-12): state changes are being recorded: the
// trail has events, and none of the domain changes is newer than its last
// event (every change writes its audit event in the same transaction).
func auditGeneration(ctx context.Context, tx pgx.Tx, _ uuid.UUID, _ Params) (result, error) {
	var events int64
	var lastEvent, lastChange *time.Time
	err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM audit_events), (SELECT max(occurred_at) FROM audit_events),
		(SELECT max(created_at) FROM outbox_events)`).Scan(&events, &lastEvent, &lastChange)
	if err != nil {
		return result{}, fmt.Errorf("audit generation: %w", err)
	}
	figures := map[string]any{"events": events}
	switch {
	case events == 0:
		return result{StatusFailing, "the audit trail holds no events", figures, nil}, nil
	case lastChange != nil && lastEvent != nil && lastChange.After(lastEvent.Add(clockTolerance)):
		return result{StatusFailing, "a domain change is newer than the last audit event", figures, nil}, nil
	}
	return result{StatusPassing, "audit events are recorded, and no domain change is newer than the last of them", figures, nil}, nil
}

// Reasons of passing verdicts name no live counts (those are in the
// figures): a verdict that changes nothing writes no new evidence.

// Evaluate runs every evaluator for the transaction's tenant and stores
// the verdicts. A control marked not_applicable is left alone. A verdict
// that differs from the stored one (status, reason or citations) is kept as
// evidence and linked; an unchanged one only moves evaluated_at. It returns
// how many statuses changed.
func Evaluate(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, p Params) (int, error) {
	changed := 0
	for _, e := range evaluators {
		r, err := e.Eval(ctx, tx, tenantID, p)
		if err != nil {
			return changed, err
		}
		var evidenceID *uuid.UUID
		for _, control := range e.Controls {
			n, err := store(ctx, tx, tenantID, control, e.Name, r, &evidenceID)
			if err != nil {
				return changed, err
			}
			changed += n
		}
	}
	return changed, nil
}

// store writes one control's verdict; evidenceID is the evaluator run's
// evidence, made on first need and shared by its controls.
func store(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, control, evaluatorName string, r result, evidenceID **uuid.UUID) (int, error) {
	var status, reason string
	var cited []uuid.UUID
	err := tx.QueryRow(ctx, `SELECT s.status, s.reason,
		coalesce((SELECT array_agg(evidence_id ORDER BY evidence_id) FROM control_evidence
		           WHERE control_id = s.control_id AND role = 'cited'), '{}')
		FROM control_status s WHERE s.control_id = $1 FOR UPDATE`, control).Scan(&status, &reason, &cited)
	exists := err == nil
	if err != nil && err != pgx.ErrNoRows {
		return 0, fmt.Errorf("read control status: %w", err)
	}
	if status == StatusNotApplicable {
		return 0, nil
	}
	want := slices.Clone(r.Cited)
	slices.SortFunc(want, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	if exists && status == r.Status && reason == r.Reason && slices.Equal(cited, want) {
		_, err := tx.Exec(ctx, `UPDATE control_status SET evaluated_at = now() WHERE control_id = $1`, control)
		return 0, err
	}
	if *evidenceID == nil {
		content := map[string]any{"evaluator": evaluatorName, "status": r.Status, "reason": r.Reason, "figures": r.Figures}
		if len(r.Cited) > 0 {
			ids := make([]string, len(r.Cited))
			for i, c := range r.Cited {
				ids[i] = c.String()
			}
			content["cited_evidence"] = ids
		}
		id, err := evidence.Add(ctx, tx, tenantID, evidence.Record{Kind: evidence.KindControlEvaluation, SourceType: "evaluator",
			SourceID: evaluatorName, Content: content})
		if err != nil {
			return 0, err
		}
		*evidenceID = &id
	}
	tag, err := tx.Exec(ctx, `INSERT INTO control_status (tenant_id, control_id, status, evaluator, reason, evaluated_at, evidence_id, changed_at)
		VALUES ($1, $2, $3, $4, $5, now(), $6, now())
		ON CONFLICT (tenant_id, control_id) DO UPDATE SET status = EXCLUDED.status, evaluator = EXCLUDED.evaluator,
		reason = EXCLUDED.reason, evaluated_at = EXCLUDED.evaluated_at, evidence_id = EXCLUDED.evidence_id,
		changed_at = CASE WHEN control_status.status = EXCLUDED.status THEN control_status.changed_at ELSE EXCLUDED.changed_at END
		WHERE control_status.status <> 'not_applicable'`,
		tenantID, control, r.Status, evaluatorName, r.Reason, **evidenceID)
	if err != nil {
		return 0, fmt.Errorf("store control status: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return 0, nil // marked not applicable meanwhile: left alone
	}
	if _, err := tx.Exec(ctx, `DELETE FROM control_evidence WHERE control_id = $1 AND role = 'cited'`, control); err != nil {
		return 0, err
	}
	links := append([]uuid.UUID{**evidenceID}, r.Cited...)
	roles := make([]string, len(links))
	for i := range roles {
		roles[i] = "cited"
	}
	roles[0] = "evaluation"
	if _, err := tx.Exec(ctx, `INSERT INTO control_evidence (tenant_id, control_id, evidence_id, role)
		SELECT $1, $2, e, r FROM unnest($3::uuid[], $4::text[]) AS u(e, r) ON CONFLICT DO NOTHING`, tenantID, control, links, roles); err != nil {
		return 0, fmt.Errorf("link evidence: %w", err)
	}
	if !exists || status != r.Status {
		return 1, nil
	}
	return 0, nil
}
