package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math"
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

func scanEvent(row pgx.Row) (Event, error) {
	var ev Event
	var details string
	err := row.Scan(&ev.TenantID, &ev.Seq, &ev.ID, &ev.OccurredAt, &ev.SchemeVersion, &ev.Actor.Type, &ev.Actor.ID, &ev.Actor.Name,
		&ev.Action, &ev.TargetType, &ev.TargetID, &ev.RequestID, &ev.SourceIP, &ev.Outcome, &details, &ev.PrevHash, &ev.Hash)
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

// Verification is the result of checking one tenant's chain.
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

// Verify recomputes the transaction's tenant chain from its first event and
// reports the first broken link: a gap or reordering in the sequence, a
// prev_hash that is not the previous event's hash, a hash that does not match
// the stored content, or a chain head that disagrees with the last event
// (events removed from the end).
func Verify(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) (Verification, error) {
	v := Verification{TenantID: tenantID, CheckedAt: time.Now().UTC(), HeadHash: GenesisHash}
	// The head first: an event and its head move commit together, so every
	// event up to the head read here is visible to the next statement, and
	// events committed meanwhile (past the head) are left out instead of
	// looking like a truncated chain.
	var headSeq int64
	var headHash []byte
	err := tx.QueryRow(ctx, "SELECT seq, hash FROM audit_chain_heads WHERE tenant_id = $1", tenantID).Scan(&headSeq, &headHash)
	headFound := err == nil
	if err != nil && err != pgx.ErrNoRows {
		return v, fmt.Errorf("verify audit chain: read head: %w", err)
	}
	bound := int64(math.MaxInt64)
	if headFound {
		bound = headSeq
	}
	rows, err := tx.Query(ctx, "SELECT "+eventColumns+" FROM audit_events WHERE tenant_id = $1 AND seq <= $2 ORDER BY seq", tenantID, bound)
	if err != nil {
		return v, fmt.Errorf("verify audit chain: %w", err)
	}
	defer rows.Close()
	prev := GenesisHash
	var expectSeq int64 = 1
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			return v, fmt.Errorf("verify audit chain: %w", err)
		}
		v.EventCount++
		if v.Broken == nil {
			v.Broken = checkLink(ev, expectSeq, prev)
		}
		expectSeq = ev.Seq + 1
		prev = ev.Hash
		v.HeadSeq, v.HeadHash = ev.Seq, ev.Hash
	}
	if err := rows.Err(); err != nil {
		return v, fmt.Errorf("verify audit chain: %w", err)
	}
	if v.Broken != nil {
		return v, nil
	}
	switch {
	case !headFound:
		if v.EventCount > 0 {
			v.Broken = &Break{Seq: v.HeadSeq, Reason: "the chain head is missing"}
		}
	case headSeq != v.HeadSeq || !bytes.Equal(headHash, v.HeadHash):
		v.Broken = &Break{Seq: v.HeadSeq + 1, Reason: fmt.Sprintf(
			"the chain head is at seq %d but the last stored event is seq %d: events after it were removed", headSeq, v.HeadSeq)}
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
