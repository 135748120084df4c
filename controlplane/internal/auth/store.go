package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// Token lifetimes.
const (
	DefaultTokenTTL = 90 * 24 * time.Hour
	MaxTokenTTL     = 366 * 24 * time.Hour
)

// Principal kinds.
const (
	KindUser           = "user"
	KindServiceAccount = "service_account"
)

// Principal is a person or service of a tenant.
type Principal struct {
	ID   uuid.UUID
	Kind string
	Name string
}

// Token is an API token's metadata; the secret is never kept.
type Token struct {
	ID            uuid.UUID
	Name          string
	Role          string
	PrincipalID   uuid.UUID
	PrincipalName string
	CreatedAt     time.Time
	CreatedBy     *uuid.UUID
	ExpiresAt     time.Time
	LastUsedAt    *time.Time
	RevokedAt     *time.Time
}

// Token states.
const (
	StatusActive  = "active"
	StatusExpired = "expired"
	StatusRevoked = "revoked"
)

// Status is the token's state at now.
func (t Token) Status(now time.Time) string {
	switch {
	case t.RevokedAt != nil:
		return StatusRevoked
	case !now.Before(t.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

// TokenSpec describes a token to issue.
type TokenSpec struct {
	Name string
	Role string
	// ExpiresAt defaults to DefaultTokenTTL from now.
	ExpiresAt time.Time
	// PrincipalID binds the token to an existing principal; when nil a new
	// principal named PrincipalName (or Name) is created.
	PrincipalID   *uuid.UUID
	PrincipalName string
	// CreatedBy is the principal issuing the token; nil for operators.
	CreatedBy *uuid.UUID
}

// IssuedToken is a new token with its secret, shown once.
type IssuedToken struct {
	Token
	Secret string
}

// IssueToken creates a token in the transaction's tenant and records it in
// the audit trail. Rule violations come back as 422 problems naming the field.
func IssueToken(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, spec TokenSpec, now time.Time) (IssuedToken, error) {
	if !caller.ValidRole(spec.Role) {
		return IssuedToken{}, problem.Invalid("unknown role", problem.Field{Pointer: "#/role", Detail: "must be one of " + strings.Join(caller.Roles, ", ")})
	}
	if spec.ExpiresAt.IsZero() {
		spec.ExpiresAt = now.Add(DefaultTokenTTL)
	}
	spec.ExpiresAt = spec.ExpiresAt.UTC().Truncate(time.Microsecond)
	switch {
	case !spec.ExpiresAt.After(now):
		return IssuedToken{}, problem.Invalid("the token would be born expired", problem.Field{Pointer: "#/expires_at", Detail: "must be in the future"})
	case spec.ExpiresAt.After(now.Add(MaxTokenTTL)):
		return IssuedToken{}, problem.Invalid("the token would live too long", problem.Field{Pointer: "#/expires_at", Detail: "must be at most 366 days from now"})
	}
	wantKind := KindUser
	if spec.Role == caller.RoleServiceAccount {
		wantKind = KindServiceAccount
	}

	var p Principal
	if spec.PrincipalID != nil {
		var disabled *time.Time
		err := tx.QueryRow(ctx, `SELECT id, kind, name, disabled_at FROM principals WHERE id = $1`, *spec.PrincipalID).Scan(&p.ID, &p.Kind, &p.Name, &disabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return IssuedToken{}, problem.Invalid("no such principal", problem.Field{Pointer: "#/principal_id", Detail: "no principal with that id in this tenant"})
		}
		if err != nil {
			return IssuedToken{}, fmt.Errorf("read principal: %w", err)
		}
		if disabled != nil {
			return IssuedToken{}, problem.Invalid("the principal is disabled", problem.Field{Pointer: "#/principal_id", Detail: "principal is disabled"})
		}
		if p.Kind != wantKind {
			return IssuedToken{}, problem.Invalid("role does not fit the principal", problem.Field{Pointer: "#/role",
				Detail: fmt.Sprintf("a %s principal cannot hold the %s role", p.Kind, spec.Role)})
		}
	} else {
		name := spec.PrincipalName
		if name == "" {
			name = spec.Name
		}
		var err error
		if p, err = CreatePrincipal(ctx, tx, tenantID, wantKind, name); err != nil {
			return IssuedToken{}, err
		}
	}

	secret, hash := NewToken(tenantID)
	t := Token{
		ID:            uuid.Must(uuid.NewV7()),
		Name:          spec.Name,
		Role:          spec.Role,
		PrincipalID:   p.ID,
		PrincipalName: p.Name,
		CreatedBy:     spec.CreatedBy,
		ExpiresAt:     spec.ExpiresAt,
	}
	err := tx.QueryRow(ctx, `
		INSERT INTO api_tokens (tenant_id, id, principal_id, name, role, token_hash, created_by, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at`,
		tenantID, t.ID, t.PrincipalID, t.Name, t.Role, hash, t.CreatedBy, t.ExpiresAt).Scan(&t.CreatedAt)
	if err != nil {
		return IssuedToken{}, fmt.Errorf("insert api token: %w", err)
	}
	t.CreatedAt = t.CreatedAt.UTC()
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{
		Action: "api_token.created", TargetType: "api_token", TargetID: t.ID.String(),
		Details: map[string]any{"name": t.Name, "role": t.Role, "principal_id": t.PrincipalID.String(), "expires_at": t.ExpiresAt.Format(time.RFC3339)},
	}); err != nil {
		return IssuedToken{}, err
	}
	return IssuedToken{Token: t, Secret: secret}, nil
}

// CreatePrincipal adds a principal to the transaction's tenant.
func CreatePrincipal(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, kind, name string) (Principal, error) {
	p := Principal{ID: uuid.Must(uuid.NewV7()), Kind: kind, Name: name}
	if _, err := tx.Exec(ctx, `INSERT INTO principals (tenant_id, id, kind, name) VALUES ($1, $2, $3, $4)`, tenantID, p.ID, p.Kind, p.Name); err != nil {
		return Principal{}, fmt.Errorf("insert principal: %w", err)
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{
		Action: "principal.created", TargetType: "principal", TargetID: p.ID.String(),
		Details: map[string]any{"kind": p.Kind, "name": p.Name},
	}); err != nil {
		return Principal{}, err
	}
	return p, nil
}

const tokenColumns = `t.id, t.name, t.role, t.principal_id, p.name, t.created_at, t.created_by, t.expires_at, t.last_used_at, t.revoked_at`

func scanToken(row pgx.Row) (Token, error) {
	var t Token
	err := row.Scan(&t.ID, &t.Name, &t.Role, &t.PrincipalID, &t.PrincipalName, &t.CreatedAt, &t.CreatedBy, &t.ExpiresAt, &t.LastUsedAt, &t.RevokedAt)
	t.CreatedAt, t.ExpiresAt = t.CreatedAt.UTC(), t.ExpiresAt.UTC()
	if t.LastUsedAt != nil {
		u := t.LastUsedAt.UTC()
		t.LastUsedAt = &u
	}
	if t.RevokedAt != nil {
		u := t.RevokedAt.UTC()
		t.RevokedAt = &u
	}
	return t, err
}

// TokenFilter selects tokens for ListTokens.
type TokenFilter struct {
	Status      string
	PrincipalID *uuid.UUID
	BeforeID    *uuid.UUID // the cursor: ids are UUIDv7, so id order is creation order
	Limit       int
}

// ListTokens lists the transaction tenant's tokens, newest first, fetching
// one more than Limit.
func ListTokens(ctx context.Context, tx pgx.Tx, f TokenFilter) ([]Token, error) {
	q := `SELECT ` + tokenColumns + ` FROM api_tokens t JOIN principals p ON p.tenant_id = t.tenant_id AND p.id = t.principal_id WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	switch f.Status {
	case StatusActive:
		q += " AND t.revoked_at IS NULL AND t.expires_at > now()"
	case StatusExpired:
		q += " AND t.revoked_at IS NULL AND t.expires_at <= now()"
	case StatusRevoked:
		q += " AND t.revoked_at IS NOT NULL"
	}
	if f.PrincipalID != nil {
		q += " AND t.principal_id = " + arg(*f.PrincipalID)
	}
	if f.BeforeID != nil {
		q += " AND t.id < " + arg(*f.BeforeID)
	}
	q += " ORDER BY t.id DESC LIMIT " + arg(f.Limit+1)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Token, error) { return scanToken(r) })
}

// GetToken returns one token of the transaction's tenant, or a 404 problem.
func GetToken(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Token, error) {
	t, err := scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens t JOIN principals p ON p.tenant_id = t.tenant_id AND p.id = t.principal_id WHERE t.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, problem.NotFound("api token")
	}
	if err != nil {
		return Token{}, fmt.Errorf("get api token: %w", err)
	}
	return t, nil
}

// RevokeToken revokes a token; revoking a revoked token changes nothing.
func RevokeToken(ctx context.Context, tx pgx.Tx, tenantID, id uuid.UUID, by *uuid.UUID) error {
	tag, err := tx.Exec(ctx, `UPDATE api_tokens SET revoked_at = now(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL`, id, by)
	if err != nil {
		return fmt.Errorf("revoke api token: %w", err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := GetToken(ctx, tx, id); err != nil {
			return err
		}
		return nil // already revoked
	}
	return audit.Record(ctx, tx, tenantID, audit.Entry{Action: "api_token.revoked", TargetType: "api_token", TargetID: id.String()})
}

// lookup finds the token with hash in the transaction's tenant.
func lookup(ctx context.Context, tx pgx.Tx, hash []byte) (caller.Caller, Token, *time.Time, error) {
	var c caller.Caller
	var t Token
	var disabled *time.Time
	err := tx.QueryRow(ctx, `
		SELECT tn.id, tn.name, p.id, p.name, p.kind, p.disabled_at,
		       t.id, t.name, t.role, t.expires_at, t.revoked_at, t.last_used_at
		  FROM api_tokens t
		  JOIN principals p ON p.tenant_id = t.tenant_id AND p.id = t.principal_id
		  JOIN tenants tn ON tn.id = t.tenant_id
		 WHERE t.token_hash = $1`, hash).Scan(
		&c.TenantID, &c.TenantName, &c.PrincipalID, &c.PrincipalName, &c.PrincipalKind, &disabled,
		&t.ID, &t.Name, &t.Role, &t.ExpiresAt, &t.RevokedAt, &t.LastUsedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, t, nil, unauthorized(problem.CodeTokenInvalid, "the bearer token is not known")
	}
	if err != nil {
		return c, t, nil, fmt.Errorf("look up api token: %w", err)
	}
	c.Role, c.TokenID, c.TokenName, c.TokenExpiresAt = t.Role, t.ID, t.Name, t.ExpiresAt.UTC()
	t.PrincipalID = c.PrincipalID
	return c, t, disabled, nil
}
