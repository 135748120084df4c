package audit_test

import (
	"bytes"
	"context"
	"encoding/hex"
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

// tricky strings: everything where PostgreSQL's to_json and Go's
// encoding/json could disagree.
var tricky = []string{
	`a "quoted" word`,
	`back\slash \\ and \u2028 written out`,
	"controls \x01\x02\x07\x0b\x0e\x1b\x1f and \b\f\n\r\t and DEL \x7f",
	"line\u2028separator and paragraph\u2029separator",
	"non-ASCII: é ü ß 日本語 𝄞 😀 \u00a0 \ufeff",
	"<b>html</b> & 'single'",
	"/ slash",
	" ",
	"",
}

func allEvents(t *testing.T, d *dbtest.DB, tenant uuid.UUID) []audit.Event {
	t.Helper()
	var events []audit.Event
	require.NoError(t, db.InTenant(context.Background(), d.App, tenant, func(tx pgx.Tx) error {
		var err error
		events, err = audit.List(context.Background(), tx, audit.Filter{Limit: 10000})
		return err
	}))
	return events
}

// sqlCanonical is the database's canonical_v1 of each stored event, by seq.
func sqlCanonical(t *testing.T, d *dbtest.DB, tenant uuid.UUID) map[int64]string {
	t.Helper()
	out := map[int64]string{}
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, d.Owner, tenant, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT seq, audit_canonical_v1(tenant_id, seq, id, occurred_at, actor_type, actor_id, actor_name,
			action, target_type, target_id, request_id, source_ip, outcome, details) FROM audit_events`)
		if err != nil {
			return err
		}
		var seq int64
		var canon string
		_, err = pgx.ForEachRow(rows, []any{&seq, &canon}, func() error { out[seq] = canon; return nil })
		return err
	}))
	return out
}

// TestDatabaseAppendsWhatTheGoVerifierAccepts: events appended by
// audit_append (through Record) hash exactly as Event.ComputeHash does, for
// every kind of string and details the JSON encoders could disagree on.
func TestDatabaseAppendsWhatTheGoVerifierAccepts(t *testing.T) {
	d := dbtest.New(t)
	tenant := newTenant(t, d)
	for i, s := range tricky {
		ctx := audit.WithActor(context.Background(), audit.Actor{Type: audit.ActorPrincipal, ID: s, Name: s})
		ctx = audit.WithRequest(ctx, audit.Request{ID: s, SourceIP: s})
		require.NoError(t, db.InTenant(ctx, d.App, tenant, func(tx pgx.Tx) error {
			return audit.Record(ctx, tx, tenant, audit.Entry{
				Action: "thing." + s, TargetType: s, TargetID: s, Outcome: audit.OutcomeFailure,
				Details: map[string]any{"s": s, "k" + s: []any{s, i, nil, true}, "nested": map[string]any{s: s}},
			})
		}), "string %d %q", i, s)
	}
	// Details as written by a caller: numbers stay as written, keys sorted.
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, d.App, tenant, func(tx pgx.Tx) error {
		return audit.Record(ctx, tx, tenant, audit.Entry{Action: "thing.numbers", TargetType: "thing",
			Details: map[string]any{"z": json.Number("12345678901234567890"), "dec": json.Number("1.50"), "exp": json.Number("1e2"),
				"neg": json.Number("-0"), "e": map[string]any{}, "a": []any{}}})
	}))

	v := verify(t, d, tenant)
	require.True(t, v.OK(), "%+v", v.Broken)
	assert.EqualValues(t, len(tricky)+1, v.EventCount)

	// On a mismatch, show where the two serializations differ.
	fromSQL := sqlCanonical(t, d, tenant)
	for _, ev := range allEvents(t, d, tenant) {
		canon, err := ev.Canonical()
		require.NoError(t, err)
		assert.Equal(t, string(canon), fromSQL[ev.Seq], "seq %d", ev.Seq)
	}
}

func appendDirect(ctx context.Context, tx pgx.Tx, tenant uuid.UUID, at time.Time, action string) (int64, error) {
	var seq int64
	err := tx.QueryRow(ctx, `SELECT audit_append($1, $2, $3, 'system', '', 'edgeward', $4, 'thing', NULL, NULL, NULL, 'success', '{}')`,
		tenant, uuid.Must(uuid.NewV7()), at, action).Scan(&seq)
	return seq, err
}

// TestAppendWritesOccurredAtWithSixDigits: trailing zeros, whole seconds and
// times given in another zone hash as the six-digit UTC form.
func TestAppendWritesOccurredAtWithSixDigits(t *testing.T) {
	d := dbtest.New(t)
	tenant := newTenant(t, d)
	ctx := context.Background()
	plus5 := time.FixedZone("+05", 5*3600)
	times := []time.Time{
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 1000, time.UTC),
		time.Date(2026, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(2026, 1, 2, 8, 4, 5, 500000000, plus5),
	}
	require.NoError(t, db.InTenant(ctx, d.App, tenant, func(tx pgx.Tx) error {
		for i, at := range times {
			seq, err := appendDirect(ctx, tx, tenant, at, "thing.timed")
			if err != nil {
				return err
			}
			if seq != int64(i+1) {
				return fmt.Errorf("append %d returned seq %d", i, seq)
			}
		}
		return nil
	}))
	v := verify(t, d, tenant)
	require.True(t, v.OK(), "%+v", v.Broken)
	fromSQL := sqlCanonical(t, d, tenant)
	assert.Contains(t, fromSQL[1], `"occurred_at":"2026-01-02T03:04:05.120000Z"`)
	assert.Contains(t, fromSQL[2], `"occurred_at":"2026-01-02T03:04:05.000000Z"`)
	assert.Contains(t, fromSQL[3], `"occurred_at":"2026-01-02T03:04:05.000001Z"`)
	assert.Contains(t, fromSQL[5], `"occurred_at":"2026-01-02T03:04:05.500000Z"`)
}

func requireDenied(t *testing.T, err error, what string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "%s: succeeded or failed otherwise: %v", what, err)
	assert.Equal(t, "42501", pgErr.Code, "%s: %v", what, err)
}

// TestRuntimeRoleCannotWriteTheChainDirectly is the independent review's
// reproduction: the runtime role inserting an event at head+1 (or moving
// the head) is now refused by PostgreSQL, and audit_append appends only to
// the transaction's own tenant.
func TestRuntimeRoleCannotWriteTheChainDirectly(t *testing.T) {
	d := dbtest.New(t)
	tenant, other := newTenant(t, d), newTenant(t, d)
	record(t, d, tenant, 3)
	record(t, d, other, 1)
	ctx := context.Background()
	inTenant := func(pool db.Beginner, stmt string, args ...any) error {
		return db.InTenant(ctx, pool, tenant, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, stmt, args...)
			return err
		})
	}

	requireDenied(t, inTenant(d.App, `
		INSERT INTO audit_events (tenant_id, seq, id, occurred_at, scheme_version, actor_type, actor_name, action, target_type,
		                          outcome, details, prev_hash, hash)
		SELECT tenant_id, seq + 1, $1, now(), 1, 'system', 'forger', 'forged.event', 'thing', 'success', '{}', hash, $2
		  FROM audit_chain_heads`, uuid.Must(uuid.NewV7()), make([]byte, 32)), "runtime INSERT INTO audit_events")
	requireDenied(t, inTenant(d.App, `UPDATE audit_chain_heads SET seq = seq + 1`), "runtime UPDATE audit_chain_heads")
	requireDenied(t, inTenant(d.App, `INSERT INTO audit_chain_heads (tenant_id, seq, hash) VALUES ($1, 9, $2)`,
		tenant, make([]byte, 32)), "runtime INSERT INTO audit_chain_heads")

	// The function appends only to the transaction's tenant, whoever calls it.
	for _, who := range []struct {
		name string
		pool db.Beginner
	}{{"runtime role", d.App}, {"owner", d.Owner}} {
		err := db.InTenant(ctx, who.pool, tenant, func(tx pgx.Tx) error {
			_, err := appendDirect(ctx, tx, other, time.Now(), "cross.tenant")
			return err
		})
		requireDenied(t, err, who.name+": audit_append for another tenant")
		assert.ErrorContains(t, err, "in a transaction of tenant")

		tx, err := who.pool.BeginTx(ctx, pgx.TxOptions{})
		require.NoError(t, err)
		_, err = appendDirect(ctx, tx, tenant, time.Now(), "no.tenant")
		_ = tx.Rollback(ctx)
		requireDenied(t, err, who.name+": audit_append outside a tenant transaction")
	}

	// Details must be an object, like Record's.
	err := db.InTenant(ctx, d.App, tenant, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT audit_append($1, $2, now(), 'system', '', 'x', 'a.b', 't', NULL, NULL, NULL, 'success', '[1]')`,
			tenant, uuid.Must(uuid.NewV7()))
		return err
	})
	assert.ErrorContains(t, err, "details must be a JSON object")

	for _, id := range []uuid.UUID{tenant, other} {
		v := verify(t, d, id)
		assert.True(t, v.OK(), "%+v", v.Broken)
	}
	assert.EqualValues(t, 3, verify(t, d, tenant).EventCount)

	// audit_append is SECURITY DEFINER with a pinned search_path, owned by
	// the migration owner; only the runtime role (and the owner) may run it.
	var secdef, publicExec, appExec bool
	var owner string
	var config []string
	require.NoError(t, d.Owner.QueryRow(ctx, `
		SELECT p.prosecdef, pg_get_userbyid(p.proowner), coalesce(p.proconfig, '{}'),
		       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee = 0),
		       has_function_privilege($1, p.oid, 'EXECUTE')
		  FROM pg_proc p WHERE p.proname = 'audit_append'`, db.RuntimeRole).Scan(&secdef, &owner, &config, &publicExec, &appExec))
	assert.True(t, secdef)
	assert.Equal(t, dbtest.OwnerRole, owner)
	assert.Contains(t, config, "search_path=pg_catalog, pg_temp")
	assert.False(t, publicExec, "PUBLIC may execute audit_append")
	assert.True(t, appExec)
}

