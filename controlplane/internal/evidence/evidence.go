// Package evidence keeps immutable, hashed records of what the system saw
// and what people did: the observations that raised an alert, each triage
// action, each authorization change. A record is written in the same
// transaction as the thing it records, its SHA-256 is fixed then, and the
// table refuses UPDATE and DELETE. Auditors read a redacted projection with
// the same ids, references and hashes.
package evidence

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// Kinds of evidence.
const (
	KindObservation   = "observation"
	KindTriage        = "triage"
	KindAuthorization = "authorization"
	// KindControlEvaluation is a compliance evaluator's verdict.
	KindControlEvaluation = "control_evaluation"
)

// Record is evidence to keep.
type Record struct {
	Kind       string
	AlertID    *uuid.UUID
	AssetID    *uuid.UUID
	SourceType string // what it records: observation, alert, asset
	SourceID   string
	Content    map[string]any
}

// Add stores a record inside tx and returns its id. The actor comes from ctx.
func Add(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, r Record) (uuid.UUID, error) {
	content, err := audit.CanonicalJSON(r.Content)
	if err != nil {
		return uuid.Nil, fmt.Errorf("evidence: %w", err)
	}
	sum := sha256.Sum256(content)
	id := uuid.Must(uuid.NewV7())
	actor := audit.ActorFrom(ctx)
	_, err = tx.Exec(ctx, `
		INSERT INTO evidence (tenant_id, id, kind, alert_id, asset_id, source_type, source_id, content, content_sha256, created_at, actor_type, actor_id, actor_name)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		tenantID, id, r.Kind, r.AlertID, r.AssetID, r.SourceType, r.SourceID, string(content), sum[:],
		time.Now().UTC().Truncate(time.Microsecond), actor.Type, nullable(actor.ID), actor.Name)
	if err != nil {
		return uuid.Nil, fmt.Errorf("evidence: %w", err)
	}
	return id, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

type stored struct {
	ID         uuid.UUID
	Kind       string
	AlertID    *uuid.UUID
	AssetID    *uuid.UUID
	SourceType string
	SourceID   string
	Content    []byte
	SHA256     []byte
	CreatedAt  time.Time
	Actor      audit.Actor
}

const columns = `id, kind, alert_id, asset_id, source_type, source_id, content::text, content_sha256, created_at, actor_type, coalesce(actor_id, ''), actor_name`

func scan(row pgx.Row) (stored, error) {
	var s stored
	var content string
	err := row.Scan(&s.ID, &s.Kind, &s.AlertID, &s.AssetID, &s.SourceType, &s.SourceID, &content, &s.SHA256, &s.CreatedAt, &s.Actor.Type, &s.Actor.ID, &s.Actor.Name)
	s.Content = []byte(content)
	return s, err
}

// Verify recomputes a record's hash: true when the stored content is what
// was hashed when the record was made.
func (s stored) Verify() bool {
	sum := sha256.Sum256(s.Content)
	return hex.EncodeToString(sum[:]) == hex.EncodeToString(s.SHA256)
}

func (s stored) toAPI(r redact.Redactor, redacted bool) (api.Evidence, error) {
	var content map[string]any
	if err := json.Unmarshal(s.Content, &content); err != nil {
		return api.Evidence{}, err
	}
	actor := api.AuditActor{Type: api.AuditActorType(s.Actor.Type), Name: s.Actor.Name}
	if s.Actor.ID != "" {
		id := s.Actor.ID
		actor.Id = &id
	}
	if redacted {
		content = r.Content(content)
		if s.Actor.Type == audit.ActorPrincipal || s.Actor.Type == audit.ActorAgent {
			actor.Name = "[redacted]"
		}
	}
	out := api.Evidence{Id: s.ID, Kind: api.EvidenceKind(s.Kind), AlertId: s.AlertID, AssetId: s.AssetID, Content: content,
		ContentSha256: hex.EncodeToString(s.SHA256), Redacted: redacted, CreatedAt: s.CreatedAt.UTC(), Actor: actor}
	out.Source.Type, out.Source.Id = s.SourceType, s.SourceID
	return out, nil
}

// Filter selects records.
type Filter struct {
	AlertID *uuid.UUID
	AssetID *uuid.UUID
	Kind    string
	// Oldest lists oldest first (an alert's evidence); else newest first.
	Oldest bool
	After  *uuid.UUID
	Limit  int
}

// List returns records of the transaction's tenant, fetching Limit+1.
func List(ctx context.Context, tx pgx.Tx, f Filter) ([]stored, error) {
	q := `SELECT ` + columns + ` FROM evidence WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.AlertID != nil {
		q += " AND alert_id = " + arg(*f.AlertID)
	}
	if f.AssetID != nil {
		q += " AND asset_id = " + arg(*f.AssetID)
	}
	if f.Kind != "" {
		q += " AND kind = " + arg(f.Kind)
	}
	order := "DESC"
	if f.Oldest {
		order = "ASC"
	}
	if f.After != nil {
		op := "<"
		if f.Oldest {
			op = ">"
		}
		q += " AND id " + op + " " + arg(*f.After)
	}
	q += " ORDER BY id " + order + " LIMIT " + arg(f.Limit+1)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (stored, error) { return scan(r) })
}

