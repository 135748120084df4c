package db_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
)

// TestEveryTenantTableForcesRowLevelSecurity lists every table with a
// tenant_id column and fails on any that lacks forced RLS or a policy on the
// transaction's tenant, or whose keys do not lead with tenant_id.
func TestEveryTenantTableForcesRowLevelSecurity(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()

	rows, err := d.Owner.Query(ctx, `
		SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
		       coalesce((SELECT bool_and(p.qual LIKE '%app_current_tenant()%' AND p.with_check LIKE '%app_current_tenant()%')
		                   FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = c.relname), false),
		       (SELECT count(*) FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = c.relname)
		  FROM pg_class c
		  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
		 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
		 ORDER BY 1`)
	require.NoError(t, err)
	type table struct {
		name                    string
		rls, forced, policiesOK bool
		policies                int
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var tb table
		return tb, r.Scan(&tb.name, &tb.rls, &tb.forced, &tb.policiesOK, &tb.policies)
	})
	require.NoError(t, err)
	require.NotEmpty(t, tables, "no tenant tables found")
	var names []string
	for _, tb := range tables {
		names = append(names, tb.name)
		assert.True(t, tb.rls, "%s: row level security not enabled", tb.name)
		assert.True(t, tb.forced, "%s: row level security not forced", tb.name)
		assert.Positive(t, tb.policies, "%s: no RLS policy", tb.name)
		assert.True(t, tb.policiesOK, "%s: a policy does not key on app_current_tenant() in USING and WITH CHECK", tb.name)
	}
	t.Logf("tenant tables: %s", strings.Join(names, ", "))

	// Keys lead with tenant_id: primary keys, unique indexes, foreign keys.
	rows, err = d.Owner.Query(ctx, `
		SELECT c.relname, i.indexrelid::regclass::text
		  FROM pg_index i
		  JOIN pg_class c ON c.oid = i.indrelid
		  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
		 WHERE c.relnamespace = 'public'::regnamespace
		   AND (i.indisprimary OR i.indisunique)
		   AND i.indkey[0] <> a.attnum`)
	require.NoError(t, err)
	bad, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var tb, idx string
		return tb + "." + idx, r.Scan(&tb, &idx)
	})
	require.NoError(t, err)
	assert.Empty(t, bad, "unique keys that do not lead with tenant_id")

	rows, err = d.Owner.Query(ctx, `
		SELECT con.conname
		  FROM pg_constraint con
		  JOIN pg_class c ON c.oid = con.conrelid
		  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
		 WHERE con.contype = 'f' AND c.relnamespace = 'public'::regnamespace
		   AND con.conkey[1] <> a.attnum`)
	require.NoError(t, err)
	bad, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	assert.Empty(t, bad, "foreign keys that do not lead with tenant_id")

	// The tenant registry has no tenant_id but is filtered all the same.
	var tenantsRLS bool
	require.NoError(t, d.Owner.QueryRow(ctx, `SELECT relrowsecurity FROM pg_class WHERE oid = 'tenants'::regclass`).Scan(&tenantsRLS))
	assert.True(t, tenantsRLS, "tenants: row level security not enabled")
}

func TestRuntimeRoleCannotBypassRowLevelSecurity(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	facts, err := db.CurrentRole(ctx, d.App)
	require.NoError(t, err)
	assert.Equal(t, db.RuntimeRole, facts.Name)
	assert.NoError(t, db.CheckRuntimeRole(facts))

	owner, err := db.CurrentRole(ctx, d.Owner)
	require.NoError(t, err)
	assert.ErrorContains(t, db.CheckRuntimeRole(owner), "owns", "the server must refuse to run as the table owner")

	// The runtime role may only append to the audit trail.
	for _, priv := range []string{"UPDATE", "DELETE", "TRUNCATE"} {
		var has bool
		require.NoError(t, d.Owner.QueryRow(ctx, "SELECT has_table_privilege($1, 'audit_events', $2)", db.RuntimeRole, priv).Scan(&has))
		assert.False(t, has, "runtime role has %s on audit_events", priv)
	}
	var canCreate bool
	require.NoError(t, d.Owner.QueryRow(ctx, "SELECT has_schema_privilege($1, 'public', 'CREATE')", db.RuntimeRole).Scan(&canCreate))
	assert.False(t, canCreate, "runtime role can create objects in public")
}

