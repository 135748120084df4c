package agents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/proto/enrollment"
)

// Enrollment token lifetimes.
const (
	DefaultTokenTTL = 24 * time.Hour
	MaxTokenTTL     = 30 * 24 * time.Hour
)

// Enrollment token states.
const (
	TokenActive    = "active"
	TokenExpired   = "expired"
	TokenExhausted = "exhausted"
	TokenRevoked   = "revoked"
)

var labelKey = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$`)

// EnrollmentToken is a token's metadata; the secret is never kept.
type EnrollmentToken struct {
	ID         uuid.UUID
	Name       string
	SiteID     *uuid.UUID
	Labels     map[string]string
	MaxUses    int
	Uses       int
	ExpiresAt  time.Time
	CreatedAt  time.Time
	CreatedBy  *uuid.UUID
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

// Status is the token's state at now: revoked, then exhausted, then expired.
func (t EnrollmentToken) Status(now time.Time) string {
	switch {
	case t.RevokedAt != nil:
		return TokenRevoked
	case t.Uses >= t.MaxUses:
		return TokenExhausted
	case !now.Before(t.ExpiresAt):
		return TokenExpired
	}
	return TokenActive
}

const tokenColumns = `id, name, site_id, labels, max_uses, uses, expires_at, created_at, created_by, last_used_at, revoked_at`

func scanToken(row pgx.Row) (EnrollmentToken, error) {
	var t EnrollmentToken
	err := row.Scan(&t.ID, &t.Name, &t.SiteID, &t.Labels, &t.MaxUses, &t.Uses, &t.ExpiresAt, &t.CreatedAt, &t.CreatedBy, &t.LastUsedAt, &t.RevokedAt)
	t.ExpiresAt, t.CreatedAt = t.ExpiresAt.UTC(), t.CreatedAt.UTC()
	t.LastUsedAt, t.RevokedAt = api.UTC(t.LastUsedAt), api.UTC(t.RevokedAt)
	return t, err
}

func validateLabels(labels map[string]string) error {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !labelKey.MatchString(k) {
			return problem.Invalid("invalid label", problem.Field{Pointer: "#/labels/" + k, Detail: "label keys are 1-63 characters of a-z, 0-9, '.', '_', '/', '-', starting and ending with a letter or digit"})
		}
	}
	return nil
}

// TokensAPI serves the enrollment token operations.
type TokensAPI struct {
	Cfg *Config
}

// CreateEnrollmentToken implements POST /api/v1/enrollment-tokens.
func (a *TokensAPI) CreateEnrollmentToken(ctx context.Context, req api.CreateEnrollmentTokenRequestObject) (api.CreateEnrollmentTokenResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	b := req.Body
	now := a.Cfg.now()
	t := EnrollmentToken{ID: uuid.Must(uuid.NewV7()), Name: b.Name, SiteID: b.SiteId, MaxUses: 1, CreatedBy: &c.PrincipalID, Labels: map[string]string{}}
	if b.MaxUses != nil {
		t.MaxUses = *b.MaxUses
	}
	if b.Labels != nil {
		t.Labels = *b.Labels
	}
	if err := validateLabels(t.Labels); err != nil {
		return nil, err
	}
	t.ExpiresAt = now.Add(DefaultTokenTTL)
	if b.ExpiresAt != nil {
		t.ExpiresAt = *b.ExpiresAt
	}
	t.ExpiresAt = t.ExpiresAt.UTC().Truncate(time.Microsecond)
	switch {
	case !t.ExpiresAt.After(now):
		return nil, problem.Invalid("the token would be born expired", problem.Field{Pointer: "#/expires_at", Detail: "must be in the future"})
	case t.ExpiresAt.After(now.Add(MaxTokenTTL)):
		return nil, problem.Invalid("the token would live too long", problem.Field{Pointer: "#/expires_at", Detail: "must be at most 30 days from now"})
	}
	fp := caFingerprint(a.Cfg)
	secret, tok := enrollment.New(c.TenantID, fp)
	err = db.InTenant(ctx, a.Cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		if t.SiteID != nil {
			var ok bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sites WHERE id = $1)`, *t.SiteID).Scan(&ok); err != nil {
				return err
			}
			if !ok {
				return problem.Invalid("no such site", problem.Field{Pointer: "#/site_id", Detail: "no site with that id in this tenant"})
			}
		}
		err := tx.QueryRow(ctx, `
			INSERT INTO enrollment_tokens (tenant_id, id, name, token_hash, site_id, labels, max_uses, expires_at, created_by)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING created_at`,
			c.TenantID, t.ID, t.Name, tok.Hash[:], t.SiteID, t.Labels, t.MaxUses, t.ExpiresAt, t.CreatedBy).Scan(&t.CreatedAt)
		if err != nil {
			return fmt.Errorf("insert enrollment token: %w", err)
		}
		t.CreatedAt = t.CreatedAt.UTC()
		details := map[string]any{"name": t.Name, "max_uses": t.MaxUses, "expires_at": t.ExpiresAt.Format(time.RFC3339), "labels": t.Labels}
		if t.SiteID != nil {
			details["site_id"] = t.SiteID.String()
		}
		return audit.Record(ctx, tx, c.TenantID, audit.Entry{Action: "enrollment_token.created", TargetType: "enrollment_token", TargetID: t.ID.String(), Details: details})
	})
	if err != nil {
		return nil, err
	}
	out := a.toAPI(t, now)
	return api.CreateEnrollmentToken201JSONResponse{
		Id: out.Id, Name: out.Name, Status: out.Status, SiteId: out.SiteId, Labels: out.Labels, MaxUses: out.MaxUses, Uses: out.Uses,
		ExpiresAt: out.ExpiresAt, CreatedAt: out.CreatedAt, CreatedBy: out.CreatedBy, LastUsedAt: out.LastUsedAt, RevokedAt: out.RevokedAt,
		CaFingerprint: out.CaFingerprint, Token: secret,
	}, nil
}

