package alerts

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/evidence"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// API serves the alert operations of specs/openapi.yaml.
type API struct {
	Pool   *pgxpool.Pool
	Assets assets.Store
}

// toAPI is the REST form of an alert. With a Redactor (a reader who does
// not see identifiers) the MACs and addresses in its text are masked.
func (x Alert) toAPI(red *redact.Redactor) api.Alert {
	out := api.Alert{
		Id: x.ID, Type: api.AlertType(x.Type), Status: api.AlertStatus(x.Status), Severity: api.Severity(x.Severity), Title: x.Title,
		AssetId: x.AssetID, SiteId: x.SiteID, FirstSeenAt: x.FirstSeenAt.UTC(), LastSeenAt: x.LastSeenAt.UTC(), SeenCount: x.SeenCount,
		AssigneeId: x.AssigneeID, Resolution: x.Resolution, ResolutionNote: x.ResolutionNote, CreatedAt: x.CreatedAt.UTC(),
		UpdatedAt: x.UpdatedAt.UTC(), AcknowledgedAt: api.UTC(x.AcknowledgedAt), ResolvedAt: api.UTC(x.ResolvedAt), TicketIds: x.TicketIDs,
	}
	if out.TicketIds == nil {
		out.TicketIds = []uuid.UUID{}
	}
	if red != nil {
		out.Title, out.Redacted = red.Text(x.Title), true
		if x.ResolutionNote != nil {
			n := red.Text(*x.ResolutionNote)
			out.ResolutionNote = &n
		}
	}
	return out
}

type cursorKey struct {
	ID uuid.UUID `json:"i"`
}