// Page lists records and renders them for the caller's role.
func Page(ctx context.Context, pool *pgxpool.Pool, f Filter, cursor *string, redacted bool, exists func(pgx.Tx) error) (api.EvidenceList, error) {
	var out api.EvidenceList
	c, err := caller.Require(ctx)
	if err != nil {
		return out, err
	}
	var cur struct {
		ID uuid.UUID `json:"i"`
	}
	if has, err := page.Decode(ctx, cursor, &cur); err != nil {
		return out, err
	} else if has {
		f.After = &cur.ID
	}
	var list []stored
	var red redact.Redactor
	err = db.InTenant(ctx, pool, c.TenantID, func(tx pgx.Tx) error {
		if exists != nil {
			if err := exists(tx); err != nil {
				return err
			}
		}
		if red, err = redact.ForTenant(ctx, tx, c.TenantID, false); err != nil {
			return err
		}
		list, err = List(ctx, tx, f)
		return err
	})
	if err != nil {
		return out, err
	}
	list, more := page.Trim(list, f.Limit)
	out.Items = make([]api.Evidence, 0, len(list))
	for _, s := range list {
		e, err := s.toAPI(red, redacted)
		if err != nil {
			return out, err
		}
		out.Items = append(out.Items, e)
	}
	if more {
		cur.ID = list[len(list)-1].ID
		out.NextCursor = page.Encode(ctx, cur)
	}
	return out, nil
}

// API serves the evidence operations.
type API struct {
	Pool *pgxpool.Pool
}

func filterOf(limit *int, alertID, assetID *uuid.UUID, kind *api.EvidenceKind) Filter {
	f := Filter{Limit: page.Limit(limit), AlertID: alertID, AssetID: assetID}
	if kind != nil {
		f.Kind = string(*kind)
	}
	return f
}

// ListEvidence implements GET /api/v1/evidence.
func (a *API) ListEvidence(ctx context.Context, req api.ListEvidenceRequestObject) (api.ListEvidenceResponseObject, error) {
	p := req.Params
	out, err := Page(ctx, a.Pool, filterOf(p.Limit, p.AlertId, p.AssetId, p.Kind), p.Cursor, false, nil)
	if err != nil {
		return nil, err
	}
	return api.ListEvidence200JSONResponse(out), nil
}

// ListAuditorEvidence implements GET /api/v1/auditor/evidence.
func (a *API) ListAuditorEvidence(ctx context.Context, req api.ListAuditorEvidenceRequestObject) (api.ListAuditorEvidenceResponseObject, error) {
	p := req.Params
	out, err := Page(ctx, a.Pool, filterOf(p.Limit, p.AlertId, nil, p.Kind), p.Cursor, true, nil)
	if err != nil {
		return nil, err
	}
	return api.ListAuditorEvidence200JSONResponse(out), nil
}

func (a *API) one(ctx context.Context, id uuid.UUID, redacted bool) (api.Evidence, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return api.Evidence{}, err
	}
	var s stored
	var red redact.Redactor
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForTenant(ctx, tx, c.TenantID, false); err != nil {
			return err
		}
		s, err = scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM evidence WHERE id = $1`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return problem.NotFound("evidence record")
		}
		return err
	})
	if err != nil {
		return api.Evidence{}, err
	}
	return s.toAPI(red, redacted)
}

// GetEvidence implements GET /api/v1/evidence/{evidence_id}.
func (a *API) GetEvidence(ctx context.Context, req api.GetEvidenceRequestObject) (api.GetEvidenceResponseObject, error) {
	e, err := a.one(ctx, req.EvidenceId, false)
	if err != nil {
		return nil, err
	}
	return api.GetEvidence200JSONResponse(e), nil
}

// GetAuditorEvidence implements GET /api/v1/auditor/evidence/{evidence_id}.
func (a *API) GetAuditorEvidence(ctx context.Context, req api.GetAuditorEvidenceRequestObject) (api.GetAuditorEvidenceResponseObject, error) {
	e, err := a.one(ctx, req.EvidenceId, true)
	if err != nil {
		return nil, err
	}
	return api.GetAuditorEvidence200JSONResponse(e), nil
}