type idCursor struct {
	ID uuid.UUID `json:"i"`
}

// ListEnrollmentTokens implements GET /api/v1/enrollment-tokens.
func (a *TokensAPI) ListEnrollmentTokens(ctx context.Context, req api.ListEnrollmentTokensRequestObject) (api.ListEnrollmentTokensResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	q := `SELECT ` + tokenColumns + ` FROM enrollment_tokens WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if req.Params.Status != nil {
		switch string(*req.Params.Status) {
		case TokenRevoked:
			q += " AND revoked_at IS NOT NULL"
		case TokenExhausted:
			q += " AND revoked_at IS NULL AND uses >= max_uses"
		case TokenExpired:
			q += " AND revoked_at IS NULL AND uses < max_uses AND expires_at <= now()"
		case TokenActive:
			q += " AND revoked_at IS NULL AND uses < max_uses AND expires_at > now()"
		}
	}
	var cur idCursor
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		q += " AND id < " + arg(cur.ID)
	}
	q += " ORDER BY id DESC LIMIT " + arg(limit+1)
	var list []EnrollmentToken
	if err := db.InTenant(ctx, a.Cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (EnrollmentToken, error) { return scanToken(r) })
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	now := a.Cfg.now()
	out := api.ListEnrollmentTokens200JSONResponse{Items: make([]api.EnrollmentToken, 0, len(list))}
	for _, t := range list {
		out.Items = append(out.Items, a.toAPI(t, now))
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].ID})
	}
	return out, nil
}

func getToken(ctx context.Context, tx pgx.Tx, id uuid.UUID) (EnrollmentToken, error) {
	t, err := scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM enrollment_tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return t, problem.NotFound("enrollment token")
	}
	return t, err
}

// GetEnrollmentToken implements GET /api/v1/enrollment-tokens/{token_id}.
func (a *TokensAPI) GetEnrollmentToken(ctx context.Context, req api.GetEnrollmentTokenRequestObject) (api.GetEnrollmentTokenResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var t EnrollmentToken
	if err := db.InTenant(ctx, a.Cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		t, err = getToken(ctx, tx, req.TokenId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetEnrollmentToken200JSONResponse(a.toAPI(t, a.Cfg.now())), nil
}

// RevokeEnrollmentToken implements POST /api/v1/enrollment-tokens/{token_id}/revoke.
func (a *TokensAPI) RevokeEnrollmentToken(ctx context.Context, req api.RevokeEnrollmentTokenRequestObject) (api.RevokeEnrollmentTokenResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var t EnrollmentToken
	if err := db.InTenant(ctx, a.Cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE enrollment_tokens SET revoked_at = now(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL`, req.TokenId, c.PrincipalID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() > 0 {
			if err := audit.Record(ctx, tx, c.TenantID, audit.Entry{Action: "enrollment_token.revoked", TargetType: "enrollment_token", TargetID: req.TokenId.String()}); err != nil {
				return err
			}
		}
		t, err = getToken(ctx, tx, req.TokenId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.RevokeEnrollmentToken200JSONResponse(a.toAPI(t, a.Cfg.now())), nil
}

func (a *TokensAPI) toAPI(t EnrollmentToken, now time.Time) api.EnrollmentToken {
	var createdBy *string
	if t.CreatedBy != nil {
		s := t.CreatedBy.String()
		createdBy = &s
	}
	labels := t.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	fp := caFingerprint(a.Cfg)
	return api.EnrollmentToken{
		Id: t.ID, Name: t.Name, Status: api.EnrollmentTokenStatus(t.Status(now)), SiteId: t.SiteID, Labels: labels,
		MaxUses: t.MaxUses, Uses: t.Uses, ExpiresAt: t.ExpiresAt, CreatedAt: t.CreatedAt, CreatedBy: createdBy,
		LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt, CaFingerprint: hex.EncodeToString(fp[:]),
	}
}

// caFingerprint is the SHA-256 of the CA certificate tokens pin.
func caFingerprint(cfg *Config) [32]byte {
	return sha256.Sum256(cfg.CA.Cert.Raw)
}
