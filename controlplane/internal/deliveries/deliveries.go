// Package deliveries sends domain events to customers' webhook receivers:
// destinations with sealed credentials, one delivery per (outbox event,
// destination) created in the transaction that marks the event dispatched,
// attempts run as River jobs with a Svix-like retry schedule, and an
// immutable record of every attempt. Delivery is at least once: a replica
// killed mid-attempt has its job rescued and the attempt made again, with
// the same webhook-id so receivers can deduplicate.
package deliveries

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// Delivery statuses.
const (
	StatusPending   = "pending"
	StatusRetrying  = "retrying"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Delivery is one event's journey to one destination.
type Delivery struct {
	ID             uuid.UUID
	DestinationID  uuid.UUID
	EventID        uuid.UUID
	EventType      string
	AggregateType  string
	AggregateID    uuid.UUID
	EventCreatedAt time.Time
	Status         string
	AttemptCount   int
	NextRetryAt    *time.Time
	LastAttemptAt  *time.Time
	LastStatusCode *int
	LastErrorClass *string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	CompletedAt    *time.Time
}

// WebhookID is the webhook-id receivers see: the event's id, the same on
// every attempt (and for every destination of the event).
func (d Delivery) WebhookID() string { return d.EventID.String() }

const deliveryColumns = `x.id, x.destination_id, x.event_id, x.event_type, e.aggregate_type, e.aggregate_id, e.created_at,
	x.status, x.attempt_count, x.next_retry_at, x.last_attempt_at, x.last_status_code, x.last_error_class,
	x.created_at, x.updated_at, x.completed_at`

const deliveryFrom = ` FROM deliveries x JOIN outbox_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id`

func scanDelivery(row pgx.Row) (Delivery, error) {
	var d Delivery
	err := row.Scan(&d.ID, &d.DestinationID, &d.EventID, &d.EventType, &d.AggregateType, &d.AggregateID, &d.EventCreatedAt,
		&d.Status, &d.AttemptCount, &d.NextRetryAt, &d.LastAttemptAt, &d.LastStatusCode, &d.LastErrorClass,
		&d.CreatedAt, &d.UpdatedAt, &d.CompletedAt)
	return d, err
}

// Filter selects deliveries.
type Filter struct {
	Status        string
	DestinationID *uuid.UUID
	EventType     string
	Since, Until  *time.Time
	BeforeID      *uuid.UUID
	Limit         int
}

// List lists deliveries newest first, one more than Limit.
func List(ctx context.Context, tx pgx.Tx, f Filter) ([]Delivery, error) {
	q := `SELECT ` + deliveryColumns + deliveryFrom + ` WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.Status != "" {
		q += " AND x.status = " + arg(f.Status)
	}
	if f.DestinationID != nil {
		q += " AND x.destination_id = " + arg(*f.DestinationID)
	}
	if f.EventType != "" {
		q += " AND x.event_type = " + arg(f.EventType)
	}
	// Ids are UUIDv7: time-ordered, so time bounds are id bounds the
	// indexes (tenant_id, ..., id) serve.
	if f.Since != nil {
		q += " AND x.id >= " + arg(uuidFloor(*f.Since))
	}
	if f.Until != nil {
		q += " AND x.id < " + arg(uuidFloor(*f.Until))
	}
	if f.BeforeID != nil {
		q += " AND x.id < " + arg(*f.BeforeID)
	}
	q += " ORDER BY x.id DESC LIMIT " + arg(f.Limit+1)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Delivery, error) { return scanDelivery(r) })
}

// uuidFloor is the smallest UUIDv7 of a millisecond.
func uuidFloor(t time.Time) uuid.UUID {
	var u uuid.UUID
	ms := uint64(t.UnixMilli())
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70
	u[8] = 0x80
	return u
}

// Get reads one delivery.
func Get(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Delivery, error) {
	return get(ctx, tx, id, "")
}

func get(ctx context.Context, tx pgx.Tx, id uuid.UUID, lock string) (Delivery, error) {
	d, err := scanDelivery(tx.QueryRow(ctx, `SELECT `+deliveryColumns+deliveryFrom+` WHERE x.id = $1`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, problem.NotFound("delivery")
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("get delivery: %w", err)
	}
	return d, nil
}

// Attempt is the record of one try.
type Attempt struct {
	ID                uuid.UUID
	DeliveryID        uuid.UUID
	Number            int
	Trigger           string
	StartedAt         time.Time
	EndedAt           time.Time
	DurationMS        int
	StatusCode        *int
	ErrorClass        *string
	Error             *string
	ResponseBody      *string
	ResponseTruncated bool
	RetryAfterSeconds *int
}

// Attempts lists a delivery's attempts oldest first after the given number,
// one more than limit. An unknown delivery is a 404.
func Attempts(ctx context.Context, tx pgx.Tx, deliveryID uuid.UUID, after, limit int) ([]Attempt, error) {
	if _, err := Get(ctx, tx, deliveryID); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT id, delivery_id, attempt, trigger, started_at, ended_at, duration_ms, status_code, error_class,
		error, response_body, response_truncated, retry_after_seconds FROM delivery_attempts
		WHERE delivery_id = $1 AND attempt > $2 ORDER BY attempt LIMIT $3`, deliveryID, after, limit+1)
	if err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Attempt, error) {
		var a Attempt
		return a, r.Scan(&a.ID, &a.DeliveryID, &a.Number, &a.Trigger, &a.StartedAt, &a.EndedAt, &a.DurationMS, &a.StatusCode,
			&a.ErrorClass, &a.Error, &a.ResponseBody, &a.ResponseTruncated, &a.RetryAfterSeconds)
	})
}

// Retry schedules an immediate attempt of a delivery, whatever its status;
// older scheduled jobs of it become no-ops. The destination must be active.
func (s *Service) Retry(ctx context.Context, tx pgx.Tx, tenantID, id uuid.UUID) (Delivery, error) {
	d, err := get(ctx, tx, id, " FOR UPDATE OF x")
	if err != nil {
		return Delivery{}, err
	}
	var enabled bool
	if err := tx.QueryRow(ctx, `SELECT enabled AND deleted_at IS NULL FROM delivery_destinations WHERE id = $1`, d.DestinationID).Scan(&enabled); err != nil {
		return Delivery{}, fmt.Errorf("retry delivery: %w", err)
	}
	if !enabled {
		return Delivery{}, problem.New(http.StatusConflict, codeDisabled,
			"the delivery's destination is disabled or deleted; enable it (PATCH enabled: true) and retry")
	}
	status := StatusPending
	if d.AttemptCount > 0 {
		status = StatusRetrying
	}
	var seq int
	if err := tx.QueryRow(ctx, `UPDATE deliveries SET status = $2, next_retry_at = now(), completed_at = NULL, updated_at = now(),
		job_seq = job_seq + 1 WHERE id = $1 RETURNING job_seq`, id, status).Scan(&seq); err != nil {
		return Delivery{}, fmt.Errorf("retry delivery: %w", err)
	}
	if err := s.schedule(ctx, tx, attemptArgs{TenantID: tenantID, DeliveryID: id, Seq: seq, Manual: true}, time.Time{}); err != nil {
		return Delivery{}, err
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "delivery.retried", TargetType: "delivery", TargetID: id.String(),
		Details: map[string]any{"previous_status": d.Status, "attempt_count": d.AttemptCount, "event_type": d.EventType}}); err != nil {
		return Delivery{}, err
	}
	return Get(ctx, tx, id)
}
