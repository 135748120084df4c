package compliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/jobs"
)

// Queue is the River queue of evaluations.
const Queue = "compliance"

// DefaultInterval is how often every tenant is evaluated besides the
// evaluations domain events trigger.
const DefaultInterval = 10 * time.Minute

// coalesce is the window in which domain events of one tenant share an
// evaluation: a burst of alerts costs one run.
const coalesce = 5 * time.Second

// Runner evaluates tenants in River jobs: after relevant domain events and
// on a schedule run by the elected leader.
type Runner struct {
	pool     *pgxpool.Pool
	interval time.Duration
	log      *slog.Logger
	jobs     *jobs.Client
}

// NewRunner makes a runner; Register its workers, then Attach the client.
func NewRunner(pool *pgxpool.Pool, interval time.Duration, log *slog.Logger) *Runner {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{pool: pool, interval: interval, log: log.With("component", "compliance")}
}

// Register adds the evaluation workers.
func (r *Runner) Register(w *river.Workers) {
	river.AddWorker(w, &evaluateWorker{r: r})
	river.AddWorker(w, &sweepWorker{r: r})
}

// Attach gives the runner the job client.
func (r *Runner) Attach(c *jobs.Client) { r.jobs = c }

// PeriodicJobs is the schedule: a sweep that queues every tenant's
// evaluation, also run at start.
func (r *Runner) PeriodicJobs() []*river.PeriodicJob {
	return []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(r.interval),
		func() (river.JobArgs, *river.InsertOpts) { return sweepArgs{}, nil },
		&river.PeriodicJobOpts{ID: "compliance_sweep", RunOnStart: true})}
}

// relevant reports whether an event type can change a control's status.
func relevant(eventType string) bool {
	for _, p := range []string{"alert.", "agent.", "asset.", "policy."} {
		if strings.HasPrefix(eventType, p) {
			return true
		}
	}
	return false
}

// OnEvents queues an evaluation of the tenant, inside the transaction that
// dispatches its domain events, when one of them is relevant.
func (r *Runner) OnEvents(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, types []string) error {
	for _, t := range types {
		if relevant(t) {
			return r.Queue(ctx, tx, tenantID)
		}
	}
	return nil
}

// Queue queues an evaluation of the tenant inside tx; evaluations queued
// within the same few seconds are one.
func (r *Runner) Queue(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) error {
	if r.jobs == nil {
		return errors.New("compliance: no job client attached")
	}
	_, err := r.jobs.InsertTx(ctx, tx, evaluateArgs{TenantID: tenantID}, &river.InsertOpts{
		ScheduledAt: time.Now().Add(coalesce),
		UniqueOpts:  river.UniqueOpts{ByArgs: true, ByPeriod: coalesce},
	})
	if err != nil {
		return fmt.Errorf("queue evaluation: %w", err)
	}
	return nil
}

// EvaluateTenant runs the evaluators for one tenant now.
func (r *Runner) EvaluateTenant(ctx context.Context, tenantID uuid.UUID) (int, error) {
	var n int
	err := db.InTenant(ctx, r.pool, tenantID, func(tx pgx.Tx) error {
		params, err := LoadParams(ctx, tx)
		if err != nil {
			return err
		}
		n, err = Evaluate(ctx, tx, tenantID, params)
		return err
	})
	return n, err
}

type evaluateArgs struct {
	TenantID uuid.UUID `json:"tenant_id"`
}

func (evaluateArgs) Kind() string { return "compliance_evaluate" }

func (evaluateArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: Queue} }

type evaluateWorker struct {
	river.WorkerDefaults[evaluateArgs]
	r *Runner
}

// Timeout: an evaluation verifies the tenant's whole audit chain, which
// may take far longer than a webhook attempt (the client's default).
func (w *evaluateWorker) Timeout(*river.Job[evaluateArgs]) time.Duration { return 10 * time.Minute }

func (w *evaluateWorker) Work(ctx context.Context, job *river.Job[evaluateArgs]) error {
	n, err := w.r.EvaluateTenant(ctx, job.Args.TenantID)
	if err != nil {
		return err
	}
	if n > 0 {
		w.r.log.Info("control statuses changed", "tenant_id", job.Args.TenantID, "changed", n)
	}
	return nil
}

type sweepArgs struct{}

func (sweepArgs) Kind() string { return "compliance_sweep" }

func (sweepArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: Queue} }

type sweepWorker struct {
	river.WorkerDefaults[sweepArgs]
	r *Runner
}

// Work queues every tenant's evaluation; the runtime role learns tenant ids
// from app_tenant_ids() and nothing else.
func (w *sweepWorker) Work(ctx context.Context, _ *river.Job[sweepArgs]) error {
	rows, err := w.r.pool.Query(ctx, `SELECT app_tenant_ids()`)
	if err != nil {
		return err
	}
	tenants, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return err
	}
	params := make([]river.InsertManyParams, 0, len(tenants))
	for _, t := range tenants {
		params = append(params, river.InsertManyParams{Args: evaluateArgs{TenantID: t},
			InsertOpts: &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByPeriod: coalesce}}})
	}
	if len(params) == 0 {
		return nil
	}
	_, err = w.r.jobs.InsertMany(ctx, params)
	return err
}
