// Package tenants is the tenant registry and the operator actions on it:
// creating a tenant, listing tenants and bootstrapping a tenant's first
// administrator. These run as the migration owner (operator commands), the
// only role that sees every tenant; the server's runtime role sees only the
// tenant of its transaction.
package tenants

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/auth"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
)

// Tenant is a customer organization.
type Tenant struct {
	ID        uuid.UUID `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// ErrExists means a tenant with that name already exists.
var ErrExists = errors.New("a tenant with that name already exists")

// Create adds a tenant and opens its audit trail with tenant.created.
func Create(ctx context.Context, pool *pgxpool.Pool, name string) (Tenant, error) {
	t := Tenant{ID: uuid.Must(uuid.NewV7()), Name: name}
	err := db.InTenant(ctx, pool, t.ID, func(tx pgx.Tx) error {
		return create(ctx, tx, &t)
	})
	return t, err
}

func create(ctx context.Context, tx pgx.Tx, t *Tenant) error {
	err := tx.QueryRow(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING created_at`, t.ID, t.Name).Scan(&t.CreatedAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("tenant %q: %w", t.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create tenant: %w", err)
	}
	t.CreatedAt = t.CreatedAt.UTC()
	return audit.Record(ctx, tx, t.ID, audit.Entry{
		Action: "tenant.created", TargetType: "tenant", TargetID: t.ID.String(),
		Details: map[string]any{"name": t.Name},
	})
}

// List returns every tenant, oldest first. It needs the owner role.
func List(ctx context.Context, pool *pgxpool.Pool) ([]Tenant, error) {
	rows, err := pool.Query(ctx, `SELECT id, name, created_at FROM tenants ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) {
		var t Tenant
		err := r.Scan(&t.ID, &t.Name, &t.CreatedAt)
		t.CreatedAt = t.CreatedAt.UTC()
		return t, err
	})
}

// Find returns the tenant with the given name (case-insensitive).
func Find(ctx context.Context, pool *pgxpool.Pool, name string) (Tenant, error) {
	var t Tenant
	err := pool.QueryRow(ctx, `SELECT id, name, created_at FROM tenants WHERE lower(name) = lower($1)`, name).Scan(&t.ID, &t.Name, &t.CreatedAt)
	if err != nil {
		return t, fmt.Errorf("find tenant %q: %w", name, err)
	}
	return t, nil
}

// ErrNotFound means no tenant has the id or name asked for.
var ErrNotFound = errors.New("no such tenant")

// Resolve returns the tenant that ref names: its id, or else its name
// (case-insensitive, as names are unique by lower(name)). Operators know
// tenants by name; scripts hold ids.
func Resolve(ctx context.Context, pool *pgxpool.Pool, ref string) (Tenant, error) {
	var t Tenant
	q := `SELECT id, name, created_at FROM tenants WHERE lower(name) = lower($1)`
	arg := any(ref)
	if id, err := uuid.Parse(ref); err == nil {
		q, arg = `SELECT id, name, created_at FROM tenants WHERE id = $1`, id
	}
	err := pool.QueryRow(ctx, q, arg).Scan(&t.ID, &t.Name, &t.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("%w with id or name %q", ErrNotFound, ref)
	}
	if err != nil {
		return t, fmt.Errorf("find tenant %q: %w", ref, err)
	}
	t.CreatedAt = t.CreatedAt.UTC()
	return t, nil
}

// Bootstrapped is a new tenant with its first administrator token.
type Bootstrapped struct {
	Tenant Tenant
	Token  auth.IssuedToken
}

// Bootstrap creates a tenant, an "admin" user principal and its first
// tenant_admin token in one transaction.
func Bootstrap(ctx context.Context, pool *pgxpool.Pool, name string, ttl time.Duration) (Bootstrapped, error) {
	b := Bootstrapped{Tenant: Tenant{ID: uuid.Must(uuid.NewV7()), Name: name}}
	err := db.InTenant(ctx, pool, b.Tenant.ID, func(tx pgx.Tx) error {
		if err := create(ctx, tx, &b.Tenant); err != nil {
			return err
		}
		now := time.Now()
		var err error
		b.Token, err = auth.IssueToken(ctx, tx, b.Tenant.ID, auth.TokenSpec{
			Name: "bootstrap", Role: caller.RoleTenantAdmin, PrincipalName: "admin", ExpiresAt: now.Add(ttl),
		}, now)
		return err
	})
	return b, err
}
