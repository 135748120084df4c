// Package dbtest gives tests an isolated, migrated PostgreSQL database.
//
// It uses the server in DATABASE_URL (a role that may create roles and
// databases) or, when that is unset, a private throwaway cluster shared by all
// test packages of this checkout. Migrations run once into a template
// database named by their content hash; each test database is a fast clone
// of it, owned by the non-superuser migration owner, and is dropped when the
// test ends.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/pgcluster"
)

// OwnerRole owns the test databases and runs their migrations. Like a
// production owner it is not a superuser, so FORCE ROW LEVEL SECURITY binds it.
const OwnerRole = "edgeward_owner"

// Password is set on the test roles, so servers that ask for passwords work.
const Password = "edgeward-test"

// DB is one isolated database.
type DB struct {
	Name     string
	OwnerURL string // the migration owner
	AppURL   string // the runtime role the server connects as
	App      *pgxpool.Pool
	Owner    *pgxpool.Pool
}

// New creates a database for t and drops it when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := Create(ctx)
	if err != nil {
		t.Fatalf("test database: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Drop(context.Background()); err != nil {
			t.Logf("drop test database %s: %v", d.Name, err)
		}
	})
	return d
}

// Create makes a database outside of a test (for TestMain and benchmarks).
// The caller drops it.
func Create(ctx context.Context) (*DB, error) {
	superURL, err := SuperuserURL(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, superURL)
	if err != nil {
		return nil, fmt.Errorf("connect as superuser: %w", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	// One setup at a time across all test processes on this server.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(7301772461)"); err != nil {
		return nil, err
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(7301772461)") }()

	if err := ensureRoles(ctx, conn); err != nil {
		return nil, err
	}
	tmpl, err := ensureTemplate(ctx, conn, superURL)
	if err != nil {
		return nil, err
	}
	name := "edgeward_test_" + randomHex(6)
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s OWNER %s", name, tmpl, OwnerRole)); err != nil {
		return nil, fmt.Errorf("clone template: %w", err)
	}
	d := &DB{Name: name}
	if d.OwnerURL, err = withUser(superURL, OwnerRole, name); err != nil {
		return nil, err
	}
	if d.AppURL, err = withUser(superURL, db.RuntimeRole, name); err != nil {
		return nil, err
	}
	if d.App, err = db.Open(ctx, d.AppURL); err != nil {
		return nil, err
	}
	if d.Owner, err = db.Open(ctx, d.OwnerURL); err != nil {
		d.App.Close()
		return nil, err
	}
	return d, nil
}

// Drop closes the pools and drops the database.
func (d *DB) Drop(ctx context.Context) error {
	d.App.Close()
	d.Owner.Close()
	superURL, err := SuperuserURL(ctx)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, superURL)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.Name+" WITH (FORCE)")
	return err
}

// DurableEnv selects, when set to 1, a private cluster with fsync and
// synchronous commit on (as production runs), for benchmarks whose figures
// must be honest; tests use a faster throwaway cluster without them.
const DurableEnv = "EDGEWARD_TEST_PG_DURABLE"

// SuperuserURL is DATABASE_URL, or the URL of the shared private cluster,
// started on first use.
func SuperuserURL(ctx context.Context) (string, error) {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u, nil
	}
	dirs := PrivateClusterDirs()
	dir, opts := dirs[0], pgcluster.Options{}
	if os.Getenv(DurableEnv) == "1" {
		dir, opts = dirs[1], pgcluster.Options{Durable: true}
	}
	c, err := pgcluster.Ensure(ctx, dir, opts)
	if err != nil {
		return "", fmt.Errorf("no DATABASE_URL, and the private test cluster failed: %w", err)
	}
	return c.URL("postgres"), nil
}

// PrivateClusterDirs are where this checkout's tests keep their private
// clusters: the fast one, and the durable one of the benchmarks.
func PrivateClusterDirs() []string {
	dir := pgcluster.DefaultTestDir(checkoutRoot())
	return []string{dir, dir + "-durable"}
}

func checkoutRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

func ensureRoles(ctx context.Context, conn *pgx.Conn) error {
	for _, r := range []struct{ name, attrs string }{
		{OwnerRole, "LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE"},
		{db.RuntimeRole, "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"},
	} {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", r.name).Scan(&exists); err != nil {
			return err
		}
		verb := "ALTER"
		if !exists {
			verb = "CREATE"
		}
		if _, err := conn.Exec(ctx, fmt.Sprintf("%s ROLE %s %s PASSWORD '%s'", verb, r.name, r.attrs, Password)); err != nil {
			var pgErr *pgconn.PgError
			// A parallel first run on a fresh server may race on CREATE ROLE.
			if !(errors.As(err, &pgErr) && pgErr.Code == "42710") {
				return fmt.Errorf("%s role %s: %w", verb, r.name, err)
			}
		}
	}
	return nil
}

// ensureTemplate returns the name of a migrated template database for the
// current migrations, building it when missing and dropping stale ones.
func ensureTemplate(ctx context.Context, conn *pgx.Conn, superURL string) (string, error) {
	sum, err := migrationsHash()
	if err != nil {
		return "", err
	}
	name := "edgeward_tmpl_" + sum
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE 'edgeward\\_tmpl\\_%'")
	if err != nil {
		return "", err
	}
	existing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	found := false
	for _, n := range existing {
		if n == name {
			found = true
			continue
		}
		// A template of older migrations, or one whose build was interrupted.
		_, _ = conn.Exec(ctx, "ALTER DATABASE "+n+" IS_TEMPLATE false")
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
	}
	if found {
		return name, nil
	}
	building := name + "_building"
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+building+" OWNER "+OwnerRole); err != nil {
		return "", fmt.Errorf("create template: %w", err)
	}
	ownerURL, err := withUser(superURL, OwnerRole, building)
	if err != nil {
		return "", err
	}
	if err := db.Migrate(ctx, ownerURL, db.MigrateOptions{}); err != nil {
		return "", err
	}
	for _, stmt := range []string{
		"ALTER DATABASE " + building + " RENAME TO " + name,
		"ALTER DATABASE " + name + " IS_TEMPLATE true ALLOW_CONNECTIONS false",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return "", fmt.Errorf("finish template: %w", err)
		}
	}
	return name, nil
}

func migrationsHash() (string, error) {
	return db.SchemaFingerprint()
}

// withUser rewrites a URL to another user (with the test password) and database.
func withUser(raw, user, database string) (string, error) {
	cfg, err := pgconn.ParseConfig(raw)
	if err != nil {
		return "", fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, Password), Path: "/" + database}
	q := url.Values{}
	if filepath.IsAbs(cfg.Host) {
		q.Set("host", cfg.Host)
		q.Set("port", strconv.Itoa(int(cfg.Port)))
	} else {
		u.Host = fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
	}
	if cfg.TLSConfig == nil {
		q.Set("sslmode", "disable")
	} else {
		q.Set("sslmode", "require")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
