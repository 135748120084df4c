// Package db owns the control plane's PostgreSQL access: the connection pool,
// the tenant transaction that row-level security keys on, the embedded
// migrations and the runtime role the server connects as.
package db

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RuntimeRole is the role the server connects as. Migrations create it
// NOSUPERUSER, NOBYPASSRLS and owning nothing, so row-level security always
// applies to it.
const RuntimeRole = "edgeward_app"

// TenantSetting is the transaction-local setting the RLS policies read.
const TenantSetting = "edgeward.tenant_id"

// Open connects a pool to url and checks that the database answers.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", redactURLError(err))
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "edgeward-controlplane"
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["statement_timeout"]; !ok {
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = "30000"
	}
	// Background jobs hold connections too (River's listener and fetchers,
	// the outbox listener): the pgx default of max(4, CPUs) starves them.
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = int32(max(20, 4*runtime.NumCPU()))
	}
	// After a connection dies under us (the server restarted or killed its
	// backends), its idle siblings are likely dead too: for a while every
	// acquired connection is pinged first, so dead ones are dropped instead
	// of failing one request each. Otherwise only long-idle ones are.
	var suspectUntil atomic.Int64
	cfg.BeforeClose = func(c *pgx.Conn) {
		if c.IsClosed() {
			suspectUntil.Store(time.Now().Add(10 * time.Second).UnixNano())
		}
	}
	cfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool {
		return p.IdleDuration > time.Second || time.Now().UnixNano() < suspectUntil.Load()
	}
	// Time zone UTC so timestamps read back as UTC.
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s: %w", cfg.ConnConfig.Host, err)
	}
	return pool, nil
}

// redactURLError keeps a password in a malformed URL out of error messages.
func redactURLError(err error) error {
	return errors.New(strings.SplitN(err.Error(), "://", 2)[0] + ": malformed connection string")
}

type readOnlyKey struct{}

// WithReadOnly marks ctx so that every tenant transaction begun with it is
// READ ONLY. The HTTP layer marks every auditor request this way: whatever a
// handler does, PostgreSQL refuses a write.
func WithReadOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, readOnlyKey{}, true)
}

// IsReadOnly reports whether ctx was marked by WithReadOnly.
func IsReadOnly(ctx context.Context) bool {
	v, _ := ctx.Value(readOnlyKey{}).(bool)
	return v
}

// Beginner is a pool or a connection that can begin a transaction.
type Beginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// InTenant runs fn in a transaction whose RLS tenant is tenantID: every row
// fn reads or writes in a tenant table belongs to that tenant, whatever its
// WHERE clauses say. The transaction commits when fn returns nil.
func InTenant(ctx context.Context, db Beginner, tenantID uuid.UUID, fn func(pgx.Tx) error) error {
	if tenantID == uuid.Nil {
		return errors.New("in tenant: no tenant id")
	}
	opts := pgx.TxOptions{}
	if IsReadOnly(ctx) {
		opts.AccessMode = pgx.ReadOnly
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin tenant transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SELECT set_config($1, $2, true)", TenantSetting, tenantID.String()); err != nil {
		return fmt.Errorf("set tenant: %w", err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit tenant transaction: %w", err)
	}
	return nil
}

// RoleFacts describes the role a connection runs as.
type RoleFacts struct {
	Name        string
	Superuser   bool
	BypassRLS   bool
	OwnedTables int
}

// CurrentRole reports what the connection's role may do.
func CurrentRole(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (RoleFacts, error) {
	var f RoleFacts
	err := q.QueryRow(ctx, `
		SELECT r.rolname, r.rolsuper, r.rolbypassrls,
		       (SELECT count(*) FROM pg_class c
		         WHERE c.relowner = r.oid AND c.relkind IN ('r','p')
		           AND c.relnamespace = 'public'::regnamespace)
		  FROM pg_roles r WHERE r.rolname = current_user`).Scan(&f.Name, &f.Superuser, &f.BypassRLS, &f.OwnedTables)
	if err != nil {
		return f, fmt.Errorf("read current role: %w", err)
	}
	return f, nil
}

// CheckRuntimeRole refuses a connection whose role would slip past row-level
// security: a superuser, a BYPASSRLS role, or the owner of tables.
func CheckRuntimeRole(f RoleFacts) error {
	switch {
	case f.Superuser:
		return fmt.Errorf("the server connects as %q, a superuser, which row-level security does not bind; connect as %q (created by `edgeward-controlplane migrate`)", f.Name, RuntimeRole)
	case f.BypassRLS:
		return fmt.Errorf("the server connects as %q, which has BYPASSRLS; connect as %q (created by `edgeward-controlplane migrate`)", f.Name, RuntimeRole)
	case f.OwnedTables > 0:
		return fmt.Errorf("the server connects as %q, which owns %d tables (the migration owner); connect as %q (created by `edgeward-controlplane migrate`)", f.Name, f.OwnedTables, RuntimeRole)
	}
	return nil
}

// UUIDs converts ids for array parameters: pgx encodes [16]byte natively,
// while uuid.UUID goes through driver.Valuer and a string per element.
func UUIDs(ids []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}
