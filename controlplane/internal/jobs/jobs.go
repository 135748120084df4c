// Package jobs runs the control plane's background work on River, a job
// queue in PostgreSQL: jobs are inserted in the same transaction as the
// change that causes them, survive any process dying, are shared by every
// replica (FOR UPDATE SKIP LOCKED), and a leader-elected rescuer returns the
// jobs of a killed replica to the queue.
//
// Jobs carry ids only (which tenant, which row). A worker does its work in
// that tenant's own row-level-security transaction, so the queue never
// widens what a piece of code can see.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/edgeward/edgeward/controlplane/internal/db"
)

// Client is the River client the rooms insert jobs with.
type Client = river.Client[pgx.Tx]

// Config configures the client.
type Config struct {
	Pool    *pgxpool.Pool
	Workers *river.Workers
	// Queues maps a queue name to how many of its jobs run at once on this
	// replica.
	Queues map[string]int
	// JobTimeout bounds one job's run.
	JobTimeout time.Duration
	// RescueAfter is how long a job may stay running before the rescuer
	// takes its replica for dead and schedules it again. It must be longer
	// than JobTimeout.
	RescueAfter time.Duration
	// PeriodicJobs are scheduled by the elected leader replica.
	PeriodicJobs []*river.PeriodicJob
	Logger       *slog.Logger
}

// New makes a client; Start runs it.
func New(cfg Config) (*Client, error) {
	if cfg.RescueAfter <= cfg.JobTimeout {
		return nil, fmt.Errorf("jobs: the rescue delay (%s) must be longer than the job timeout (%s)", cfg.RescueAfter, cfg.JobTimeout)
	}
	if len(cfg.Queues) == 0 {
		return nil, errors.New("jobs: no queues")
	}
	queues := map[string]river.QueueConfig{}
	for name, n := range cfg.Queues {
		queues[name] = river.QueueConfig{MaxWorkers: n}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return river.NewClient(riverpgxv5.New(cfg.Pool), &river.Config{
		Schema:               db.JobSchema,
		Queues:               queues,
		Workers:              cfg.Workers,
		PeriodicJobs:         cfg.PeriodicJobs,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.RescueAfter,
		// New jobs are announced by NOTIFY; the short cooldown lets a burst
		// be fetched in a few batches instead of one poll a second.
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: time.Second,
		// REINDEX needs table ownership, which the runtime role never has.
		ReindexerIndexNames: []string{},
		Logger:              slog.New(routine{log.Handler()}).With("component", "jobs"),
	})
}

// routine hands River's log lines to the service log one level down:
// River reports its routine work at info (job counts every few seconds,
// each periodic scheduler run, leadership), which would drown the lines an
// operator reads. Warnings and errors keep their level; --log-level debug
// shows the rest.
type routine struct{ slog.Handler }

func quieter(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (h routine) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, quieter(l))
}

func (h routine) Handle(ctx context.Context, r slog.Record) error {
	r.Level = quieter(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h routine) WithAttrs(attrs []slog.Attr) slog.Handler {
	return routine{h.Handler.WithAttrs(attrs)}
}

func (h routine) WithGroup(name string) slog.Handler { return routine{h.Handler.WithGroup(name)} }
