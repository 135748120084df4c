package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/idempotency"
)

// DefaultRetentionInterval is how often the control plane enforces
// observation retention. Retention is counted in days, so an hour late is
// close enough, and each sweep is one indexed delete per tenant.
const DefaultRetentionInterval = time.Hour

// Retention enforces every site's observation retention (and drops
// expired idempotency keys), tenant by tenant,
// each in its own RLS transaction. The runtime role learns the tenant ids
// from app_tenant_ids() (migration 00004); nothing else crosses tenants.
// Several replicas may sweep at once: deleting what is already gone is a
// no-op.
type Retention struct {
	Pool     *pgxpool.Pool
	Interval time.Duration
	Logger   *slog.Logger
}

// Sweep expires old observations in every tenant and returns how many it
// deleted. A tenant that fails is logged and the sweep goes on; the first
// error is returned.
func (r Retention) Sweep(ctx context.Context) (int64, error) {
	rows, err := r.Pool.Query(ctx, `SELECT app_tenant_ids()`)
	if err != nil {
		return 0, fmt.Errorf("retention: list tenants: %w", err)
	}
	tenants, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return 0, fmt.Errorf("retention: list tenants: %w", err)
	}
	var total int64
	var first error
	for _, tenant := range tenants {
		var n int64
		err := db.InTenant(ctx, r.Pool, tenant, func(tx pgx.Tx) error {
			var err error
			if n, err = Expire(ctx, tx); err != nil {
				return err
			}
			_, err = idempotency.Expire(ctx, tx)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return total, ctx.Err()
			}
			r.logger().Warn("observation retention failed", "tenant_id", tenant, "err", err)
			if first == nil {
				first = err
			}
			continue
		}
		if n > 0 {
			r.logger().Info("observations past retention deleted", "tenant_id", tenant, "count", n)
		}
		total += n
	}
	return total, first
}

// Run sweeps now and then every Interval until ctx ends.
func (r Retention) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultRetentionInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_, _ = r.Sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r Retention) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
