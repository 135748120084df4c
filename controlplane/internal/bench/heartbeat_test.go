package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
	"github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1/agentv1connect"
)

// simulatedAgents is how many agents the heartbeat benchmark runs, each on
// its own mutual-TLS HTTP/2 connection.
const simulatedAgents = 256

type simAgent struct {
	agent *apitest.Agent
	rpc   agentv1connect.AgentServiceClient
}

var (
	fleetOnce sync.Once
	fleet     []*simAgent
)

// simulatedFleet enrolls the agents once per run through the real Enroll.
func simulatedFleet(b *testing.B) []*simAgent {
	env := benchEnv(b)
	fleetOnce.Do(func() {
		_, token := env.EnrollmentToken(b, map[string]any{"name": "bench fleet", "max_uses": simulatedAgents})
		for i := 0; i < simulatedAgents; i++ {
			a, err := env.Enroll(b, token, fmt.Sprintf("bench-machine-%04d", i), fmt.Sprintf("bench-host-%04d", i))
			if err != nil {
				b.Fatal(err)
			}
			fleet = append(fleet, &simAgent{agent: a, rpc: a.RPC(&keepAlive{b})})
		}
	})
	return fleet
}

var ceilingHeartbeats float64

// BenchmarkRawHeartbeatWrites is the ceiling for heartbeat ingest: the rows
// a heartbeat changes (the agent's sequence, last-seen time and queue
// figures, and its asset's last-seen time at 30 s resolution), written straight to PostgreSQL
// with pgx in multi-row batches from 4 writers, each owning a quarter of the
// agents (as the real path never updates one agent from two batches at
// once), no HTTP, no TLS.
func BenchmarkRawHeartbeatWrites(b *testing.B) {
	env := benchEnv(b)
	agents := simulatedFleet(b)
	all := make([]uuid.UUID, len(agents))
	for i, a := range agents {
		all[i] = uuid.MustParse(a.agent.AgentID)
	}
	var seq atomic.Int64
	seq.Store(1 << 40) // far above what the agents send
	ctx := context.Background()
	var writer atomic.Int64
	b.SetParallelism(2)
	b.ResetTimer()
	start := time.Now()
	var rows atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		w := int(writer.Add(1) - 1)
		per := len(all) / (2 * runtime.GOMAXPROCS(0))
		ids := all[(w*per)%len(all) : (w*per)%len(all)+per]
		for {
			n := 0
			for n < len(ids) && pb.Next() {
				n++
			}
			if n == 0 {
				return
			}
			s := seq.Add(1)
			seqs := make([]int64, n)
			for i := range seqs {
				seqs[i] = s
			}
			err := db.InTenant(ctx, env.DB.App, env.Tenant.ID, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `
					UPDATE agents a SET last_seq = v.seq, reports_applied = a.reports_applied + 1, last_seen_at = now(),
					       queue_depth = 1, queue_dropped = 0
					  FROM unnest($1::uuid[], $2::bigint[]) AS v(id, seq) WHERE a.id = v.id`, db.UUIDs(ids[:n]), seqs); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `
					UPDATE assets s SET last_seen_at = now()
					  FROM agents a WHERE a.id = ANY($1) AND s.id = a.asset_id AND s.last_seen_at < now() - interval '30 seconds'`, db.UUIDs(ids[:n]))
				return err
			})
			if err != nil {
				b.Error(err)
				return
			}
			rows.Add(int64(n))
			if n < len(ids) {
				return
			}
		}
	})
	ceilingHeartbeats = float64(rows.Load()) / time.Since(start).Seconds()
	b.ReportMetric(ceilingHeartbeats, "rows/s")
	report(figure{name: "raw heartbeat rows, pgx multi-row batches (ceiling)", value: ceilingHeartbeats, unit: "rows/s", target: "-", against: "-"})
}

// BenchmarkHeartbeats is sustained heartbeat ingest: 256 simulated agents,
// each on its own mutual-TLS HTTP/2 connection, each sending heartbeats of
// one report with full host facts back to back through the real
// AgentService.Heartbeat (identity check, batching ingest, PostgreSQL).
func BenchmarkHeartbeats(b *testing.B) {
	agents := simulatedFleet(b)
	var next atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	b.SetParallelism(simulatedAgents / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		a := agents[int(next.Add(1)-1)%len(agents)]
		var mine []time.Duration
		ctx := context.Background()
		for pb.Next() {
			rep := a.agent.Report()
			t0 := time.Now()
			resp, err := a.rpc.Heartbeat(ctx, connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{rep}}))
			if err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
			if len(resp.Msg.GetAckedSeqs()) != 1 {
				b.Errorf("acked %v, want [%d]", resp.Msg.GetAckedSeqs(), rep.Seq)
				return
			}
		}
		mu.Lock()
		latencies = append(latencies, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	perSec := float64(b.N) / elapsed.Seconds()
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))]
	}
	b.ReportMetric(perSec, "heartbeats/s")
	b.ReportMetric(float64(pct(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	ratio := 100 * perSec / max(ceilingHeartbeats, 1)
	report(figure{name: fmt.Sprintf("heartbeats, %d agents over mTLS HTTP/2", simulatedAgents), value: perSec, unit: "heartbeats/s",
		target: ">= 5000/s and >= 50% of ceiling",
		against: fmt.Sprintf("raw pgx ceiling %.0f rows/s: %.0f%%; p50 %.1f ms, p99 %.1f ms", ceilingHeartbeats, ratio,
			float64(pct(0.5).Microseconds())/1000, float64(pct(0.99).Microseconds())/1000)})
}
