// Package alerts raises and works alerts. An unauthorized device raises one
// open alert of type unauthorized_device (one per asset; seeing it again
// updates the alert's count and last-seen time). Analysts acknowledge,
// assign and resolve it; each step is a timeline entry, an evidence record,
// an audit event and an outbox event, written in one transaction.
package alerts

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/evidence"
	"github.com/edgeward/edgeward/controlplane/internal/outbox"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// Alert states, types, resolutions.
const (
	StatusOpen         = "open"
	StatusAcknowledged = "acknowledged"
	StatusResolved     = "resolved"

	TypeUnauthorizedDevice = "unauthorized_device"

	ResolvedAuthorized    = "authorized"
	ResolvedRemoved       = "removed"
	ResolvedFalsePositive = "false_positive"
)

// Alert is a stored alert.
type Alert struct {
	ID             uuid.UUID
	Type           string
	Status         string
	Severity       string
	Title          string
	AssetID        uuid.UUID
	SiteID         *uuid.UUID
	FirstSeenAt    time.Time
	LastSeenAt     time.Time
	SeenCount      int64
	AssigneeID     *uuid.UUID
	Resolution     *string
	ResolutionNote *string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	AcknowledgedAt *time.Time
	ResolvedAt     *time.Time
	TicketIDs      []uuid.UUID
}

const columns = `a.id, a.type, a.status, a.severity, a.title, a.asset_id, a.site_id, a.first_seen_at, a.last_seen_at, a.seen_count,
	a.assignee_id, a.resolution, a.resolution_note, a.created_at, a.updated_at, a.acknowledged_at, a.resolved_at,
	coalesce((SELECT array_agg(l.ticket_id ORDER BY l.ticket_id) FROM ticket_links l WHERE l.tenant_id = a.tenant_id AND l.type = 'alert' AND l.target_id = a.id), '{}')`

func scan(row pgx.Row) (Alert, error) {
	var x Alert
	err := row.Scan(&x.ID, &x.Type, &x.Status, &x.Severity, &x.Title, &x.AssetID, &x.SiteID, &x.FirstSeenAt, &x.LastSeenAt, &x.SeenCount,
		&x.AssigneeID, &x.Resolution, &x.ResolutionNote, &x.CreatedAt, &x.UpdatedAt, &x.AcknowledgedAt, &x.ResolvedAt, &x.TicketIDs)
	return x, err
}