func TestMigrateIsIdempotent(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	require.NoError(t, db.Migrate(ctx, d.OwnerURL, db.MigrateOptions{}))
	require.NoError(t, db.Migrate(ctx, d.OwnerURL, db.MigrateOptions{}))
	var version int64
	require.NoError(t, d.Owner.QueryRow(ctx, "SELECT max(version_id) FROM goose_db_version").Scan(&version))
	assert.Positive(t, version)
}

// TestWherelessQueryStaysInItsTenant proves isolation does not depend on the
// query: a SELECT with no WHERE clause inside InTenant sees only that
// tenant's rows, a write naming another tenant is refused, and outside
// InTenant nothing is visible at all.
func TestWherelessQueryStaysInItsTenant(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	a, b := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	for _, tn := range []struct {
		id   uuid.UUID
		name string
	}{{a, "tenant-a"}, {b, "tenant-b"}} {
		_, err := d.Owner.Exec(ctx, "INSERT INTO tenants (id, name) VALUES ($1, $2)", tn.id, tn.name)
		require.NoError(t, err)
		require.NoError(t, db.InTenant(ctx, d.Owner, tn.id, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO principals (tenant_id, id, kind, name) VALUES ($1, $2, 'user', $3)", tn.id, uuid.Must(uuid.NewV7()), tn.name+"-admin")
			return err
		}))
	}

	var names []string
	require.NoError(t, db.InTenant(ctx, d.App, a, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT name FROM principals")
		if err != nil {
			return err
		}
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}))
	assert.Equal(t, []string{"tenant-a-admin"}, names)

	var tenantNames []string
	require.NoError(t, db.InTenant(ctx, d.App, a, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT name FROM tenants")
		if err != nil {
			return err
		}
		tenantNames, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}))
	assert.Equal(t, []string{"tenant-a"}, tenantNames)

	err := db.InTenant(ctx, d.App, a, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO principals (tenant_id, id, kind, name) VALUES ($1, $2, 'user', 'intruder')", b, uuid.Must(uuid.NewV7()))
		return err
	})
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "insert into another tenant: %v", err)
	assert.Equal(t, "42501", pgErr.Code, "row-level security must refuse the row")

	var updated int64
	require.NoError(t, db.InTenant(ctx, d.App, a, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE principals SET name = 'renamed'")
		updated = tag.RowsAffected()
		return err
	}))
	assert.EqualValues(t, 1, updated, "a WHERE-less UPDATE touches only its own tenant")
	var bName string
	require.NoError(t, db.InTenant(ctx, d.Owner, b, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT name FROM principals").Scan(&bName)
	}))
	assert.Equal(t, "tenant-b-admin", bName)

	var outside int
	require.NoError(t, d.App.QueryRow(ctx, "SELECT count(*) FROM principals").Scan(&outside))
	assert.Zero(t, outside, "outside InTenant no tenant rows are visible")
}

func TestReadOnlyContextRefusesWrites(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	_, err := d.Owner.Exec(ctx, "INSERT INTO tenants (id, name) VALUES ($1, 'ro')", id)
	require.NoError(t, err)
	err = db.InTenant(db.WithReadOnly(ctx), d.App, id, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO principals (tenant_id, id, kind, name) VALUES ($1, $2, 'user', 'x')", id, uuid.Must(uuid.NewV7()))
		return err
	})
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "%v", err)
	assert.Equal(t, "25006", pgErr.Code, "read_only_sql_transaction")
}
