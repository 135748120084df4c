package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Filter selects events for List. Zero fields do not filter.
type Filter struct {
	ActorID    string
	Action     string
	TargetType string
	TargetID   string
	Outcome    string
	Since      time.Time
	Until      time.Time
	// BeforeSeq starts the page below this sequence number (the cursor).
	BeforeSeq int64
	Limit     int
}

const eventColumns = `tenant_id, seq, id, occurred_at, scheme_version, actor_type, coalesce(actor_id, ''), actor_name,
	action, target_type, coalesce(target_id, ''), coalesce(request_id, ''), coalesce(source_ip, ''), outcome,
	details::text, prev_hash, hash`

// scanEvent reads eventColumns, and then into extra, when the row has more.
func scanEvent(row pgx.Row, extra ...any) (Event, error) {
	var ev Event
	var details string
	err := row.Scan(append([]any{&ev.TenantID, &ev.Seq, &ev.ID, &ev.OccurredAt, &ev.SchemeVersion, &ev.Actor.Type, &ev.Actor.ID, &ev.Actor.Name,
		&ev.Action, &ev.TargetType, &ev.TargetID, &ev.RequestID, &ev.SourceIP, &ev.Outcome, &details, &ev.PrevHash, &ev.Hash}, extra...)...)
	ev.Details = []byte(details)
	ev.OccurredAt = ev.OccurredAt.UTC()
	return ev, err
}

// List returns events of the transaction's tenant, newest first, fetching
// one more than Limit so the caller can tell whether another page exists.
func List(ctx context.Context, tx pgx.Tx, f Filter) ([]Event, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.ActorID != "" {
		add("actor_id = $%d", f.ActorID)
	}
	if f.Action != "" {
		add("action = $%d", f.Action)
	}
	if f.TargetType != "" {
		add("target_type = $%d", f.TargetType)
	}
	if f.TargetID != "" {
		add("target_id = $%d", f.TargetID)
	}
	if f.Outcome != "" {
		add("outcome = $%d", f.Outcome)
	}
	if !f.Since.IsZero() {
		add("occurred_at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("occurred_at < $%d", f.Until)
	}
	if f.BeforeSeq > 0 {
		add("seq < $%d", f.BeforeSeq)
	}
	q := "SELECT " + eventColumns + " FROM audit_events"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit+1)
	q += fmt.Sprintf(" ORDER BY seq DESC LIMIT $%d", len(args))
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) { return scanEvent(r) })
}

// Break names the first event whose link does not verify.
type Break struct {
	Seq     int64
	EventID string // empty when the event is missing
	Reason  string
}

// Verification is the result of checking one tenant's chain. HeadSeq and
// HeadHash are the last stored event's (the genesis hash when there is
// none): record them elsewhere, and pass them back later as an Anchor.
type Verification struct {
	TenantID   uuid.UUID
	EventCount int64
	HeadSeq    int64
	HeadHash   []byte
	CheckedAt  time.Time
	Broken     *Break
}

// OK reports whether the whole chain verified.
func (v Verification) OK() bool { return v.Broken == nil }

// Anchor is a chain head recorded outside the database (printed by `audit
// verify`, kept by an operator or an export). The chain alone cannot show
// that its tail was removed and its head moved back to match; an anchor
// can, since the event at Seq must still exist with Hash.
type Anchor struct {
	Seq  int64
	Hash []byte
}

// ParseAnchor reads an anchor written as SEQ:HASH, the hash in hex.
func ParseAnchor(s string) (Anchor, error) {
	seqText, hashText, ok := strings.Cut(s, ":")
	if !ok {
		return Anchor{}, fmt.Errorf("expected SEQ:HASH, got %q", s)
	}
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil || seq < 1 {
		return Anchor{}, fmt.Errorf("expected SEQ:HASH with SEQ a positive event seq, got %q", seqText)
	}
	hash, err := hex.DecodeString(hashText)
	if err != nil || len(hash) != sha256.Size {
		return Anchor{}, fmt.Errorf("expected SEQ:HASH with HASH %d hex digits, got %q", 2*sha256.Size, hashText)
	}
	return Anchor{Seq: seq, Hash: hash}, nil
}

// String writes the anchor as ParseAnchor reads it.
func (a Anchor) String() string { return fmt.Sprintf("%d:%s", a.Seq, hex.EncodeToString(a.Hash)) }

// Verify recomputes the transaction's tenant chain from its first event to
// its last and reports the first broken link: a gap or reordering in the
// sequence, a prev_hash that is not the previous event's hash, a hash that
// does not match the stored content, an event past the chain head (written
// around audit_append), or a chain head that disagrees with the last event
// (events removed from the end).
func Verify(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) (Verification, error) {
	return verify(ctx, tx, tenantID, nil)
}

// VerifyAnchored is Verify, and also checks the chain against a head
// recorded earlier: the event at anchor.Seq must exist with anchor.Hash.
func VerifyAnchored(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, anchor Anchor) (Verification, error) {
	return verify(ctx, tx, tenantID, &anchor)
}