// forge inserts an event past the chain head as the owner (the runtime role
// no longer can): the independent review's reproduction.
func forge(t *testing.T, d *dbtest.DB, tenant uuid.UUID, validHash bool) string {
	t.Helper()
	ctx := context.Background()
	ev := audit.Event{TenantID: tenant, ID: uuid.Must(uuid.NewV7()), OccurredAt: time.Now().UTC().Truncate(time.Microsecond),
		SchemeVersion: 1, Actor: audit.Actor{Type: audit.ActorSystem, Name: "forger"}, Action: "forged.event",
		TargetType: "thing", Outcome: audit.OutcomeSuccess, Details: json.RawMessage(`{}`)}
	require.NoError(t, db.InTenant(ctx, d.Owner, tenant, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT seq + 1, hash FROM audit_chain_heads").Scan(&ev.Seq, &ev.PrevHash); err != nil {
			return err
		}
		ev.Hash = make([]byte, 32)
		if validHash {
			var err error
			if ev.Hash, err = ev.ComputeHash(); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO audit_events (tenant_id, seq, id, occurred_at, scheme_version, actor_type, actor_name, action, target_type,
			                          outcome, details, prev_hash, hash)
			VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $11, $12)`,
			tenant, ev.Seq, ev.ID, ev.OccurredAt, ev.Actor.Type, ev.Actor.Name, ev.Action, ev.TargetType, ev.Outcome,
			string(ev.Details), ev.PrevHash, ev.Hash)
		return err
	}))
	return ev.ID.String()
}

// TestEventsPastTheHeadBreakTheChain: verification covers every stored
// event, so one the chain head does not cover is named, whether its hash is
// zero or correctly computed, and so are events left past a head that was
// moved back.
func TestEventsPastTheHeadBreakTheChain(t *testing.T) {
	d := dbtest.New(t)
	for _, validHash := range []bool{false, true} {
		t.Run(fmt.Sprintf("valid hash %v", validHash), func(t *testing.T) {
			tenant := newTenant(t, d)
			record(t, d, tenant, 3)
			forged := forge(t, d, tenant, validHash)
			v := verify(t, d, tenant)
			require.False(t, v.OK(), "a forged event past the head verified")
			assert.EqualValues(t, 4, v.Broken.Seq)
			assert.Equal(t, forged, v.Broken.EventID)
			assert.Contains(t, v.Broken.Reason, "past the chain head (seq 3)")
			assert.EqualValues(t, 4, v.EventCount, "every stored event is counted")
		})
	}

	t.Run("head moved back", func(t *testing.T) {
		tenant := newTenant(t, d)
		record(t, d, tenant, 4)
		ctx := context.Background()
		require.NoError(t, db.InTenant(ctx, d.Owner, tenant, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE audit_chain_heads SET (seq, hash) = (SELECT seq, hash FROM audit_events WHERE seq = 2)")
			return err
		}))
		v := verify(t, d, tenant)
		require.False(t, v.OK())
		assert.EqualValues(t, 3, v.Broken.Seq)
		assert.Equal(t, eventID(t, d, tenant, 3), v.Broken.EventID)
		assert.Contains(t, v.Broken.Reason, "past the chain head (seq 2)")
	})

	t.Run("head hash changed", func(t *testing.T) {
		tenant := newTenant(t, d)
		record(t, d, tenant, 2)
		ctx := context.Background()
		require.NoError(t, db.InTenant(ctx, d.Owner, tenant, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE audit_chain_heads SET hash = $1", make([]byte, 32))
			return err
		}))
		v := verify(t, d, tenant)
		require.False(t, v.OK())
		assert.EqualValues(t, 2, v.Broken.Seq)
		assert.Contains(t, v.Broken.Reason, "is not the hash of the last stored event")
	})
}

// TestVerifyWhileEventsAreWritten: verification reads the head and the
// events in one snapshot, so appends committing meanwhile never look like a
// broken chain (events past the head, or a head past the events).
func TestVerifyWhileEventsAreWritten(t *testing.T) {
	d := dbtest.New(t)
	tenant := newTenant(t, d)
	record(t, d, tenant, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_ = db.InTenant(ctx, d.App, tenant, func(tx pgx.Tx) error {
					return audit.Record(ctx, tx, tenant, audit.Entry{Action: "race.step", TargetType: "race"})
				})
			}
		}()
	}
	stop := func() { cancel(); wg.Wait() }
	defer stop()
	// Verify at least 20 times, and until the writers have added 50 events.
	var last int64
	deadline := time.Now().Add(time.Minute)
	for verifies := 0; verifies < 20 || last < 50; verifies++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d verifications the writers have written only %d events", verifies, last)
		}
		v := verify(t, d, tenant)
		if !assert.True(t, v.OK(), "%+v", v.Broken) {
			break
		}
		assert.Equal(t, v.EventCount, v.HeadSeq)
		assert.GreaterOrEqual(t, v.EventCount, last)
		last = v.EventCount
	}
}

func verifyAnchored(t *testing.T, d *dbtest.DB, tenant uuid.UUID, a audit.Anchor) audit.Verification {
	t.Helper()
	var v audit.Verification
	require.NoError(t, db.InTenant(context.Background(), d.App, tenant, func(tx pgx.Tx) error {
		var err error
		v, err = audit.VerifyAnchored(context.Background(), tx, tenant, a)
		return err
	}))
	return v
}

// TestAnchorDetectsARewoundChain: removing the tail and moving the head back
// leaves a chain that verifies on its own; a head recorded elsewhere shows
// it.
func TestAnchorDetectsARewoundChain(t *testing.T) {
	d := dbtest.New(t)
	tenant := newTenant(t, d)
	record(t, d, tenant, 5)
	v := verify(t, d, tenant)
	require.True(t, v.OK())
	anchor := audit.Anchor{Seq: v.HeadSeq, Hash: v.HeadHash}
	record(t, d, tenant, 2)

	good := verifyAnchored(t, d, tenant, anchor)
	require.True(t, good.OK(), "%+v", good.Broken)
	assert.EqualValues(t, 7, good.HeadSeq, "the chain verifies beyond the anchor")

	wrong := anchor
	wrong.Hash = bytes.Repeat([]byte{0xab}, 32)
	v = verifyAnchored(t, d, tenant, wrong)
	require.False(t, v.OK())
	assert.EqualValues(t, 5, v.Broken.Seq)
	assert.Equal(t, eventID(t, d, tenant, 5), v.Broken.EventID)
	assert.Contains(t, v.Broken.Reason, "the expected head says abababab")

	// Rewind: remove seq 6 and 7, move the head back to 5. Consistent on
	// its own, so plain Verify cannot tell; the anchor of seq 7 can.
	later := verify(t, d, tenant)
	asOwner(t, d, tenant, "DELETE FROM audit_events WHERE seq > 5")
	asOwner(t, d, tenant, "UPDATE audit_chain_heads SET (seq, hash) = (SELECT seq, hash FROM audit_events WHERE seq = 5)")
	assert.True(t, verify(t, d, tenant).OK(), "a rewound chain verifies on its own (documented)")
	v = verifyAnchored(t, d, tenant, audit.Anchor{Seq: later.HeadSeq, Hash: later.HeadHash})
	require.False(t, v.OK())
	assert.EqualValues(t, 7, v.Broken.Seq)
	assert.Empty(t, v.Broken.EventID)
	assert.Contains(t, v.Broken.Reason, "the stored chain ends at seq 5")
	assert.True(t, verifyAnchored(t, d, tenant, anchor).OK(), "the older anchor still holds")
}

func TestParseAnchor(t *testing.T) {
	h := bytes.Repeat([]byte{0x01, 0xfe}, 16)
	a, err := audit.ParseAnchor("42:" + hex.EncodeToString(h))
	require.NoError(t, err)
	assert.Equal(t, audit.Anchor{Seq: 42, Hash: h}, a)
	assert.Equal(t, "42:"+hex.EncodeToString(h), a.String())
	for _, bad := range []string{"", "42", "42:", ":" + hex.EncodeToString(h), "0:" + hex.EncodeToString(h),
		"-1:" + hex.EncodeToString(h), "x:" + hex.EncodeToString(h), "42:abcd", "42:" + hex.EncodeToString(h) + "00",
		"42:" + hex.EncodeToString(h)[:63] + "g"} {
		_, err := audit.ParseAnchor(bad)
		assert.Error(t, err, "%q", bad)
	}
}

// TestIntegrityAPINamesAnEventPastTheHead: the review's reproduction
// through GET /api/v1/audit/integrity, which said verified with the old
// count.
func TestIntegrityAPINamesAnEventPastTheHead(t *testing.T) {
	env := apitest.Start(t)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	type integrity struct {
		Verified    bool  `json:"verified"`
		EventCount  int64 `json:"event_count"`
		HeadSeq     int64 `json:"head_seq"`
		FirstBroken *struct {
			Seq     int64   `json:"seq"`
			EventID *string `json:"event_id"`
			Reason  string  `json:"reason"`
		} `json:"first_broken"`
	}
	var before integrity
	auditor.Do(http.MethodGet, "/api/v1/audit/integrity", nil).JSON(t, &before)
	require.True(t, before.Verified)

	forged := forge(t, env.DB, env.Tenant.ID, true)
	var after integrity
	auditor.Do(http.MethodGet, "/api/v1/audit/integrity", nil).JSON(t, &after)
	assert.False(t, after.Verified)
	assert.Equal(t, before.EventCount+1, after.EventCount)
	require.NotNil(t, after.FirstBroken)
	assert.Equal(t, before.HeadSeq+1, after.FirstBroken.Seq)
	require.NotNil(t, after.FirstBroken.EventID)
	assert.Equal(t, forged, *after.FirstBroken.EventID)
	assert.Contains(t, after.FirstBroken.Reason, "past the chain head")
}
