// Package outbox is the transactional outbox: domain events (alert.raised,
// ticket.updated, agent.revoked, ...) are written in the same transaction as
// the change they describe, so an event exists exactly when its change
// committed. The deliveries room consumes them.
package outbox

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Event is one domain event.
type Event struct {
	Type          string // e.g. alert.raised
	AggregateType string // e.g. alert
	AggregateID   uuid.UUID
	// Payload is the event's data. Never put a secret here: it leaves the
	// system in webhooks.
	Payload map[string]any
}

// Publish records an event inside tx.
func Publish(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, e Event) error {
	payload, err := json.Marshal(e.Payload)
	if err != nil || e.Payload == nil {
		payload = []byte("{}")
	}
	_, err = tx.Exec(ctx, `INSERT INTO outbox_events (tenant_id, id, type, aggregate_type, aggregate_id, payload) VALUES ($1, $2, $3, $4, $5, $6)`,
		tenantID, uuid.Must(uuid.NewV7()), e.Type, e.AggregateType, e.AggregateID, payload)
	if err != nil {
		return fmt.Errorf("outbox %s: %w", e.Type, err)
	}
	return nil
}
