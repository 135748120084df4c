package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/edgeward/edgeward/controlplane/internal/compliance/catalog"
)

// JobSchema is the schema of River's job queue tables. They are not tenant
// tables (a job holds only ids: which tenant, which row); keeping them out of
// public keeps the RLS invariant "every public table with tenant_id forces
// row-level security" simple to check.
const JobSchema = "river"

// riverLockKey serializes concurrent River migrations (goose has its own).
const riverLockKey = 7301772462

// migrateRiver brings River's schema up to the version this binary was built
// with and grants the runtime role what a River client needs: rows, not DDL.
// River's periodic reindexer is turned off in the client (REINDEX needs
// ownership); operators reindex as the owner if they ever need to.
func migrateRiver(ctx context.Context, ownerURL string) error {
	pool, err := pgxpool.New(ctx, ownerURL)
	if err != nil {
		return fmt.Errorf("river: connect: %w", redactURLError(err))
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("river: connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", riverLockKey); err != nil {
		return fmt.Errorf("river: lock: %w", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", riverLockKey) }()

	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+JobSchema); err != nil {
		return fmt.Errorf("river: create schema: %w", err)
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: JobSchema})
	if err != nil {
		return fmt.Errorf("river: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river: migrate: %w", err)
	}
	role := pgx.Identifier{RuntimeRole}.Sanitize()
	for _, stmt := range []string{
		"GRANT USAGE ON SCHEMA " + JobSchema + " TO " + role,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + JobSchema + " TO " + role,
		"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA " + JobSchema + " TO " + role,
		"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA " + JobSchema + " TO " + role,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("river: grant: %w", err)
		}
	}
	return nil
}

// SchemaFingerprint names the complete schema a migration run produces: the
// embedded migrations and River's. Test templates are keyed on it.
func SchemaFingerprint() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(Migrations(), ".", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Migrations(), path)
		if err != nil {
			return err
		}
		_, _ = h.Write([]byte(path + "\x00" + strconv.Itoa(len(b)) + "\x00"))
		_, _ = h.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		return "", err
	}
	_, _ = h.Write([]byte("catalog\x00" + catalog.Version() + "\x00"))
	for _, m := range migrator.AllVersions() {
		_, _ = h.Write([]byte("river\x00" + strconv.Itoa(m.Version) + "\x00"))
		_, _ = h.Write([]byte(m.SQLUp))
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