// verifyQuery reads the chain head and every event of the tenant in one
// statement, hence one snapshot: an event and its head move commit
// together, so events committed while this runs are either all in (with
// their head) or all out, and never look like a broken chain. The first
// row (seq 0, which no event has) carries the head, NULL when there is
// none; the events follow in order.
const verifyQuery = `
	SELECT ` + eventColumns + `, NULL::bigint, NULL::bytea
	  FROM audit_events WHERE tenant_id = $1
	UNION ALL
	SELECT $1, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, h.seq, h.hash
	  FROM (SELECT 1) AS one LEFT JOIN audit_chain_heads h ON h.tenant_id = $1
	 ORDER BY 2`

func verify(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, anchor *Anchor) (Verification, error) {
	v := Verification{TenantID: tenantID, CheckedAt: time.Now().UTC().Truncate(time.Microsecond), HeadHash: GenesisHash}
	rows, err := tx.Query(ctx, verifyQuery, tenantID)
	if err != nil {
		return v, fmt.Errorf("verify audit chain: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return v, fmt.Errorf("verify audit chain: %w", err)
		}
		return v, fmt.Errorf("verify audit chain: no head row")
	}
	var headSeq *int64
	var headHash []byte
	skip := make([]any, 17, 19)
	if err := rows.Scan(append(skip, &headSeq, &headHash)...); err != nil {
		return v, fmt.Errorf("verify audit chain: read head: %w", err)
	}
	brk := func(b *Break) {
		if v.Broken == nil {
			v.Broken = b
		}
	}
	prev := GenesisHash
	var expectSeq int64 = 1
	for rows.Next() {
		ev, err := scanEvent(rows, nil, nil)
		if err != nil {
			return v, fmt.Errorf("verify audit chain: %w", err)
		}
		v.EventCount++
		if v.Broken == nil && headSeq != nil && ev.Seq > *headSeq {
			brk(&Break{Seq: ev.Seq, EventID: ev.ID.String(), Reason: fmt.Sprintf(
				"event seq %d is past the chain head (seq %d): it was not appended through the chain, or the head was moved back", ev.Seq, *headSeq)})
		}
		if v.Broken == nil {
			brk(checkLink(ev, expectSeq, prev))
		}
		if v.Broken == nil && anchor != nil && ev.Seq == anchor.Seq && !bytes.Equal(ev.Hash, anchor.Hash) {
			brk(&Break{Seq: ev.Seq, EventID: ev.ID.String(), Reason: fmt.Sprintf(
				"event seq %d has hash %s, but the expected head says %s: the chain was rewritten from here or earlier", ev.Seq, short(ev.Hash), short(anchor.Hash))})
		}
		expectSeq = ev.Seq + 1
		prev = ev.Hash
		v.HeadSeq, v.HeadHash = ev.Seq, ev.Hash
	}
	if err := rows.Err(); err != nil {
		return v, fmt.Errorf("verify audit chain: %w", err)
	}
	switch {
	case headSeq == nil:
		if v.EventCount > 0 {
			brk(&Break{Seq: v.HeadSeq, Reason: "the chain head is missing"})
		}
	case *headSeq > v.HeadSeq:
		brk(&Break{Seq: v.HeadSeq + 1, Reason: fmt.Sprintf(
			"the chain head is at seq %d but the last stored event is seq %d: events after it were removed", *headSeq, v.HeadSeq)})
	case *headSeq == v.HeadSeq && !bytes.Equal(headHash, v.HeadHash):
		brk(&Break{Seq: v.HeadSeq, Reason: fmt.Sprintf(
			"the chain head's hash %s is not the hash of the last stored event, seq %d", short(headHash), v.HeadSeq)})
	}
	if anchor != nil && anchor.Seq > v.HeadSeq {
		brk(&Break{Seq: anchor.Seq, Reason: fmt.Sprintf(
			"the expected head is seq %d but the stored chain ends at seq %d: events were removed and the chain head moved back", anchor.Seq, v.HeadSeq)})
	}
	return v, nil
}

func checkLink(ev Event, expectSeq int64, prev []byte) *Break {
	id := ev.ID.String()
	if ev.Seq != expectSeq {
		return &Break{Seq: expectSeq, Reason: fmt.Sprintf("event seq %d is missing (the next stored event is seq %d)", expectSeq, ev.Seq)}
	}
	if !bytes.Equal(ev.PrevHash, prev) {
		return &Break{Seq: ev.Seq, EventID: id, Reason: fmt.Sprintf("prev_hash %s does not match the previous event's hash %s", short(ev.PrevHash), short(prev))}
	}
	want, err := ev.ComputeHash()
	if err != nil {
		return &Break{Seq: ev.Seq, EventID: id, Reason: err.Error()}
	}
	if !bytes.Equal(ev.Hash, want) {
		return &Break{Seq: ev.Seq, EventID: id, Reason: fmt.Sprintf("stored hash %s does not match the event's content (recomputed %s): the event was changed", short(ev.Hash), short(want))}
	}
	return nil
}

func short(b []byte) string {
	s := hex.EncodeToString(b)
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}
