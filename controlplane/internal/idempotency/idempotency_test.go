package idempotency_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
	"github.com/edgeward/edgeward/controlplane/internal/idempotency"
)

type fixture struct {
	d         *dbtest.DB
	tenant    uuid.UUID
	principal uuid.UUID
}

func setup(t *testing.T) fixture {
	t.Helper()
	d := dbtest.New(t)
	ctx := context.Background()
	f := fixture{d: d, tenant: uuid.Must(uuid.NewV7()), principal: uuid.Must(uuid.NewV7())}
	_, err := d.Owner.Exec(ctx, "INSERT INTO tenants (id, name) VALUES ($1, 'acme')", f.tenant)
	require.NoError(t, err)
	require.NoError(t, db.InTenant(ctx, d.Owner, f.tenant, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO principals (tenant_id, id, kind, name) VALUES ($1, $2, 'user', 'ann')", f.tenant, f.principal)
		return err
	}))
	return f
}

func (f fixture) request(key string) idempotency.Request {
	return idempotency.Request{TenantID: f.tenant, PrincipalID: f.principal, Key: key, OperationID: "createTicket",
		Hash: idempotency.Hash("POST", "/api/v1/tickets", "", []byte(`{"title":"x"}`))}
}

// run calls fn in a tenant transaction of the runtime role.
func (f fixture) run(t *testing.T, fn func(ctx context.Context, tx pgx.Tx) error) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, f.d.App, f.tenant, func(tx pgx.Tx) error { return fn(ctx, tx) }))
}

func (f fixture) begin(t *testing.T, req idempotency.Request) idempotency.Claim {
	t.Helper()
	var c idempotency.Claim
	f.run(t, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		c, err = idempotency.Begin(ctx, tx, req)
		return err
	})
	return c
}

// age moves a key's clocks back by d.
func (f fixture) age(t *testing.T, key string, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, f.d.Owner, f.tenant, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE idempotency_keys SET created_at = created_at - make_interval(secs => $2),
			attempt_started_at = attempt_started_at - make_interval(secs => $2) WHERE key = $1`, key, d.Seconds())
		return err
	}))
}

func (f fixture) keys(t *testing.T) int {
	t.Helper()
	var n int
	f.run(t, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT count(*) FROM idempotency_keys").Scan(&n)
	})
	return n
}

func TestAttemptsClaimCompleteAndRelease(t *testing.T) {
	f := setup(t)
	req := f.request("k1")
	c := f.begin(t, req)
	require.Equal(t, idempotency.Proceed, c.Outcome)
	busy := f.begin(t, req)
	assert.Equal(t, idempotency.InProgress, busy.Outcome)
	assert.InDelta(t, idempotency.TakeoverAfter.Seconds(), busy.TakeoverIn.Seconds(), 5)

	// A dead attempt is taken over; its late finish is not kept.
	f.age(t, "k1", idempotency.TakeoverAfter+time.Second)
	c2 := f.begin(t, req)
	require.Equal(t, idempotency.Proceed, c2.Outcome)
	assert.True(t, c2.TakenOver)
	resp := idempotency.Response{Status: 201, Header: http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"r1"}}, Body: []byte(`{"id":1}`)}
	f.run(t, func(ctx context.Context, tx pgx.Tx) error {
		kept, err := idempotency.Complete(ctx, tx, req, c.Attempt, resp)
		assert.False(t, kept, "the first attempt lost the key")
		return err
	})
	f.run(t, func(ctx context.Context, tx pgx.Tx) error {
		return idempotency.Release(ctx, tx, req, c.Attempt) // not its key any more: a no-op
	})
	f.run(t, func(ctx context.Context, tx pgx.Tx) error {
		kept, err := idempotency.Complete(ctx, tx, req, c2.Attempt, resp)
		assert.True(t, kept)
		return err
	})
	replay := f.begin(t, req)
	require.Equal(t, idempotency.Replay, replay.Outcome)
	assert.Equal(t, 201, replay.Response.Status)
	assert.Equal(t, `{"id":1}`, string(replay.Response.Body))
	assert.Equal(t, http.Header{"Content-Type": {"application/json"}}, replay.Response.Header, "only the stored headers are kept")

	// A server error is not final: the key is released and the next attempt runs.
	req2 := f.request("k2")
	c3 := f.begin(t, req2)
	f.run(t, func(ctx context.Context, tx pgx.Tx) error {
		_, err := idempotency.Complete(ctx, tx, req2, c3.Attempt, idempotency.Response{Status: 503})
		assert.Error(t, err, "a 5xx is never stored")
		return idempotency.Release(ctx, tx, req2, c3.Attempt)
	})
	assert.Equal(t, idempotency.Proceed, f.begin(t, req2).Outcome)

	other := req2
	other.Hash = idempotency.Hash("POST", "/api/v1/tickets", "", []byte(`{"title":"y"}`))
	assert.Equal(t, idempotency.Mismatch, f.begin(t, other).Outcome)
}

func TestExpiredKeysAreDeleted(t *testing.T) {
	f := setup(t)
	for _, k := range []string{"old1", "old2", "fresh"} {
		require.Equal(t, idempotency.Proceed, f.begin(t, f.request(k)).Outcome)
	}
	f.age(t, "old1", idempotency.TTL+time.Minute)
	f.age(t, "old2", idempotency.TTL+time.Minute)

	// An expired key is forgotten: the same key may name a new request.
	other := f.request("old1")
	other.OperationID = "addTicketComment"
	assert.Equal(t, idempotency.Proceed, f.begin(t, other).Outcome)

	// A new key deletes expired ones in passing.
	require.Equal(t, 3, f.keys(t), "old1 renewed, old2 expired, fresh")
	assert.Equal(t, idempotency.Proceed, f.begin(t, f.request("new")).Outcome)
	assert.Equal(t, 3, f.keys(t), "old2 went when new came")

	// The retention sweep deletes the rest.
	f.age(t, "fresh", idempotency.TTL+time.Minute)
	var n int64
	f.run(t, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		n, err = idempotency.Expire(ctx, tx)
		return err
	})
	assert.EqualValues(t, 1, n)
	assert.Equal(t, 2, f.keys(t))
}
