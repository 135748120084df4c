package deliveries

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhook"
	"github.com/edgeward/edgeward/controlplane/internal/jobs"
	"github.com/edgeward/edgeward/controlplane/internal/secrets"
)

// DefaultSchedule is the delay before each attempt: the first at once, then
// retries after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h (Svix's
// schedule). A delivery whose last attempt fails is failed.
var DefaultSchedule = []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// Defaults of the deployment settings.
const (
	DefaultDisableAfter  = 5 * 24 * time.Hour
	DefaultSecretOverlap = 24 * time.Hour
	DefaultSweepInterval = 10 * time.Second
	DefaultWorkers       = 50
	// Queue is the River queue of webhook attempts.
	Queue = "deliveries"
	// jitter spreads retries by up to ±10% so a receiver that comes back
	// is not hit by every retry in the same second.
	jitter = 0.1
	// dispatchBatch is how many outbox events one transaction fans out.
	dispatchBatch = 500
	notifyChannel = "edgeward_outbox"
)

// Config configures deliveries for a deployment.
type Config struct {
	Pool   *pgxpool.Pool
	Keys   *secrets.Keyring
	Sender *webhook.Sender
	// Schedule is the delay before each attempt (DefaultSchedule).
	Schedule []time.Duration
	// DisableAfter is how long a destination may fail every attempt before
	// it is disabled (DefaultDisableAfter).
	DisableAfter time.Duration
	// SecretOverlap is how long a rotated-out secret keeps signing.
	SecretOverlap time.Duration
	// SweepInterval is how often every tenant's outbox is checked for events
	// a missed notification left behind.
	SweepInterval time.Duration
	Logger        *slog.Logger
	Metrics       *Metrics
	// AfterDispatch, when set, runs inside each dispatch transaction with
	// the types of the events it dispatched: other consumers of the outbox
	// (compliance evaluation) queue their work atomically with it.
	AfterDispatch func(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, eventTypes []string) error
}

// Service owns the outbox dispatcher and the attempt worker.
type Service struct {
	cfg  Config
	log  *slog.Logger
	jobs *jobs.Client

	mu      sync.Mutex
	pending map[uuid.UUID]bool
	all     bool
	wake    chan struct{}
}

// New makes the service; Register its worker, then Attach the job client.
func New(cfg Config) *Service {
	if len(cfg.Schedule) == 0 {
		cfg.Schedule = DefaultSchedule
	}
	if cfg.DisableAfter <= 0 {
		cfg.DisableAfter = DefaultDisableAfter
	}
	if cfg.SecretOverlap <= 0 {
		cfg.SecretOverlap = DefaultSecretOverlap
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.Sender == nil {
		cfg.Sender = &webhook.Sender{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: log.With("component", "deliveries"), pending: map[uuid.UUID]bool{}, wake: make(chan struct{}, 1)}
}

// Register adds the attempt worker to a River worker set.
func (s *Service) Register(w *river.Workers) {
	river.AddWorker(w, &attemptWorker{s: s})
}

// Attach gives the service the job client its worker was registered with.
func (s *Service) Attach(c *jobs.Client) { s.jobs = c }

// JobTimeout bounds one attempt job: the HTTP timeout plus time for its two
// short transactions.
func (s *Service) JobTimeout() time.Duration {
	timeout := s.cfg.Sender.Timeout
	if timeout <= 0 {
		timeout = webhook.DefaultTimeout
	}
	return timeout + 5*time.Second
}

// Run dispatches outbox events until ctx ends: at once for tenants whose
// commit notified, and every SweepInterval for all tenants (a notification
// is lost while no listener is connected).
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.listen(ctx) })
	wg.Go(func() {
		t := time.NewTicker(s.cfg.SweepInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.kickAll()
			}
		}
	})
	s.kickAll()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-s.wake:
		}
		s.drain(ctx)
	}
}

func (s *Service) kick(tenant uuid.UUID) {
	s.mu.Lock()
	s.pending[tenant] = true
	s.mu.Unlock()
	s.signal()
}

func (s *Service) kickAll() {
	s.mu.Lock()
	s.all = true
	s.mu.Unlock()
	s.signal()
}

func (s *Service) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// drain dispatches every tenant that was kicked.
func (s *Service) drain(ctx context.Context) {
	s.mu.Lock()
	tenants := make([]uuid.UUID, 0, len(s.pending))
	for t := range s.pending {
		tenants = append(tenants, t)
	}
	all := s.all
	s.pending, s.all = map[uuid.UUID]bool{}, false
	s.mu.Unlock()
	if all {
		rows, err := s.cfg.Pool.Query(ctx, `SELECT app_tenant_ids()`)
		if err == nil {
			tenants, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("outbox sweep: list tenants", "err", err)
			}
			return
		}
	}
	for _, t := range tenants {
		if _, err := s.Dispatch(ctx, t); err != nil && ctx.Err() == nil {
			s.log.Warn("outbox dispatch failed; the next sweep tries again", "tenant_id", t, "err", err)
		}
	}
}

// listen keeps a LISTEN connection and kicks the tenant of every
// notification. After a lost connection it sweeps everyone.
func (s *Service) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("outbox listener lost; reconnecting", "err", err)
		s.kickAll()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (s *Service) listenOnce(ctx context.Context) error {
	pooled, err := s.cfg.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection stays in LISTEN mode: it leaves the pool for good.
	conn := pooled.Hijack()
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	s.kickAll() // anything committed before LISTEN took effect
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if id, err := uuid.Parse(n.Payload); err == nil {
			s.kick(id)
		}
	}
}

