package db

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/edgeward/edgeward/controlplane/internal/compliance/catalog"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns the embedded migration files.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	return sub
}

// MigrateOptions tune Migrate.
type MigrateOptions struct {
	// RuntimePassword, when set, becomes the runtime role's password.
	RuntimePassword string
	Logger          *slog.Logger
}

// Migrate brings the database at ownerURL to the newest schema. It runs as the
// owner role (the role in ownerURL owns every table), creates the runtime role
// when it is missing, and refuses a runtime role that could bypass row-level
// security. Concurrent runs serialize on an advisory lock; a second run is a
// no-op.
func Migrate(ctx context.Context, ownerURL string, opts MigrateOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgx.ParseConfig(ownerURL)
	if err != nil {
		return fmt.Errorf("migrate: %w", redactURLError(err))
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	owner, err := CurrentRole(ctx, conn)
	if err == nil {
		err = ensureRuntimeRole(ctx, conn, opts.RuntimePassword)
	}
	_ = conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if owner.Superuser {
		log.Warn("migrating as a superuser; tables will be owned by it. Prefer a dedicated owner role", "role", owner.Name)
	}

	sqlDB := stdlib.OpenDB(*cfg)
	defer func() { _ = sqlDB.Close() }()
	if err := runGoose(ctx, sqlDB); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := migrateRiver(ctx, ownerURL); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := loadCatalog(ctx, cfg, log); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := sqlDB.ExecContext(ctx, fmt.Sprintf(
		"GRANT CONNECT ON DATABASE %s TO %s; GRANT USAGE ON SCHEMA public TO %s",
		pgx.Identifier{cfg.Database}.Sanitize(), RuntimeRole, RuntimeRole)); err != nil {
		return fmt.Errorf("migrate: grant runtime role: %w", err)
	}
	return nil
}

func runGoose(ctx context.Context, sqlDB *sql.DB) error {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return err
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, Migrations(), goose.WithSessionLocker(locker))
	if err != nil {
		return err
	}
	if _, err := provider.Up(ctx); err != nil {
		return err
	}
	return nil
}

// ensureRuntimeRole creates the runtime role, or checks the existing one.
// Roles are cluster-wide, so databases on one cluster share it; the grants
// that matter are per database and come from the migrations.
func ensureRuntimeRole(ctx context.Context, conn *pgx.Conn, password string) error {
	var exists, super, bypass bool
	err := conn.QueryRow(ctx, `SELECT true, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`, RuntimeRole).Scan(&exists, &super, &bypass)
	if err != nil && err != pgx.ErrNoRows {
		return fmt.Errorf("read runtime role: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE ROLE "+RuntimeRole+" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"); err != nil {
			return fmt.Errorf("create runtime role %s (the owner role needs CREATEROLE): %w", RuntimeRole, err)
		}
	} else if super || bypass {
		return fmt.Errorf("runtime role %s exists with SUPERUSER or BYPASSRLS; row-level security would not bind it. Run: ALTER ROLE %s NOSUPERUSER NOBYPASSRLS", RuntimeRole, RuntimeRole)
	}
	if password != "" {
		var stmt string
		if err := conn.QueryRow(ctx, "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", RuntimeRole, password).Scan(&stmt); err != nil {
			return fmt.Errorf("set runtime role password: %w", err)
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("set runtime role password: %w", err)
		}
	}
	return nil
}

// loadCatalog stores the compliance catalog embedded in this binary when the
// database holds another version: a newer binary's migrate upgrades it in
// place.
func loadCatalog(ctx context.Context, cfg *pgx.ConnConfig, log *slog.Logger) error {
	c, err := catalog.Load()
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("catalog: connect: %w", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var wrote bool
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		wrote, err = catalog.Store(ctx, tx, c)
		return err
	}); err != nil {
		return err
	}
	if wrote {
		log.Info("compliance catalog loaded", "version", c.Version, "controls", len(c.Controls))
	}
	return nil
}
