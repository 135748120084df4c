package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
)

// API serves the audit operations of specs/openapi.yaml.
type API struct {
	Pool *pgxpool.Pool
}

type cursorKey struct {
	Seq int64 `json:"s"`
}

// ListAuditEvents implements GET /api/v1/audit/events.
func (a *API) ListAuditEvents(ctx context.Context, req api.ListAuditEventsRequestObject) (api.ListAuditEventsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	p := req.Params
	f := Filter{Limit: page.Limit(p.Limit)}
	var cur cursorKey
	if _, err := page.Decode(ctx, p.Cursor, &cur); err != nil {
		return nil, err
	}
	f.BeforeSeq = cur.Seq
	f.ActorID = deref(p.ActorId)
	f.Action = deref(p.Action)
	f.TargetType = deref(p.TargetType)
	f.TargetID = deref(p.TargetId)
	if p.Outcome != nil {
		f.Outcome = string(*p.Outcome)
	}
	if p.Since != nil {
		f.Since = *p.Since
	}
	if p.Until != nil {
		f.Until = *p.Until
	}
	var events []Event
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		events, err = List(ctx, tx, f)
		return err
	}); err != nil {
		return nil, err
	}
	events, more := page.Trim(events, f.Limit)
	out := api.ListAuditEvents200JSONResponse{Items: make([]api.AuditEvent, 0, len(events))}
	for _, ev := range events {
		item, err := ev.toAPI()
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, item)
	}
	if more {
		out.NextCursor = page.Encode(ctx, cursorKey{Seq: events[len(events)-1].Seq})
	}
	return out, nil
}

// GetAuditIntegrity implements GET /api/v1/audit/integrity.
func (a *API) GetAuditIntegrity(ctx context.Context, _ api.GetAuditIntegrityRequestObject) (api.GetAuditIntegrityResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var v Verification
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		v, err = Verify(ctx, tx, c.TenantID)
		return err
	}); err != nil {
		return nil, err
	}
	out := api.GetAuditIntegrity200JSONResponse{
		Verified:   v.OK(),
		EventCount: v.EventCount,
		HeadSeq:    v.HeadSeq,
		HeadHash:   hex.EncodeToString(v.HeadHash),
		CheckedAt:  v.CheckedAt,
	}
	if v.Broken != nil {
		out.FirstBroken = &struct {
			EventId *string `json:"event_id"`
			Reason  string  `json:"reason"`
			Seq     int64   `json:"seq"`
		}{EventId: optional(v.Broken.EventID), Reason: v.Broken.Reason, Seq: v.Broken.Seq}
	}
	return out, nil
}

func (ev Event) toAPI() (api.AuditEvent, error) {
	var details map[string]any
	if err := json.Unmarshal(ev.Details, &details); err != nil {
		return api.AuditEvent{}, err
	}
	return api.AuditEvent{
		Id:            ev.ID,
		Seq:           ev.Seq,
		OccurredAt:    ev.OccurredAt,
		Actor:         api.AuditActor{Type: api.AuditActorType(ev.Actor.Type), Id: optional(ev.Actor.ID), Name: ev.Actor.Name},
		Action:        ev.Action,
		Target:        api.AuditTarget{Type: ev.TargetType, Id: optional(ev.TargetID)},
		RequestId:     optional(ev.RequestID),
		SourceIp:      optional(ev.SourceIP),
		Outcome:       api.AuditOutcome(ev.Outcome),
		Details:       details,
		SchemeVersion: ev.SchemeVersion,
		PrevHash:      hex.EncodeToString(ev.PrevHash),
		Hash:          hex.EncodeToString(ev.Hash),
	}, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