// Dispatch fans out a tenant's undispatched outbox events: for each event
// and each active destination subscribed to its type, a delivery and its
// first attempt job, created in the transaction that marks the event
// dispatched. Replicas dispatching at once skip each other's rows. It
// returns how many deliveries it created.
func (s *Service) Dispatch(ctx context.Context, tenantID uuid.UUID) (int, error) {
	total := 0
	for {
		events, created := 0, 0
		err := db.InTenant(ctx, s.cfg.Pool, tenantID, func(tx pgx.Tx) error {
			var err error
			events, created, err = s.dispatchBatch(ctx, tx, tenantID)
			return err
		})
		if err != nil {
			return total, err
		}
		total += created
		if events < dispatchBatch {
			return total, nil
		}
	}
}

func (s *Service) dispatchBatch(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) (int, int, error) {
	rows, err := tx.Query(ctx, `SELECT id, type FROM outbox_events WHERE dispatched_at IS NULL
		ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, dispatchBatch)
	if err != nil {
		return 0, 0, fmt.Errorf("read outbox: %w", err)
	}
	type event struct {
		ID   uuid.UUID
		Type string
	}
	events, err := pgx.CollectRows(rows, pgx.RowToStructByPos[event])
	if err != nil || len(events) == 0 {
		return 0, 0, err
	}
	rows, err = tx.Query(ctx, `SELECT id, event_types FROM delivery_destinations WHERE deleted_at IS NULL AND enabled`)
	if err != nil {
		return 0, 0, fmt.Errorf("read destinations: %w", err)
	}
	type destination struct {
		ID    uuid.UUID
		Types []string
	}
	dests, err := pgx.CollectRows(rows, pgx.RowToStructByPos[destination])
	if err != nil {
		return 0, 0, err
	}
	// The schedule's first delay is the wait before the first attempt
	// (normally none).
	var first *river.InsertOpts
	firstDelay := s.cfg.Schedule[0]
	if firstDelay > 0 {
		first = &river.InsertOpts{ScheduledAt: time.Now().Add(firstDelay)}
	}
	var ids, destIDs, eventIDs []uuid.UUID
	var types []string
	var params []river.InsertManyParams
	eventIDsAll := make([]uuid.UUID, 0, len(events))
	for _, e := range events {
		eventIDsAll = append(eventIDsAll, e.ID)
		for _, d := range dests {
			if !slices.Contains(d.Types, e.Type) {
				continue
			}
			id := uuid.Must(uuid.NewV7())
			ids, destIDs, eventIDs, types = append(ids, id), append(destIDs, d.ID), append(eventIDs, e.ID), append(types, e.Type)
			params = append(params, river.InsertManyParams{Args: attemptArgs{TenantID: tenantID, DeliveryID: id, Seq: 1}, InsertOpts: first})
		}
	}
	if len(ids) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO deliveries (tenant_id, id, destination_id, event_id, event_type, status, next_retry_at)
			SELECT $1, i, d, e, t, 'pending', now() + make_interval(secs => $6) FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[]) AS u(i, d, e, t)`,
			tenantID, ids, destIDs, eventIDs, types, firstDelay.Seconds()); err != nil {
			return 0, 0, fmt.Errorf("create deliveries: %w", err)
		}
		if _, err := s.jobs.InsertManyTx(ctx, tx, params); err != nil {
			return 0, 0, fmt.Errorf("queue attempts: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE outbox_events SET dispatched_at = now() WHERE id = ANY($1)`, eventIDsAll); err != nil {
		return 0, 0, fmt.Errorf("mark dispatched: %w", err)
	}
	if s.cfg.AfterDispatch != nil {
		types := make([]string, 0, len(events))
		for _, e := range events {
			if !slices.Contains(types, e.Type) {
				types = append(types, e.Type)
			}
		}
		if err := s.cfg.AfterDispatch(ctx, tx, tenantID, types); err != nil {
			return 0, 0, err
		}
	}
	s.cfg.Metrics.created.Add(float64(len(ids)))
	return len(events), len(ids), nil
}

// schedule queues an attempt job inside tx, at once when at is zero.
func (s *Service) schedule(ctx context.Context, tx pgx.Tx, args attemptArgs, at time.Time) error {
	if s.jobs == nil {
		return errors.New("deliveries: no job client attached")
	}
	var opts *river.InsertOpts
	if !at.IsZero() {
		opts = &river.InsertOpts{ScheduledAt: at}
	}
	if _, err := s.jobs.InsertTx(ctx, tx, args, opts); err != nil {
		return fmt.Errorf("queue attempt: %w", err)
	}
	return nil
}

// nextDelay is the wait before attempt number n+1 after n attempts, with
// jitter, and whether the schedule has one.
func (s *Service) nextDelay(n int) (time.Duration, bool) {
	if n >= len(s.cfg.Schedule) {
		return 0, false
	}
	d := s.cfg.Schedule[n]
	if d > 0 {
		d += time.Duration((rand.Float64()*2 - 1) * jitter * float64(d))
	}
	return d, true
}

// Metrics are the delivery figures on /metrics.
type Metrics struct {
	created  prometheus.Counter
	attempts *prometheus.CounterVec
	duration prometheus.Histogram
}

// NewMetrics registers the metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		created: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgeward_webhook_deliveries_created_total",
			Help: "Deliveries created from outbox events."}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeward_webhook_attempts_total",
			Help: "Webhook attempts by outcome (succeeded or the error class)."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edgeward_webhook_attempt_duration_seconds",
			Help: "Time from sending a webhook to its answer.", Buckets: prometheus.DefBuckets}),
	}
	if reg != nil {
		reg.MustRegister(m.created, m.attempts, m.duration)
	}
	return m
}