// ListAlerts implements GET /api/v1/alerts: newest first, by id (UUIDv7, so
// creation order), which every filter's index leads with.
func (a *API) ListAlerts(ctx context.Context, req api.ListAlertsRequestObject) (api.ListAlertsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	p := req.Params
	limit := page.Limit(p.Limit)
	q := `SELECT ` + columns + ` FROM alerts a WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if p.Status != nil {
		q += " AND a.status = " + arg(string(*p.Status))
	}
	if p.Type != nil {
		q += " AND a.type = " + arg(string(*p.Type))
	}
	if p.Severity != nil {
		q += " AND a.severity = " + arg(string(*p.Severity))
	}
	if p.AssetId != nil {
		q += " AND a.asset_id = " + arg(*p.AssetId)
	}
	if p.AssigneeId != nil {
		q += " AND a.assignee_id = " + arg(*p.AssigneeId)
	}
	if p.Since != nil {
		q += " AND a.created_at >= " + arg(*p.Since)
	}
	if p.Until != nil {
		q += " AND a.created_at < " + arg(*p.Until)
	}
	var cur cursorKey
	if has, err := page.Decode(ctx, p.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		q += " AND a.id < " + arg(cur.ID)
	}
	q += " ORDER BY a.id DESC LIMIT " + arg(limit+1)
	var list []Alert
	var red *redact.Redactor
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Alert, error) { return scan(r) })
		return err
	})
	if err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListAlerts200JSONResponse{Items: make([]api.Alert, 0, len(list))}
	for _, x := range list {
		out.Items = append(out.Items, x.toAPI(red))
	}
	if more {
		out.NextCursor = page.Encode(ctx, cursorKey{ID: list[len(list)-1].ID})
	}
	return out, nil
}

// GetAlert implements GET /api/v1/alerts/{alert_id}.
func (a *API) GetAlert(ctx context.Context, req api.GetAlertRequestObject) (api.GetAlertResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var x Alert
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		x, err = Get(ctx, tx, req.AlertId, false)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetAlert200JSONResponse(x.toAPI(red)), nil
}

// GetAlertTimeline implements GET /api/v1/alerts/{alert_id}/timeline.
func (a *API) GetAlertTimeline(ctx context.Context, req api.GetAlertTimelineRequestObject) (api.GetAlertTimelineResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	var cur cursorKey
	has, err := page.Decode(ctx, req.Params.Cursor, &cur)
	if err != nil {
		return nil, err
	}
	var items []api.AlertTimelineEntry
	var red *redact.Redactor
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if _, err := Get(ctx, tx, req.AlertId, false); err != nil {
			return err
		}
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		q := `SELECT id, at, kind, actor_type, actor_id, actor_name, summary, details FROM alert_timeline WHERE alert_id = $1`
		args := []any{req.AlertId, limit + 1}
		if has {
			q += ` AND id > $3`
			args = append(args, cur.ID)
		}
		rows, err := tx.Query(ctx, q+` ORDER BY id LIMIT $2`, args...)
		if err != nil {
			return err
		}
		items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (api.AlertTimelineEntry, error) {
			var e api.AlertTimelineEntry
			var actorType string
			err := r.Scan(&e.Id, &e.At, &e.Kind, &actorType, &e.Actor.Id, &e.Actor.Name, &e.Summary, &e.Details)
			e.Actor.Type = api.AuditActorType(actorType)
			e.At = e.At.UTC()
			if red != nil {
				e.Summary, e.Details, e.Redacted = red.Text(e.Summary), red.Details(e.Details), true
			}
			if e.Details == nil {
				e.Details = map[string]any{}
			}
			return e, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	items, more := page.Trim(items, limit)
	out := api.GetAlertTimeline200JSONResponse{Items: items}
	if out.Items == nil {
		out.Items = []api.AlertTimelineEntry{}
	}
	if more {
		out.NextCursor = page.Encode(ctx, cursorKey{ID: items[len(items)-1].Id})
	}
	return out, nil
}

// GetAlertEvidence implements GET /api/v1/alerts/{alert_id}/evidence.
func (a *API) GetAlertEvidence(ctx context.Context, req api.GetAlertEvidenceRequestObject) (api.GetAlertEvidenceResponseObject, error) {
	id := req.AlertId
	out, err := evidence.Page(ctx, a.Pool, evidence.Filter{AlertID: &id, Oldest: true, Limit: page.Limit(req.Params.Limit)}, req.Params.Cursor, false,
		func(tx pgx.Tx) error { _, err := Get(ctx, tx, id, false); return err })
	if err != nil {
		return nil, err
	}
	return api.GetAlertEvidence200JSONResponse(out), nil
}

// triage runs a triage step on a locked alert.
func (a *API) triage(ctx context.Context, id uuid.UUID, step func(pgx.Tx, caller.Caller, Alert) (Alert, error)) (api.Alert, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return api.Alert{}, err
	}
	var x Alert
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if x, err = Get(ctx, tx, id, true); err != nil {
			return err
		}
		x, err = step(tx, c, x)
		return err
	})
	if err != nil {
		return api.Alert{}, err
	}
	return x.toAPI(nil), nil
}

func note(n *api.AlertNote) string {
	if n == nil || n.Note == nil {
		return ""
	}
	return *n.Note
}

// AcknowledgeAlert implements POST /api/v1/alerts/{alert_id}/acknowledge.
func (a *API) AcknowledgeAlert(ctx context.Context, req api.AcknowledgeAlertRequestObject) (api.AcknowledgeAlertResponseObject, error) {
	out, err := a.triage(ctx, req.AlertId, func(tx pgx.Tx, c caller.Caller, x Alert) (Alert, error) {
		if x.Status != StatusOpen {
			return x, conflict(x, "acknowledged")
		}
		details := map[string]any{}
		if n := note(req.Body); n != "" {
			details["note"] = n
		}
		return transition(ctx, tx, c.TenantID, x, "acknowledged", "acknowledged by "+c.PrincipalName, details,
			`status = 'acknowledged', acknowledged_at = now()`)
	})
	if err != nil {
		return nil, err
	}
	return api.AcknowledgeAlert200JSONResponse(out), nil
}

// AssignAlert implements POST /api/v1/alerts/{alert_id}/assign.
func (a *API) AssignAlert(ctx context.Context, req api.AssignAlertRequestObject) (api.AssignAlertResponseObject, error) {
	out, err := a.triage(ctx, req.AlertId, func(tx pgx.Tx, c caller.Caller, x Alert) (Alert, error) {
		if x.Status == StatusResolved {
			return x, conflict(x, "assigned")
		}
		var name string
		if err := tx.QueryRow(ctx, `SELECT name FROM principals WHERE id = $1 AND disabled_at IS NULL`, req.Body.Assignee).Scan(&name); err != nil {
			if err == pgx.ErrNoRows {
				return x, problem.Invalid("no such assignee", problem.Field{Pointer: "#/assignee", Detail: "no active principal with that id in this tenant"})
			}
			return x, err
		}
		details := map[string]any{"assignee_id": req.Body.Assignee.String()}
		if req.Body.Note != nil && *req.Body.Note != "" {
			details["note"] = *req.Body.Note
		}
		return transition(ctx, tx, c.TenantID, x, "assigned", "assigned to "+name, details, `assignee_id = $2`, req.Body.Assignee)
	})
	if err != nil {
		return nil, err
	}
	return api.AssignAlert200JSONResponse(out), nil
}

// ResolveAlert implements POST /api/v1/alerts/{alert_id}/resolve.
func (a *API) ResolveAlert(ctx context.Context, req api.ResolveAlertRequestObject) (api.ResolveAlertResponseObject, error) {
	out, err := a.triage(ctx, req.AlertId, func(tx pgx.Tx, c caller.Caller, x Alert) (Alert, error) {
		if x.Status == StatusResolved {
			return x, conflict(x, "resolved")
		}
		resolution, n := string(req.Body.Resolution), ""
		if req.Body.Note != nil {
			n = *req.Body.Note
		}
		switch resolution {
		case ResolvedAuthorized:
			asset, err := a.Assets.Lock(ctx, tx, x.AssetID)
			if err != nil {
				return x, err
			}
			reason := n
			if reason == "" {
				reason = "alert " + x.ID.String() + " resolved as authorized"
			}
			if _, err := a.Assets.ManualAuthorization(ctx, tx, c.TenantID, asset, reason, true, &x.ID); err != nil {
				return x, err
			}
		case ResolvedFalsePositive:
			if _, err := tx.Exec(ctx, `UPDATE assets SET alerts_suppressed = true WHERE id = $1`, x.AssetID); err != nil {
				return x, err
			}
		}
		return resolve(ctx, tx, c.TenantID, x, resolution, n)
	})
	if err != nil {
		return nil, err
	}
	return api.ResolveAlert200JSONResponse(out), nil
}

// LinkTicket writes a ticket_linked entry on an alert's timeline, for the
// tickets room when a ticket is opened from the alert or linked to it
// (summary says which). The caller has checked the alert exists.
func LinkTicket(ctx context.Context, tx pgx.Tx, tenantID, alertID, ticketID uuid.UUID, number int64, summary string) error {
	return addTimeline(ctx, tx, tenantID, alertID, "ticket_linked", summary,
		map[string]any{"ticket_id": ticketID.String(), "number": number})
}
