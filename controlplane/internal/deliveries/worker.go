package deliveries

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhook"
)

// attemptArgs is the River job of one attempt. It names the delivery and
// the job_seq it was scheduled under; a job whose seq is no longer the
// delivery's (a manual retry scheduled another) does nothing.
type attemptArgs struct {
	TenantID   uuid.UUID `json:"tenant_id"`
	DeliveryID uuid.UUID `json:"delivery_id"`
	Seq        int       `json:"seq"`
	Manual     bool      `json:"manual,omitempty"`
}

func (attemptArgs) Kind() string { return "webhook_attempt" }

// InsertOpts: River retries a job only when its worker fails to record an
// attempt (the database was away); attempts themselves are scheduled by the
// delivery's own schedule.
func (attemptArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 20}
}

type attemptWorker struct {
	river.WorkerDefaults[attemptArgs]
	s *Service
}

func (w *attemptWorker) Timeout(*river.Job[attemptArgs]) time.Duration { return w.s.JobTimeout() }

func (w *attemptWorker) Work(ctx context.Context, job *river.Job[attemptArgs]) error {
	return w.s.attempt(ctx, job)
}

// envelope is the webhook body (Standard Webhooks): the event type, when it
// happened, and its data.
type envelope struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// attempt makes one attempt: read what to send in one transaction, send
// with no transaction open, record the outcome in a second that also
// completes the job. A replica dying between the two leaves the job running;
// the rescuer schedules it again and the attempt is repeated with the same
// webhook-id.
func (s *Service) attempt(ctx context.Context, job *river.Job[attemptArgs]) error {
	a := job.Args
	var msg webhook.Message
	var destID uuid.UUID
	live, manual, sealedShut := false, false, false
	err := db.InTenant(ctx, s.cfg.Pool, a.TenantID, func(tx pgx.Tx) error {
		var status string
		var seq int
		var enabled bool
		var eventType string
		var eventAt time.Time
		var payload []byte
		var secret, previous, authSealed []byte
		var previousLive bool
		var authName *string
		var eventID uuid.UUID
		var lastAttempt *time.Time
		err := tx.QueryRow(ctx, `SELECT x.status, x.job_seq, x.last_attempt_at, x.event_id, e.type, e.created_at, e.payload,
			d.id, d.url, d.enabled AND d.deleted_at IS NULL, d.secret_sealed, d.previous_secret_sealed,
			coalesce(d.previous_secret_expires_at > now(), false), d.auth_header_name, d.auth_header_sealed
			FROM deliveries x
			JOIN outbox_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id
			JOIN delivery_destinations d ON d.tenant_id = x.tenant_id AND d.id = x.destination_id
			WHERE x.id = $1`, a.DeliveryID).Scan(&status, &seq, &lastAttempt, &eventID, &eventType, &eventAt, &payload,
			&destID, &msg.URL, &enabled, &secret, &previous, &previousLive, &authName, &authSealed)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read delivery: %w", err)
		}
		if seq != a.Seq || status == StatusSucceeded || status == StatusFailed || status == StatusCancelled {
			return nil // superseded or settled
		}
		if !enabled {
			_, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'cancelled', next_retry_at = NULL, completed_at = now(), updated_at = now()
				WHERE id = $1`, a.DeliveryID)
			return err
		}
		// A manual retry's job makes one manual attempt; if that fails, the
		// same job goes on with the schedule.
		manual = a.Manual && (lastAttempt == nil || lastAttempt.Before(job.CreatedAt))
		msg.ID = eventID.String()
		msg.Body, err = json.Marshal(envelope{Type: eventType, Timestamp: eventAt.UTC(), Data: payload})
		if err != nil {
			return err
		}
		live = true
		ctxName := sealContext(a.TenantID, destID, sealSigning)
		cur, err := s.cfg.Keys.Open(secret, ctxName)
		if err != nil {
			// A key was dropped from --secrets-key (or the row was
			// tampered with): recorded as a failed attempt, never sent
			// unsigned, never left pending without a trace.
			s.log.Error("a destination's signing secret does not open with the configured keys", "destination_id", destID, "err", err)
			sealedShut = true
			return nil
		}
		msg.Secrets = []string{string(cur)}
		if previousLive && previous != nil {
			if old, err := s.cfg.Keys.Open(previous, ctxName); err == nil {
				msg.Secrets = append(msg.Secrets, string(old))
			}
		}
		if authName != nil {
			v, err := s.cfg.Keys.Open(authSealed, sealContext(a.TenantID, destID, sealAuth))
			if err != nil {
				s.log.Error("a destination's auth header does not open with the configured keys", "destination_id", destID, "err", err)
				sealedShut = true
				return nil
			}
			msg.AuthHeaderName, msg.AuthHeaderValue = *authName, string(v)
		}
		return nil
	})
	if err != nil || !live {
		return err
	}
	msg.Timestamp = time.Now()
	var res webhook.Result
	if sealedShut {
		res = webhook.Result{Started: msg.Timestamp, Ended: msg.Timestamp, ErrorClass: webhook.ClassInvalidRequest,
			Error: "the destination's stored credentials cannot be opened with the configured --secrets-key keys"}
	} else {
		res = s.cfg.Sender.Send(ctx, msg)
	}
	if ctx.Err() != nil {
		// Shutting down or timed out as a job: River retries the job, and
		// this attempt is made again.
		return ctx.Err()
	}
	outcome := "succeeded"
	if !res.Succeeded() {
		outcome = res.ErrorClass
	}
	s.cfg.Metrics.attempts.WithLabelValues(outcome).Inc()
	s.cfg.Metrics.duration.Observe(res.Ended.Sub(res.Started).Seconds())
	var retry bool
	var delay time.Duration
	err = db.InTenant(ctx, s.cfg.Pool, a.TenantID, func(tx pgx.Tx) error {
		var err error
		if retry, delay, err = s.record(ctx, tx, a, manual, destID, res); err != nil || retry {
			return err
		}
		_, err = river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
		return err
	})
	if err != nil {
		return err
	}
	if retry {
		// The same job runs the next attempt. River makes a short snooze
		// available at once (to be fetched when due) instead of waiting for
		// its scheduler. Should this replica die before River records the
		// snooze, the rescuer runs the job again, a little early.
		return river.JobSnooze(max(delay, time.Millisecond))
	}
	return nil
}

// record stores an attempt and moves the delivery and its destination on.
// It reports whether the job should attempt again, and after how long.
func (s *Service) record(ctx context.Context, tx pgx.Tx, a attemptArgs, manual bool, destID uuid.UUID, res webhook.Result) (bool, time.Duration, error) {
	var status string
	var seq, count int
	if err := tx.QueryRow(ctx, `SELECT status, job_seq, attempt_count FROM deliveries WHERE id = $1 FOR UPDATE`, a.DeliveryID).
		Scan(&status, &seq, &count); err != nil {
		return false, 0, fmt.Errorf("lock delivery: %w", err)
	}
	n := count + 1
	trigger := "scheduled"
	if manual {
		trigger = "manual"
	}
	var statusCode, retryAfter *int
	if res.StatusCode != 0 {
		statusCode = &res.StatusCode
	}
	if res.RetryAfter > 0 {
		secs := int(res.RetryAfter.Round(time.Second) / time.Second)
		retryAfter = &secs
	}
	var class, message, body *string
	if !res.Succeeded() {
		class, message = &res.ErrorClass, &res.Error
		if len(res.Error) > 500 {
			m := strings.ToValidUTF8(res.Error[:500], "")
			message = &m
		}
	}
	if len(res.Body) > 0 {
		b := string(res.Body)
		body = &b
	}
	if _, err := tx.Exec(ctx, `INSERT INTO delivery_attempts (tenant_id, id, delivery_id, attempt, trigger, started_at, ended_at,
		duration_ms, status_code, error_class, error, response_body, response_truncated, retry_after_seconds)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		a.TenantID, uuid.Must(uuid.NewV7()), a.DeliveryID, n, trigger, res.Started, res.Ended,
		res.Ended.Sub(res.Started).Milliseconds(), statusCode, class, message, body, res.Truncated, retryAfter); err != nil {
		return false, 0, fmt.Errorf("record attempt: %w", err)
	}
	current := seq == a.Seq && status != StatusCancelled

	if res.Succeeded() {
		if _, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'succeeded', attempt_count = $2, last_attempt_at = $3,
			last_status_code = $4, last_error_class = NULL, next_retry_at = NULL, completed_at = now(), updated_at = now()
			WHERE id = $1`, a.DeliveryID, n, res.Started, statusCode); err != nil {
			return false, 0, fmt.Errorf("settle delivery: %w", err)
		}
		// Healthy destinations are written at most once a second: many
		// concurrent successes need not queue on the destination's row.
		_, err := tx.Exec(ctx, `UPDATE delivery_destinations SET last_success_at = now(), failing_since = NULL, consecutive_failures = 0
			WHERE id = $1 AND (failing_since IS NOT NULL OR consecutive_failures > 0 OR last_success_at IS NULL
			OR last_success_at < now() - interval '1 second')`, destID)
		return false, 0, err
	}

	// A failure.
	delay, more := s.nextDelay(n)
	delay = max(delay, res.RetryAfter)
	gone := res.StatusCode == http.StatusGone
	retry := current && more && !gone
	newStatus := status // not current: a newer job (or a cancellation) owns what happens next
	var nextAt, completed *time.Time
	switch {
	case retry:
		at := time.Now().Add(delay)
		newStatus, nextAt = StatusRetrying, &at
	case current:
		now := time.Now()
		newStatus, completed = StatusFailed, &now
	}
	if _, err := tx.Exec(ctx, `UPDATE deliveries SET status = $2, attempt_count = $3, last_attempt_at = $4, last_status_code = $5,
		last_error_class = $6, next_retry_at = CASE WHEN $8 THEN $7 ELSE next_retry_at END,
		completed_at = coalesce($9, completed_at), updated_at = now() WHERE id = $1`,
		a.DeliveryID, newStatus, n, res.Started, statusCode, res.ErrorClass, nextAt, current, completed); err != nil {
		return false, 0, fmt.Errorf("update delivery: %w", err)
	}

	var failingSince time.Time
	if err := tx.QueryRow(ctx, `UPDATE delivery_destinations SET last_failure_at = now(), failing_since = coalesce(failing_since, $2),
		consecutive_failures = consecutive_failures + 1 WHERE id = $1 RETURNING failing_since`, destID, res.Started).Scan(&failingSince); err != nil {
		return false, 0, fmt.Errorf("destination health: %w", err)
	}
	d, err := GetDestination(ctx, tx, destID)
	if err != nil {
		return false, 0, nil // deleted meanwhile: nothing to disable
	}
	switch {
	case gone:
		return false, 0, disable(ctx, tx, a.TenantID, d, ReasonGone, map[string]any{"delivery_id": a.DeliveryID.String(), "status_code": res.StatusCode})
	case time.Since(failingSince) >= s.cfg.DisableAfter:
		// Disabling cancels this delivery too: no retry.
		return false, 0, disable(ctx, tx, a.TenantID, d, ReasonFailing, map[string]any{"failing_since": failingSince.UTC().Format(time.RFC3339),
			"consecutive_failures": d.ConsecutiveFailures})
	}
	return retry, delay, nil
}
