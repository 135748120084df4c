// Package audit is the tenant's append-only audit trail.
//
// Every state change records an event in the same transaction as the change.
// Events of one tenant form a SHA-256 hash chain: each event's hash covers the
// previous event's hash and the event's canonical serialization, so changing,
// removing or reordering a stored event, or adding one the chain head does
// not cover, breaks the chain at that event, which Verify names. The
// database appends events (Record calls its audit_append function), and the
// appends of one tenant serialize on its chain head row.
//
// A removed tail with the head moved back to match is consistent on its
// own; only a head recorded outside the database (an Anchor, checked by
// VerifyAnchored) shows it.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// SchemeVersion is the canonical serialization scheme of new events.
const SchemeVersion = 1

// Outcomes of an audited action.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Actor types.
const (
	ActorPrincipal = "principal"
	ActorAgent     = "agent"
	ActorOperator  = "operator"
	ActorSystem    = "system"
)

// Actor is who did something.
type Actor struct {
	Type string
	ID   string // empty for none
	Name string
}

// Request is the HTTP request an action came from.
type Request struct {
	ID       string
	SourceIP string
}

type actorKey struct{}
type requestKey struct{}

// WithActor attaches the acting identity to ctx.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor of ctx; without one it is the system itself.
func ActorFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok {
		return a
	}
	return Actor{Type: ActorSystem, Name: "edgeward"}
}

// WithRequest attaches the request's id and source address to ctx.
func WithRequest(ctx context.Context, r Request) context.Context {
	return context.WithValue(ctx, requestKey{}, r)
}

// RequestFrom returns the request of ctx, or the zero Request.
func RequestFrom(ctx context.Context) Request {
	r, _ := ctx.Value(requestKey{}).(Request)
	return r
}

// Entry is what a caller records; the actor and request come from ctx.
type Entry struct {
	Action     string // area.verb, e.g. api_token.created
	TargetType string
	TargetID   string // empty for none
	Outcome    string // default success
	// Details are action-specific facts. Never put a secret here.
	Details map[string]any
}

// Event is a stored audit event.
type Event struct {
	TenantID      uuid.UUID
	Seq           int64
	ID            uuid.UUID
	OccurredAt    time.Time
	SchemeVersion int
	Actor         Actor
	Action        string
	TargetType    string
	TargetID      string
	RequestID     string
	SourceIP      string
	Outcome       string
	Details       json.RawMessage // canonical JSON
	PrevHash      []byte
	Hash          []byte
}

// GenesisHash is the prev_hash of a tenant's first event.
var GenesisHash = make([]byte, sha256.Size)

// Record appends an event to the tenant's chain inside tx, the transaction of
// the change it describes; tenantID must be the transaction's tenant.
//
// The database appends it: audit_append (migration 00009) takes the
// tenant's chain-head lock, computes seq, prev_hash and the scheme 1 hash
// itself, inserts the event and advances the head. The runtime role may not
// write either table directly, so it cannot add an event the chain does not
// link. The lock serializes this tenant's writers until tx ends.
func Record(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, e Entry) error {
	if e.Outcome == "" {
		e.Outcome = OutcomeSuccess
	}
	details, err := CanonicalJSON(e.Details)
	if err != nil {
		return fmt.Errorf("audit %s: details: %w", e.Action, err)
	}
	actor, req := ActorFrom(ctx), RequestFrom(ctx)
	_, err = tx.Exec(ctx, `SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::json)`,
		tenantID, uuid.Must(uuid.NewV7()), time.Now().UTC().Truncate(time.Microsecond), actor.Type, actor.ID, actor.Name,
		e.Action, e.TargetType, e.TargetID, req.ID, req.SourceIP, e.Outcome, string(details))
	if err != nil {
		return fmt.Errorf("audit %s: append: %w", e.Action, err)
	}
	return nil
}

// canonicalV1 fixes the field order of scheme 1. Changing it is a new scheme.
type canonicalV1 struct {
	V          int             `json:"v"`
	TenantID   string          `json:"tenant_id"`
	Seq        int64           `json:"seq"`
	ID         string          `json:"id"`
	OccurredAt string          `json:"occurred_at"`
	Actor      canonicalActor  `json:"actor"`
	Action     string          `json:"action"`
	Target     canonicalTarget `json:"target"`
	RequestID  *string         `json:"request_id"`
	SourceIP   *string         `json:"source_ip"`
	Outcome    string          `json:"outcome"`
	Details    json.RawMessage `json:"details"`
}

type canonicalActor struct {
	Type string  `json:"type"`
	ID   *string `json:"id"`
	Name string  `json:"name"`
}

type canonicalTarget struct {
	Type string  `json:"type"`
	ID   *string `json:"id"`
}

// Canonical is the byte string scheme 1 hashes: compact JSON with the fields
// in the order above, occurred_at as RFC 3339 UTC with six fractional digits,
// absent values as null, details with object keys sorted, and no HTML
// escaping. docs/api/audit.md describes it for independent verifiers, and
// audit_canonical_v1 (migration 00009) builds the same bytes in the database,
// which hashes new events: a change to one is a change to both, and a new
// scheme.
func (ev *Event) Canonical() ([]byte, error) {
	if ev.SchemeVersion != 1 {
		return nil, fmt.Errorf("unknown audit scheme %d", ev.SchemeVersion)
	}
	details, err := CanonicalJSON(ev.Details)
	if err != nil {
		return nil, err
	}
	c := canonicalV1{
		V:          1,
		TenantID:   ev.TenantID.String(),
		Seq:        ev.Seq,
		ID:         ev.ID.String(),
		OccurredAt: ev.OccurredAt.UTC().Format("2006-01-02T15:04:05.000000Z"),
		Actor:      canonicalActor{Type: ev.Actor.Type, ID: strPtr(ev.Actor.ID), Name: ev.Actor.Name},
		Action:     ev.Action,
		Target:     canonicalTarget{Type: ev.TargetType, ID: strPtr(ev.TargetID)},
		RequestID:  strPtr(ev.RequestID),
		SourceIP:   strPtr(ev.SourceIP),
		Outcome:    ev.Outcome,
		Details:    details,
	}
	return marshalNoEscape(c)
}

// ComputeHash returns SHA-256(prev_hash || canonical serialization).
func (ev *Event) ComputeHash() ([]byte, error) {
	canon, err := ev.Canonical()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(ev.PrevHash)
	h.Write(canon)
	return h.Sum(nil), nil
}

// CanonicalJSON re-encodes v (a Go value, or raw JSON) compactly with sorted
// object keys and numbers kept as written. Nil becomes {}.
func CanonicalJSON(v any) (json.RawMessage, error) {
	var raw []byte
	switch x := v.(type) {
	case nil:
		return json.RawMessage(`{}`), nil
	case json.RawMessage:
		raw = x
	case map[string]any:
		if x == nil {
			return json.RawMessage(`{}`), nil
		}
		b, err := json.Marshal(x)
		if err != nil {
			return nil, err
		}
		raw = b
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return nil, err
		}
		raw = b
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("details are not JSON: %w", err)
	}
	if _, ok := generic.(map[string]any); !ok {
		return nil, fmt.Errorf("details must be a JSON object")
	}
	// encoding/json writes map keys sorted and json.Number verbatim.
	return marshalNoEscape(generic)
}

func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
