package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/app"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhooktest"
	"github.com/edgeward/edgeward/controlplane/internal/outbox"
)

// The webhook benchmark: one control plane whose deliveries may reach a
// local HTTPS receiver (webhooktest, which verifies every signature), with
// webhookDestinations destinations subscribed to ticket.created, each at its
// own path of that receiver. Every event fans out to all of them.
const (
	webhookDestinations = 100
	webhookEventType    = "ticket.created"
	// The latency phase publishes one event at a time: it waits until the
	// event's deliveries have all succeeded, then webhookLatencyGap more,
	// so no event queues behind the one before. It publishes b.N events,
	// within these bounds.
	webhookLatencyMin = 10
	webhookLatencyMax = 40
	webhookLatencyGap = 20 * time.Millisecond
	// The burst phase commits b.N events (at most webhookBurstMax) as fast
	// as webhookPublishers transactions can, and times their delivery.
	webhookBurstMax   = 200
	webhookPublishers = 4
	// webhookDeadline bounds each phase's wait for its deliveries.
	webhookDeadline = 120 * time.Second
)

type webhookBench struct {
	env *apitest.Env
	rcv *webhooktest.Receiver
}

var (
	webhookOnce sync.Once
	webhookSet  *webhookBench
)

// webhookEnv starts the control plane and the receiver and creates the
// destinations through the API, once per run. The receiver accepts every
// destination's signing secret, so each request's signature is verified.
func webhookEnv(b *testing.B) *webhookBench {
	webhookOnce.Do(func() {
		ka := &keepAlive{b}
		rcv := webhooktest.New(ka)
		env := apitest.StartWith(ka, func(c *app.ServeConfig) {
			c.Deliveries = app.DeliverySettings{
				AllowHosts: []string{"127.0.0.1"},
				CAFile:     rcv.CAFile(ka),
				Workers:    deliveries.DefaultWorkers,
				Schedule:   []time.Duration{0, time.Second},
			}
		})
		admin := env.Client(b, env.AdminToken)
		secrets := make([]string, 0, webhookDestinations)
		for i := range webhookDestinations {
			r := admin.Do(http.MethodPost, "/api/v1/delivery-destinations", map[string]any{
				"name":        fmt.Sprintf("bench receiver %03d", i),
				"url":         fmt.Sprintf("%s/d/%d", rcv.URL(), i),
				"event_types": []string{webhookEventType},
			})
			if r.Status != http.StatusCreated {
				b.Fatalf("create destination %d: status %d: %s", i, r.Status, r.Body)
			}
			var c struct {
				Secret string `json:"secret"`
			}
			r.JSON(b, &c)
			secrets = append(secrets, c.Secret)
		}
		rcv.SetSecrets(secrets...)
		webhookSet = &webhookBench{env: env, rcv: rcv}
	})
	if webhookSet == nil {
		b.Fatal("the webhook benchmark's environment failed to start in an earlier run")
	}
	return webhookSet
}

