package bench

// TEMPORARY experiment, to be removed.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/db"
)

type capture struct {
	sql  string
	args []any
}

func (c *capture) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "FROM assets") {
		c.sql, c.args = d.SQL, d.Args
	}
	return ctx
}
func (c *capture) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func BenchmarkXListIndexExperiment(b *testing.B) {
	env := benchEnv(b)
	tr := &http.Transport{TLSClientConfig: env.TLSConfig(), ForceAttemptHTTP2: true}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	data := listDataSet(b, env, hc)
	ctx := context.Background()
	var mac string
	for _, c := range data.cases {
		if strings.Contains(c.name, "one MAC") {
			mac = c.path[strings.LastIndex(c.path, "q=")+2:]
			mac = strings.ReplaceAll(mac, "%3A", ":")
		}
	}
	b.Logf("mac %s", mac)
	cap := &capture{}
	cfg, _ := pgxpool.ParseConfig(env.DB.AppURL)
	cfg.ConnConfig.Tracer = cap
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()

	sqlFor := func(f assets.Filter) (string, []any) {
		f.Limit = 100
		err := db.InTenant(ctx, pool, env.Tenant.ID, func(tx pgx.Tx) error {
			_, err := assets.Store{}.List(ctx, tx, f)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return cap.sql, cap.args
	}
	explain := func(label, q string, args []any) {
		var out []string
		err := db.InTenant(ctx, pool, env.Tenant.ID, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+q, args...)
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("\n===== %s\n%s\n-- args %v\n%s\n", label, q, args, strings.Join(out, "\n"))
	}
	timeSQL := func(label, q string, args []any, n int) {
		var lat []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			err := db.InTenant(ctx, pool, env.Tenant.ID, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, q, args...)
				if err != nil {
					return err
				}
				rows.Close()
				return rows.Err()
			})
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		fmt.Printf("TIMING %-60s p50 %6.2f ms  p99 %6.2f ms (n=%d)\n", label, float64(lat[n/2].Microseconds())/1000, float64(lat[n*99/100].Microseconds())/1000, n)
	}
	timeHTTP := func(label, path string, n int) {
		var lat []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			listGet(b, env, hc, path)
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		fmt.Printf("HTTP   %-60s p50 %6.2f ms  p99 %6.2f ms (n=%d)\n", label, float64(lat[n/2].Microseconds())/1000, float64(lat[n*99/100].Microseconds())/1000, n)
	}

	qMAC, aMAC := sqlFor(assets.Filter{Query: mac})
	qSrv, aSrv := sqlFor(assets.Filter{Query: "srv-"})
	q1, a1 := sqlFor(assets.Filter{})
	_ = q1
	_ = a1
	var machineID string
	_ = db.InTenant(ctx, pool, env.Tenant.ID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT machine_id FROM assets WHERE machine_id IS NOT NULL ORDER BY id LIMIT 1`).Scan(&machineID)
	})
	qMID, aMID := sqlFor(assets.Filter{Query: machineID})
	timeSQL("original q=MAC", qMAC, aMAC, 20)
	timeSQL("original q=machine_id", qMID, aMID, 20)

	owner := env.DB.Owner
	exec := func(stmts ...string) {
		for _, s := range stmts {
			t0 := time.Now()
			if _, err := owner.Exec(ctx, s); err != nil {
				b.Fatalf("%s: %v", s, err)
			}
			fmt.Printf("DDL %s (%s)\n", strings.SplitN(s, "\n", 2)[0], time.Since(t0).Round(time.Millisecond))
		}
	}
	size := func(idx string) {
		var sz string
		_ = owner.QueryRow(ctx, `SELECT pg_size_pretty(pg_relation_size($1::regclass))`, idx).Scan(&sz)
		fmt.Printf("SIZE %s %s\n", idx, sz)
	}
	exec(`CREATE EXTENSION IF NOT EXISTS pg_trgm`)

	// Variant A: plain search text.
	exec(`CREATE FUNCTION edgeward_asset_search_text(name text, machine_id text, addresses text[], macs text[]) RETURNS text
		    LANGUAGE sql IMMUTABLE PARALLEL SAFE
		    AS $$ SELECT name || E'\n' || coalesce(machine_id, '') || E'\n' || array_to_string(addresses, E'\n') || E'\n' || array_to_string(macs, E'\n') $$`,
		`CREATE INDEX assets_search_trgm_idx ON assets USING gin (edgeward_asset_search_text(name, machine_id, addresses, macs) gin_trgm_ops)`,
		`ANALYZE assets`)
	size("assets_search_trgm_idx")
	rewriteA := func(q string) string {
		return strings.Replace(q, "AND (name ILIKE $1", "AND edgeward_asset_search_text(name, machine_id, addresses, macs) ILIKE $1 AND (name ILIKE $1", 1)
	}
	explain("A: q machine_id", rewriteA(qMID), aMID)
	timeSQL("A: q=machine_id", rewriteA(qMID), aMID, 100)
	timeSQL("A: q=MAC", rewriteA(qMAC), aMAC, 20)
	exec(`DROP INDEX assets_search_trgm_idx`, `DROP FUNCTION edgeward_asset_search_text(text, text, text[], text[])`)

	// Variant B: separators of MACs, IPs and host names removed, lower case.
	exec(`CREATE FUNCTION edgeward_asset_search_key(name text, machine_id text, addresses text[], macs text[]) RETURNS text
		    LANGUAGE sql IMMUTABLE PARALLEL SAFE
		    AS $$ SELECT translate(lower(name || E'\n' || coalesce(machine_id, '') || E'\n' || array_to_string(addresses, E'\n') || E'\n' || array_to_string(macs, E'\n')), ':.-', '') $$`,
		`CREATE INDEX assets_search_trgm_idx ON assets USING gin (edgeward_asset_search_key(name, machine_id, addresses, macs) gin_trgm_ops)`,
		`ANALYZE assets`)
	size("assets_search_trgm_idx")
	rewriteB := func(q string) string {
		return strings.Replace(q, "AND (name ILIKE $1", "AND edgeward_asset_search_key(name, machine_id, addresses, macs) LIKE translate(lower($1), ':.-', '') AND (name ILIKE $1", 1)
	}
	explain("B: q one MAC", rewriteB(qMAC), aMAC)
	explain("B: q srv-", rewriteB(qSrv), aSrv)
	timeSQL("B: q=MAC", rewriteB(qMAC), aMAC, 300)
	timeSQL("B: q=machine_id", rewriteB(qMID), aMID, 100)
	timeSQL("B: q=srv-", rewriteB(qSrv), aSrv, 300)
	for _, extra := range []string{"10.4.", "ws-hq", "b8:27:eb", "0", "device", mac[9:]} {
		qx, ax := sqlFor(assets.Filter{Query: extra})
		timeSQL("original q="+extra, qx, ax, 20)
		timeSQL("B: q="+extra, rewriteB(qx), ax, 50)
	}
	explain("B: q=0", rewriteB(qSrv), []any{"%0%", 101})
	explain("B: q=device", rewriteB(qSrv), []any{"%device%", 101})
	// The whole list with the index present: does it cost anything elsewhere?
	timeHTTP("first page, index present", data.cases[0].path, 100)
	exec(`DROP INDEX assets_search_trgm_idx`, `DROP FUNCTION edgeward_asset_search_key(text, text, text[], text[])`)
}
