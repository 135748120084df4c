// Package bench measures the control plane's hot paths against a raw
// PostgreSQL ceiling measured in the same run, and prints one table.
// Run with `make bench`.
package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/auth"
	"github.com/edgeward/edgeward/controlplane/internal/db"
)

// figure is one row of the summary table.
type figure struct {
	name, unit, target, against string
	value                       float64
}

var (
	mu      sync.Mutex
	figures = map[string]figure{}
)

// report keeps the last (largest b.N) measurement of a figure.
func report(f figure) {
	mu.Lock()
	defer mu.Unlock()
	figures[f.name] = f
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(figures) > 0 {
		names := make([]string, 0, len(figures))
		for n := range figures {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Println()
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FIGURE\tMEASURED\tTARGET\tCOMPARED WITH (same run)")
		for _, n := range names {
			f := figures[n]
			fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\n", f.name, formatValue(f.value), f.unit, f.target, f.against)
		}
		_ = tw.Flush()
	}
	os.Exit(code)
}

func formatValue(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// env is one control plane shared by the benchmarks of a run.
var (
	envOnce sync.Once
	shared  *apitest.Env
)

func benchEnv(b *testing.B) *apitest.Env {
	envOnce.Do(func() { shared = apitest.Start(&keepAlive{b}) })
	return shared
}

// keepAlive lets the shared environment outlive the first benchmark: its
// cleanups (server shutdown, database drop) run when the whole run ends.
type keepAlive struct{ *testing.B }

var cleanups []func()

func (k *keepAlive) Cleanup(f func()) {
	mu.Lock()
	defer mu.Unlock()
	cleanups = append(cleanups, f)
}

var ceilingMe = map[string]float64{}

// BenchmarkRawTokenLookup is the ceiling for the read above: the same
// authentication query in a tenant transaction, straight to PostgreSQL.
func BenchmarkRawTokenLookup(b *testing.B) {
	env := benchEnv(b)
	tenantID, hash, err := auth.ParseToken(env.AdminToken)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			err := db.InTenant(ctx, env.DB.App, tenantID, func(tx pgx.Tx) error {
				var id uuid.UUID
				return tx.QueryRow(ctx, `SELECT t.id FROM api_tokens t JOIN principals p ON p.tenant_id = t.tenant_id AND p.id = t.principal_id
					JOIN tenants tn ON tn.id = t.tenant_id WHERE t.token_hash = $1`, hash).Scan(&id)
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	perSec := float64(b.N) / time.Since(start).Seconds()
	ceilingMe["lookup"] = perSec
	b.ReportMetric(perSec, "lookups/s")
	report(figure{name: "raw token lookup (ceiling)", value: perSec, unit: "lookups/s", target: "-", against: "-"})
}

// BenchmarkAuthenticatedRead is GET /api/v1/me over TLS through the whole
// HTTP layer (routing, token lookup in the tenant's RLS transaction, role
// check, validation, handler), with 16 concurrent clients.
func BenchmarkAuthenticatedRead(b *testing.B) {
	env := benchEnv(b)
	c := env.Client(b, env.AdminToken)
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := c.Do(http.MethodGet, "/api/v1/me", nil); r.Status != http.StatusOK {
				b.Errorf("status %d", r.Status)
				return
			}
		}
	})
	perSec := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(perSec, "req/s")
	report(figure{name: "GET /api/v1/me (TLS, 16 clients)", value: perSec, unit: "req/s", target: ">= 1000 req/s",
		against: fmt.Sprintf("raw token lookup in PostgreSQL: %.0f lookups/s", ceilingMe["lookup"])})
}

var ceilingInsert float64

// BenchmarkRawInsert is the ceiling for audit writes: one row of the same
// size per transaction into an unchained table, 8 writers.
func BenchmarkRawInsert(b *testing.B) {
	env := benchEnv(b)
	ctx := context.Background()
	if _, err := env.DB.Owner.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_raw (tenant_id uuid, id uuid, action text, details json, hash bytea)`); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, err := env.DB.Owner.Exec(ctx, `INSERT INTO bench_raw VALUES ($1, $2, 'bench.step', '{"n":1}', $3)`,
				env.Tenant.ID, uuid.Must(uuid.NewV7()), make([]byte, 32))
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	ceilingInsert = float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(ceilingInsert, "rows/s")
	report(figure{name: "raw insert, 8 writers (ceiling)", value: ceilingInsert, unit: "rows/s", target: "-", against: "-"})
}

// BenchmarkAuditRecordOneTenant appends to one tenant's chain from 8
// writers. The chain head serializes them, so this is the per-tenant limit.
func BenchmarkAuditRecordOneTenant(b *testing.B) {
	env := benchEnv(b)
	benchRecord(b, []uuid.UUID{env.Tenant.ID}, "audit events, one tenant, 8 writers")
}

// BenchmarkAuditRecordManyTenants spreads the same writers over 8 tenants,
// whose chains do not contend.
func BenchmarkAuditRecordManyTenants(b *testing.B) {
	env := benchEnv(b)
	var ids []uuid.UUID
	for i := 0; i < 8; i++ {
		t, _ := env.NewTenant(b, "bench-"+uuid.NewString()[:8])
		ids = append(ids, t.ID)
	}
	benchRecord(b, ids, "audit events, 8 tenants, 8 writers")
}

func benchRecord(b *testing.B, tenants []uuid.UUID, name string) {
	env := benchEnv(b)
	ctx := audit.WithActor(context.Background(), audit.Actor{Type: audit.ActorSystem, Name: "bench"})
	var next int64
	var nmu sync.Mutex
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		nmu.Lock()
		tenant := tenants[int(next)%len(tenants)]
		next++
		nmu.Unlock()
		for pb.Next() {
			err := db.InTenant(ctx, env.DB.App, tenant, func(tx pgx.Tx) error {
				return audit.Record(ctx, tx, tenant, audit.Entry{Action: "bench.step", TargetType: "bench", Details: map[string]any{"n": 1}})
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	perSec := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(perSec, "events/s")
	report(figure{name: name, value: perSec, unit: "events/s", target: ">= 500 events/s",
		against: fmt.Sprintf("raw insert: %.0f rows/s (%.0f%% of it)", ceilingInsert, 100*perSec/max(ceilingInsert, 1))})
}