// Get reads an alert; forUpdate locks it.
func Get(ctx context.Context, tx pgx.Tx, id uuid.UUID, forUpdate bool) (Alert, error) {
	q := `SELECT ` + columns + ` FROM alerts a WHERE a.id = $1`
	if forUpdate {
		q += ` FOR UPDATE OF a`
	}
	x, err := scan(tx.QueryRow(ctx, q, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return x, problem.NotFound("alert")
	}
	return x, err
}

// Sighting is an unauthorized device being seen.
type Sighting struct {
	Asset         assets.Asset
	MAC           string
	IP            string
	Interface     string
	State         string
	CollectorID   uuid.UUID
	ObservationID uuid.UUID
	SeenAt        time.Time
}

// observedAgainGap coalesces repeated sightings in an alert's timeline.
const observedAgainGap = time.Hour

// Raiser raises and updates alerts inside the caller's transaction.
type Raiser struct {
	Assets assets.Store
}

// Observe raises the asset's alert, or updates its open one. An asset whose
// last alert was resolved as a false positive stays quiet until it is
// unauthorized again.
func (r Raiser) Observe(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, s Sighting) error {
	var id uuid.UUID
	var last time.Time
	err := tx.QueryRow(ctx, `SELECT id, last_seen_at FROM alerts WHERE asset_id = $1 AND type = $2 AND status <> 'resolved' FOR UPDATE`,
		s.Asset.ID, TypeUnauthorizedDevice).Scan(&id, &last)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		var suppressed bool
		if err := tx.QueryRow(ctx, `SELECT alerts_suppressed FROM assets WHERE id = $1`, s.Asset.ID).Scan(&suppressed); err != nil {
			return err
		}
		if suppressed {
			return nil
		}
		return r.raise(ctx, tx, tenantID, s)
	case err != nil:
		return err
	}
	if !s.SeenAt.After(last) {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE alerts SET last_seen_at = $2, seen_count = seen_count + 1, updated_at = now() WHERE id = $1`, id, s.SeenAt); err != nil {
		return err
	}
	if s.SeenAt.Sub(last) < observedAgainGap {
		return nil
	}
	return addTimeline(ctx, tx, tenantID, id, "observed_again", "observed again at "+s.IP, map[string]any{"ip": s.IP, "mac": s.MAC, "observation_id": s.ObservationID.String()})
}

func (r Raiser) raise(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, s Sighting) error {
	id := uuid.Must(uuid.NewV7())
	now := time.Now().UTC().Truncate(time.Microsecond)
	title := fmt.Sprintf("Unauthorized device %s at %s", s.MAC, s.IP)
	_, err := tx.Exec(ctx, `
		INSERT INTO alerts (tenant_id, id, type, status, severity, title, asset_id, site_id, first_seen_at, last_seen_at, created_at, updated_at)
		VALUES ($1, $2, $3, 'open', 'high', $4, $5, $6, $7, $7, $8, $8)`,
		tenantID, id, TypeUnauthorizedDevice, title, s.Asset.ID, s.Asset.SiteID, s.SeenAt, now)
	if err != nil {
		return fmt.Errorf("raise alert: %w", err)
	}
	assetID := s.Asset.ID
	evID, err := evidence.Add(ctx, tx, tenantID, evidence.Record{Kind: evidence.KindObservation, AlertID: &id, AssetID: &assetID,
		SourceType: "observation", SourceID: s.ObservationID.String(), Content: map[string]any{
			"mac": s.MAC, "ip": s.IP, "interface": s.Interface, "state": s.State, "collector_id": s.CollectorID.String(),
			"seen_at": s.SeenAt.UTC().Format(time.RFC3339Nano), "site_id": idString(s.Asset.SiteID), "authorization": s.Asset.AuthState,
		}})
	if err != nil {
		return err
	}
	if err := addTimeline(ctx, tx, tenantID, id, "raised", title, map[string]any{"evidence_id": evID.String(), "observation_id": s.ObservationID.String()}); err != nil {
		return err
	}
	if err := r.Assets.Record(ctx, tx, tenantID, []assets.TimelineEntry{{AssetID: s.Asset.ID, At: now, Kind: assets.KindAlertRaised,
		Summary: "alert raised: unauthorized device", Details: map[string]any{"alert_id": id.String()}}}); err != nil {
		return err
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "alert.raised", TargetType: "alert", TargetID: id.String(),
		Details: map[string]any{"type": TypeUnauthorizedDevice, "asset_id": s.Asset.ID.String(), "evidence_id": evID.String()}}); err != nil {
		return err
	}
	return outbox.Publish(ctx, tx, tenantID, outbox.Event{Type: "alert.raised", AggregateType: "alert", AggregateID: id, Payload: map[string]any{
		"alert_id": id.String(), "type": TypeUnauthorizedDevice, "severity": "high", "title": title, "asset_id": s.Asset.ID.String(),
		"site_id": idString(s.Asset.SiteID), "first_seen_at": s.SeenAt.UTC().Format(time.RFC3339),
	}})
}

// ResolveForAsset closes an asset's unresolved alerts (a discovered device
// that enrolled as an agent host is authorized by that).
func (r Raiser) ResolveForAsset(ctx context.Context, tx pgx.Tx, tenantID, assetID uuid.UUID, resolution, note string) error {
	rows, err := tx.Query(ctx, `SELECT id FROM alerts WHERE asset_id = $1 AND status <> 'resolved' FOR UPDATE`, assetID)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return err
	}
	for _, id := range ids {
		x, err := Get(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if _, err := resolve(ctx, tx, tenantID, x, resolution, note); err != nil {
			return err
		}
	}
	return nil
}

func addTimeline(ctx context.Context, tx pgx.Tx, tenantID, alertID uuid.UUID, kind, summary string, details map[string]any) error {
	actor := audit.ActorFrom(ctx)
	_, err := tx.Exec(ctx, `
		INSERT INTO alert_timeline (tenant_id, id, alert_id, at, kind, actor_type, actor_id, actor_name, summary, details)
		VALUES ($1, $2, $3, now(), $4, $5, $6, $7, $8, $9)`,
		tenantID, uuid.Must(uuid.NewV7()), alertID, kind, actor.Type, nullable(actor.ID), actor.Name, summary, details)
	if err != nil {
		return fmt.Errorf("alert timeline: %w", err)
	}
	return nil
}

// transition applies a triage step: the row, a timeline entry, evidence,
// audit and outbox.
func transition(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, x Alert, kind, summary string, details map[string]any, update string, args ...any) (Alert, error) {
	if _, err := tx.Exec(ctx, `UPDATE alerts SET `+update+`, updated_at = now() WHERE id = $1`, append([]any{x.ID}, args...)...); err != nil {
		return x, fmt.Errorf("alert %s: %w", kind, err)
	}
	if err := addTimeline(ctx, tx, tenantID, x.ID, kind, summary, details); err != nil {
		return x, err
	}
	assetID := x.AssetID
	content := map[string]any{"action": kind, "previous_status": x.Status}
	for k, v := range details {
		content[k] = v
	}
	evID, err := evidence.Add(ctx, tx, tenantID, evidence.Record{Kind: evidence.KindTriage, AlertID: &x.ID, AssetID: &assetID,
		SourceType: "alert", SourceID: x.ID.String(), Content: content})
	if err != nil {
		return x, err
	}
	auditDetails := map[string]any{"evidence_id": evID.String()}
	for k, v := range details {
		if k != "note" {
			auditDetails[k] = v
		}
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "alert." + kind, TargetType: "alert", TargetID: x.ID.String(), Details: auditDetails}); err != nil {
		return x, err
	}
	event := "alert.updated"
	if kind == "resolved" {
		event = "alert.resolved"
	}
	updated, err := Get(ctx, tx, x.ID, false)
	if err != nil {
		return x, err
	}
	payload := map[string]any{"alert_id": x.ID.String(), "status": updated.Status, "action": kind, "asset_id": x.AssetID.String()}
	if updated.AssigneeID != nil {
		payload["assignee_id"] = updated.AssigneeID.String()
	}
	if updated.Resolution != nil {
		payload["resolution"] = *updated.Resolution
	}
	return updated, outbox.Publish(ctx, tx, tenantID, outbox.Event{Type: event, AggregateType: "alert", AggregateID: x.ID, Payload: payload})
}

// conflict refuses a triage step: "an acknowledged alert cannot be
// acknowledged again", "a resolved alert cannot be assigned".
func conflict(x Alert, action string) error {
	again := ""
	if x.Status == action {
		again = " again"
	}
	return problem.Newf(http.StatusConflict, "invalid_transition", "%s %s alert cannot be %s%s", article(x.Status), x.Status, action, again)
}

// article is the indefinite article before word, one of the statuses
// (open, acknowledged, resolved): "an" before a vowel.
func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

func resolve(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, x Alert, resolution, note string) (Alert, error) {
	if x.Status == StatusResolved {
		return x, conflict(x, "resolved")
	}
	details := map[string]any{"resolution": resolution}
	if note != "" {
		details["note"] = note
	}
	return transition(ctx, tx, tenantID, x, "resolved", "resolved: "+resolution, details,
		`status = 'resolved', resolution = $2, resolution_note = $3, resolved_at = now()`, resolution, nullable(note))
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func idString(id *uuid.UUID) any {
	if id == nil {
		return nil
	}
	return id.String()
}