// BenchmarkWebhookDeliveries measures webhook delivery end to end: events
// committed to the outbox, woken dispatcher, River attempt jobs, signed
// HTTPS POSTs to a local receiver that verifies every signature, and the
// attempts recorded. One op is one event fanned out to 100 destinations.
//
//   - Latency: events published one at a time (the next 20 ms after the
//     previous event's deliveries all succeeded); for each delivery, the
//     receiver's arrival time of its first attempt minus the time the
//     event's commit returned. The p99 includes the event's own fan-out:
//     its 100 attempts share the workers.
//   - Throughput: b.N events committed at once by 4 publishers; successful
//     deliveries divided by the time from the first commit to the arrival
//     of the last (event, destination) pair's successful attempt.
func BenchmarkWebhookDeliveries(b *testing.B) {
	w := webhookEnv(b)
	ctx := context.Background()
	b.StopTimer()

	// Latency phase.
	latN := min(max(b.N, webhookLatencyMin), webhookLatencyMax)
	latCommits := make(map[string]time.Time, latN)
	latIDs := make([]string, 0, latN)
	deadline := time.Now().Add(webhookDeadline)
	for range latN {
		id, at, err := w.publish(ctx)
		if err != nil {
			b.Fatal(err)
		}
		latCommits[id] = at
		latIDs = append(latIDs, id)
		w.awaitSettled(b, id, deadline)
		time.Sleep(webhookLatencyGap)
	}
	lat := w.collect(b, w.awaitReceived(b, latIDs, deadline), latCommits)
	latFirst := lat.latencies()
	latP50, latP99 := pctMS(latFirst, 0.5), pctMS(latFirst, 0.99)

	// Burst phase.
	n := min(b.N, webhookBurstMax)
	before := w.metrics(b)
	loadBefore := loadAverage()
	cpu0, cpuErr := systemCPU()
	self0, selfErr := cpuTicks(os.Getpid())
	stopSampling := w.sampleQueue(ctx)
	ids := make([]string, n)
	commits := make([]time.Time, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	b.StartTimer()
	for range webhookPublishers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				id, at, err := w.publish(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				ids[i], commits[i] = id, at
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		stopSampling()
		b.FailNow()
	}
	reqs := w.awaitReceived(b, ids, time.Now().Add(webhookDeadline))
	b.StopTimer()
	queue := stopSampling()
	cpu1, cpuErr1 := systemCPU()
	self1, selfErr1 := cpuTicks(os.Getpid())
	after := w.metrics(b)

	burstCommits := make(map[string]time.Time, n)
	first := commits[0]
	for i, id := range ids {
		burstCommits[id] = commits[i]
		first = earlier(first, commits[i])
	}
	burst := w.collect(b, reqs, burstCommits)
	last := first
	for _, t := range burst.done {
		last = later(last, t)
	}
	wall := last.Sub(first)
	delivered := len(burst.done)
	perSec := float64(delivered) / wall.Seconds()
	burstFirst := burst.latencies()
	burstP50, burstP99 := pctMS(burstFirst, 0.5), pctMS(burstFirst, 0.99)

	// Where the time goes: the pipeline as the database recorded it, the
	// queue as sampled, the pool and the CPU.
	stages := w.stages(ctx, b, ids)
	attempts := after["edgeward_webhook_attempt_duration_seconds_count"] - before["edgeward_webhook_attempt_duration_seconds_count"]
	httpMS := 1000 * (after["edgeward_webhook_attempt_duration_seconds_sum"] - before["edgeward_webhook_attempt_duration_seconds_sum"]) / max(attempts, 1)
	acquires := after["edgeward_db_pool_acquires_total"] - before["edgeward_db_pool_acquires_total"]
	waits := after["edgeward_db_pool_empty_acquires_total"] - before["edgeward_db_pool_empty_acquires_total"]
	workerMS := float64(deliveries.DefaultWorkers) * wall.Seconds() * 1000 / float64(max(delivered, 1))
	cpuNote, cpuShort := "CPU not measured", ""
	if cpuErr == nil && cpuErr1 == nil && selfErr == nil && selfErr1 == nil && cpu1.total > cpu0.total {
		total := float64(cpu1.total - cpu0.total)
		busy := 100 * (1 - float64(cpu1.idle-cpu0.idle)/total)
		self := 100 * float64(self1-self0) / total
		cpuNote = fmt.Sprintf("%d CPUs %.0f%% busy: %.0f%% this process (server, receiver, bench), %.0f%% others (PostgreSQL, anything else running); load before %s",
			runtime.NumCPU(), busy, self, busy-self, loadBefore)
		cpuShort = fmt.Sprintf("; CPU %.0f%% busy", busy)
	}
	// At most 3 lines a run: go test keeps only the first 10 lines of a
	// benchmark's log.
	b.Logf("paced: %d events one at a time, %d deliveries: commit->first attempt p50 %.1f ms, p99 %.1f ms; first destination of each event p50 %.1f ms",
		latN, len(latFirst), latP50, latP99, pctMS(lat.firstOfEvent(), 0.5))
	b.Logf("burst: %d events x %d destinations = %d deliveries in %s (%.0f/s); commit->first attempt p50 %.0f ms, p99 %.0f ms; %s",
		n, webhookDestinations, delivered, wall.Round(time.Millisecond), perSec, burstP50, burstP99, stages)
	b.Logf("burst: %s; HTTP %.1f ms per attempt, a busy worker spends %.0f ms per delivery; pool: %.0f of %.0f acquires waited; %s",
		queue, httpMS, workerMS, waits, acquires, cpuNote)

	b.ReportMetric(perSec, "deliveries/s")
	b.ReportMetric(latP50, "p50-ms")
	b.ReportMetric(latP99, "p99-ms")
	b.ReportMetric(burstP99, "burst-p99-ms")
	report(figure{name: fmt.Sprintf("webhook deliveries/s (%d destinations)", webhookDestinations), value: perSec, unit: "deliveries/s",
		target: "measured", against: fmt.Sprintf("%d events x %d destinations in %.1f s, %d workers%s; burst commit->first attempt p99 %.0f ms",
			n, webhookDestinations, wall.Seconds(), deliveries.DefaultWorkers, cpuShort, burstP99)})
	paced := fmt.Sprintf("%d deliveries of %d events published one at a time", len(latFirst), latN)
	report(figure{name: "webhook commit→first attempt p50", value: latP50, unit: "ms", target: "measured", against: paced})
	report(figure{name: "webhook commit→first attempt p99", value: latP99, unit: "ms", target: "measured", against: paced})
}

// publish commits one ticket.created event in its own tenant transaction,
// as a ticket's creation does, and returns its id (the webhook-id receivers
// see) and when the commit returned.
func (w *webhookBench) publish(ctx context.Context) (string, time.Time, error) {
	tenant := w.env.Tenant.ID
	ticket := uuid.Must(uuid.NewV7())
	var id uuid.UUID
	err := db.InTenant(ctx, w.env.DB.App, tenant, func(tx pgx.Tx) error {
		err := outbox.Publish(ctx, tx, tenant, outbox.Event{Type: webhookEventType, AggregateType: "ticket", AggregateID: ticket,
			Payload: map[string]any{"id": ticket.String(), "number": 1, "title": "Unauthorized device on the plant network",
				"status": "open", "priority": "high"}})
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT id FROM outbox_events WHERE dispatched_at IS NULL AND aggregate_id = $1`, ticket).Scan(&id)
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("publish %s: %w", webhookEventType, err)
	}
	return id.String(), time.Now(), nil
}

// awaitSettled waits until every delivery of one event has succeeded, as
// the database records it (the attempt is recorded after the receiver
// answered).
func (w *webhookBench) awaitSettled(b *testing.B, id string, deadline time.Time) {
	ctx := context.Background()
	for {
		var done int
		err := db.InTenant(ctx, w.env.DB.App, w.env.Tenant.ID, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE event_id = $1 AND status = 'succeeded'`, id).Scan(&done)
		})
		if err != nil {
			b.Fatal(err)
		}
		if done >= webhookDestinations {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("event %s: %d of %d deliveries succeeded within %s", id, done, webhookDestinations, webhookDeadline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitReceived waits until the receiver has answered 2xx to every
// destination's request for every event of ids, and returns every request
// it has seen.
func (w *webhookBench) awaitReceived(b *testing.B, ids []string, deadline time.Time) []webhooktest.Request {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	for {
		acked := 0
		for id, n := range w.rcv.Succeeded() {
			if want[id] {
				acked += min(n, webhookDestinations)
			}
		}
		if acked >= len(ids)*webhookDestinations {
			// Counts per webhook-id could include a repeated attempt;
			// only every (event, destination) pair counts.
			reqs := w.rcv.Requests()
			if missing := missingPairs(reqs, want); missing == 0 {
				return reqs
			}
		}
		if time.Now().After(deadline) {
			reqs := w.rcv.Requests()
			b.Fatalf("webhooks not all delivered within %s: %d of %d (event, destination) pairs acknowledged; %d request(s) seen in all",
				webhookDeadline, len(ids)*webhookDestinations-missingPairs(reqs, want), len(ids)*webhookDestinations, len(reqs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type webhookPair struct{ id, path string }

func missingPairs(reqs []webhooktest.Request, want map[string]bool) int {
	ok := map[webhookPair]bool{}
	for _, q := range reqs {
		if want[q.ID] && q.Status >= 200 && q.Status < 300 {
			ok[webhookPair{q.ID, q.Path}] = true
		}
	}
	return len(want)*webhookDestinations - len(ok)
}

// webhookPhase is what the receiver saw of one phase's events.
type webhookPhase struct {
	commits map[string]time.Time
	// first is the arrival of each pair's first attempt, done of its first
	// successful one.
	first, done map[webhookPair]time.Time
}

// collect keeps the requests of commits' events and fails the benchmark on
// any request whose signature did not verify, or that went to a path no
// destination has.
func (w *webhookBench) collect(b *testing.B, reqs []webhooktest.Request, commits map[string]time.Time) webhookPhase {
	p := webhookPhase{commits: commits, first: map[webhookPair]time.Time{}, done: map[webhookPair]time.Time{}}
	invalid := 0
	for _, q := range reqs {
		if !q.SignatureValid {
			invalid++
		}
		if _, ok := commits[q.ID]; !ok {
			continue
		}
		k := webhookPair{q.ID, q.Path}
		if _, seen := p.first[k]; !seen {
			p.first[k] = q.Received
		}
		if _, seen := p.done[k]; !seen && q.Status >= 200 && q.Status < 300 {
			p.done[k] = q.Received
		}
	}
	if invalid > 0 {
		b.Fatalf("%d of %d webhook requests had no valid signature", invalid, len(reqs))
	}
	if want := len(commits) * webhookDestinations; len(p.done) != want {
		b.Fatalf("%d (event, destination) pairs delivered, want %d", len(p.done), want)
	}
	return p
}

// latencies are, per delivery, commit to the arrival of its first attempt,
// sorted.
func (p webhookPhase) latencies() []time.Duration {
	out := make([]time.Duration, 0, len(p.first))
	for k, t := range p.first {
		out = append(out, t.Sub(p.commits[k.id]))
	}
	slices.Sort(out)
	return out
}

// firstOfEvent is, per event, commit to the first attempt of any of its
// deliveries: the pipeline's own latency without the fan-out, sorted.
func (p webhookPhase) firstOfEvent() []time.Duration {
	byEvent := map[string]time.Duration{}
	for k, t := range p.first {
		d := t.Sub(p.commits[k.id])
		if cur, ok := byEvent[k.id]; !ok || d < cur {
			byEvent[k.id] = d
		}
	}
	out := make([]time.Duration, 0, len(byEvent))
	for _, d := range byEvent {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// pctMS is the p-th percentile of sorted durations, in milliseconds.
func pctMS(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(p*float64(len(sorted)-1))].Microseconds()) / 1000
}

// stages splits the burst's deliveries into what the database recorded:
// event committed (its transaction's start) to delivery created by the
// dispatcher, delivery created to the attempt's send, and the send itself.
func (w *webhookBench) stages(ctx context.Context, b *testing.B, ids []string) string {
	events := make([]uuid.UUID, len(ids))
	for i, id := range ids {
		events[i] = uuid.MustParse(id)
	}
	var dispatch50, dispatch99, queued50, queued99, send50, send99 float64
	err := db.InTenant(ctx, w.env.DB.App, w.env.Tenant.ID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.created_at - e.created_at)),
			       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.created_at - e.created_at)),
			       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - d.created_at)),
			       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - d.created_at)),
			       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) / 1000,
			       percentile_cont(0.99) WITHIN GROUP (ORDER BY a.duration_ms) / 1000
			  FROM deliveries d
			  JOIN outbox_events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
			  JOIN delivery_attempts a ON a.tenant_id = d.tenant_id AND a.delivery_id = d.id AND a.attempt = 1
			 WHERE d.event_id = ANY($1)`, db.UUIDs(events)).
			Scan(&dispatch50, &dispatch99, &queued50, &queued99, &send50, &send99)
	})
	if err != nil {
		b.Logf("pipeline stages: %v", err)
		return "pipeline stages not measured"
	}
	return fmt.Sprintf("event->delivery created (dispatcher) p50 %.0f p99 %.0f ms, created->sent (River queue, worker) p50 %.0f p99 %.0f ms, send p50 %.0f p99 %.0f ms",
		1000*dispatch50, 1000*dispatch99, 1000*queued50, 1000*queued99, 1000*send50, 1000*send99)
}

// sampleQueue counts the delivery queue's available and running jobs every
// 100 ms until the returned function is called, which summarizes them.
func (w *webhookBench) sampleQueue(ctx context.Context) func() string {
	ctx, cancel := context.WithCancel(ctx)
	var samples, sumRunning, maxRunning, maxAvailable int
	var failure error
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			var available, running int
			err := w.env.DB.Owner.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'available'), count(*) FILTER (WHERE state = 'running')
				FROM `+db.JobSchema+`.river_job WHERE queue = $1 AND state IN ('available', 'running')`, deliveries.Queue).Scan(&available, &running)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				failure = err
				return
			}
			samples++
			sumRunning += running
			maxRunning = max(maxRunning, running)
			maxAvailable = max(maxAvailable, available)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() string {
		cancel()
		<-done
		if failure != nil {
			return "not sampled: " + failure.Error()
		}
		return fmt.Sprintf("River: running jobs mean %.1f max %d of %d, available jobs max %d (%d samples)",
			float64(sumRunning)/float64(max(samples, 1)), maxRunning, deliveries.DefaultWorkers, maxAvailable, samples)
	}
}

// metrics scrapes the control plane's /metrics into name{labels} -> value.
func (w *webhookBench) metrics(b *testing.B) map[string]float64 {
	r := w.env.Client(b, "").Do(http.MethodGet, "/metrics", nil)
	out := map[string]float64{}
	if r.Status != http.StatusOK {
		b.Logf("GET /metrics: status %d", r.Status)
		return out
	}
	sc := bufio.NewScanner(strings.NewReader(string(r.Body)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// loadAverage is the 1-minute load average, or "?".
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// cpuTimes are the machine's CPU times from /proc/stat, in clock ticks.
type cpuTimes struct{ total, idle int64 }

func systemCPU() (cpuTimes, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	var c cpuTimes
	for i, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return cpuTimes{}, err
		}
		if i < 8 { // user nice system idle iowait irq softirq steal; guest is counted in user
			c.total += v
		}
		if i == 3 || i == 4 {
			c.idle += v
		}
	}
	return c, nil
}
