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
	timeSQL("original q=MAC", qMAC, aMAC, 30)
	timeSQL("original q=srv-", qSrv, aSrv, 100)
	// Validation overhead of the spec-checking client.
	c := env.Client(b, env.AdminToken)
	for _, lc := range data.cases[:1] {
		var lat []time.Duration
		for i := 0; i < 100; i++ {
			t0 := time.Now()
			c.Do(http.MethodGet, lc.path, nil)
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		fmt.Printf("Do()   %-60s p50 %6.2f ms  p99 %6.2f ms\n", lc.name, float64(lat[50].Microseconds())/1000, float64(lat[99].Microseconds())/1000)
		timeHTTP(lc.name, lc.path, 100)
	}

	// The rewrite: an indexable prefilter that is a superset of the OR, with
	// the original OR kept as the exact recheck.
	rewrite := func(q string) string {
		return strings.Replace(q, "AND (name ILIKE $1", "AND edgeward_asset_search_text(name, machine_id, addresses, macs) ILIKE $1 AND (name ILIKE $1", 1)
	}

	owner := env.DB.Owner
	ddl := []string{
		`CREATE EXTENSION IF NOT EXISTS pg_trgm`,
		`CREATE FUNCTION edgeward_asset_search_text(name text, machine_id text, addresses text[], macs text[]) RETURNS text
		    LANGUAGE sql IMMUTABLE PARALLEL SAFE
		    AS $$ SELECT name || E'\n' || coalesce(machine_id, '') || E'\n' || array_to_string(addresses, E'\n') || E'\n' || array_to_string(macs, E'\n') $$`,
	}
	for _, s := range ddl {
		if _, err := owner.Exec(ctx, s); err != nil {
			b.Fatalf("%s: %v", s, err)
		}
	}
	explain("q one MAC (rewritten, function, no index)", rewrite(qMAC), aMAC)
	timeSQL("rewritten q=MAC, no index", rewrite(qMAC), aMAC, 30)
	t0 := time.Now()
	if _, err := owner.Exec(ctx, `CREATE INDEX assets_search_trgm_idx ON assets USING gin (edgeward_asset_search_text(name, machine_id, addresses, macs) gin_trgm_ops)`); err != nil {
		b.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `ANALYZE assets`); err != nil {
		b.Fatal(err)
	}
	var size string
	_ = owner.QueryRow(ctx, `SELECT pg_size_pretty(pg_relation_size('assets_search_trgm_idx'))`).Scan(&size)
	fmt.Printf("index built in %s, size %s\n", time.Since(t0), size)
	explain("q one MAC (rewritten, GIN trgm)", rewrite(qMAC), aMAC)
	explain("q srv- (rewritten, GIN trgm)", rewrite(qSrv), aSrv)
	timeSQL("rewritten q=MAC, GIN trgm", rewrite(qMAC), aMAC, 300)
	timeSQL("rewritten q=srv-, GIN trgm", rewrite(qSrv), aSrv, 300)
	timeSQL("original q=MAC, GIN trgm present (unused)", qMAC, aMAC, 30)
	for _, extra := range []string{"10.4.", "ws-hq", "b8:27:eb", "0"} {
		qx, ax := sqlFor(assets.Filter{Query: extra})
		timeSQL("original q="+extra, qx, ax, 30)
		timeSQL("rewritten q="+extra+", GIN trgm", rewrite(qx), ax, 30)
	}

	for _, s := range []string{`DROP INDEX assets_search_trgm_idx`, `DROP FUNCTION edgeward_asset_search_text(text, text, text[], text[])`} {
		if _, err := owner.Exec(ctx, s); err != nil {
			b.Fatalf("%s: %v", s, err)
		}
	}
}
