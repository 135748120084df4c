package deliveries

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhook"
	"github.com/edgeward/edgeward/controlplane/internal/etag"
	"github.com/edgeward/edgeward/controlplane/internal/outbox"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/secrets"
)

// EventTypes are the domain events a destination may subscribe to (the
// DeliveryEventType enum of the spec).
var EventTypes = []string{
	"alert.raised", "alert.updated", "alert.resolved",
	"ticket.created", "ticket.updated",
	"agent.revoked",
	"asset.authorized", "asset.unauthorized",
	"policy.forked", "policy.updated",
	EventDestinationDisabled,
}

// EventDestinationDisabled is the lifecycle event of a destination the
// control plane disabled (gone or failing), sent to the other destinations.
const EventDestinationDisabled = "delivery_destination.disabled"

// Reasons a destination is disabled.
const (
	ReasonByUser   = "disabled_by_user"
	ReasonGone     = "endpoint_gone"
	ReasonFailing  = "failing"
	stateActive    = "active"
	stateDisabled  = "disabled"
	codeDisabled   = "destination_disabled"
	codeURLRefused = "url_not_allowed"
)

// Destination is a webhook receiver of one tenant. It never holds a
// plaintext credential: those are only ever opened by the sender.
type Destination struct {
	ID                      uuid.UUID
	Name                    string
	URL                     string
	EventTypes              []string
	Enabled                 bool
	DisabledReason          *string
	DisabledAt              *time.Time
	AuthHeaderName          *string
	PreviousSecretExpiresAt *time.Time
	LastSuccessAt           *time.Time
	LastFailureAt           *time.Time
	FailingSince            *time.Time
	ConsecutiveFailures     int
	Pending                 int
	Version                 int
	CreatedAt, UpdatedAt    time.Time
}

const destinationColumns = `d.id, d.name, d.url, d.event_types, d.enabled, d.disabled_reason, d.disabled_at, d.auth_header_name,
	d.previous_secret_expires_at, d.last_success_at, d.last_failure_at, d.failing_since, d.consecutive_failures,
	(SELECT count(*) FROM deliveries x WHERE x.tenant_id = d.tenant_id AND x.destination_id = d.id AND x.status IN ('pending', 'retrying')),
	d.version, d.created_at, d.updated_at`

func scanDestination(row pgx.Row) (Destination, error) {
	var d Destination
	err := row.Scan(&d.ID, &d.Name, &d.URL, &d.EventTypes, &d.Enabled, &d.DisabledReason, &d.DisabledAt, &d.AuthHeaderName,
		&d.PreviousSecretExpiresAt, &d.LastSuccessAt, &d.LastFailureAt, &d.FailingSince, &d.ConsecutiveFailures,
		&d.Pending, &d.Version, &d.CreatedAt, &d.UpdatedAt)
	return d, err
}

// State is active or disabled.
func (d Destination) State() string {
	if d.Enabled {
		return stateActive
	}
	return stateDisabled
}

// AuthHeader is the extra header a destination sends.
type AuthHeader struct {
	Name, Value string
}

// DestinationSpec is what a tenant_admin sets when creating a destination.
type DestinationSpec struct {
	Name       string
	URL        string
	EventTypes []string
	Enabled    bool
	AuthHeader *AuthHeader
}

// DestinationPatch changes some fields; nil fields stay.
type DestinationPatch struct {
	Name       *string
	URL        *string
	EventTypes *[]string
	Enabled    *bool
	// AuthHeader replaces the extra header; ClearAuthHeader removes it.
	AuthHeader      *AuthHeader
	ClearAuthHeader bool
}

// sealContext binds a sealed credential to its tenant, row and kind.
func sealContext(tenantID, id uuid.UUID, kind string) string {
	return "delivery_destinations/" + tenantID.String() + "/" + id.String() + "/" + kind
}

const (
	sealSigning = "signing"
	sealAuth    = "auth_header"
)

// CreateDestination stores a destination with a new signing secret, which it
// returns: the only time anyone sees it. The URL must have passed the guard.
func CreateDestination(ctx context.Context, tx pgx.Tx, keys *secrets.Keyring, tenantID uuid.UUID, spec DestinationSpec) (Destination, string, error) {
	name := strings.TrimSpace(spec.Name)
	if name == "" {
		return Destination{}, "", problem.Invalid("name must not be blank", problem.Field{Pointer: "#/name", Detail: "blank"})
	}
	types, err := checkEventTypes(spec.EventTypes, "#/event_types")
	if err != nil {
		return Destination{}, "", err
	}
	id := uuid.Must(uuid.NewV7())
	secret, err := webhook.NewSecret()
	if err != nil {
		return Destination{}, "", err
	}
	sealed, err := keys.Seal([]byte(secret), sealContext(tenantID, id, sealSigning))
	if err != nil {
		return Destination{}, "", err
	}
	var authName *string
	var authSealed []byte
	if spec.AuthHeader != nil {
		if authName, authSealed, err = sealAuthHeader(keys, tenantID, id, *spec.AuthHeader, "#/auth_header"); err != nil {
			return Destination{}, "", err
		}
	}
	var reason *string
	var disabledAt any
	if !spec.Enabled {
		r := ReasonByUser
		reason, disabledAt = &r, time.Now().Truncate(time.Microsecond)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO delivery_destinations (tenant_id, id, name, url, event_types, enabled, disabled_reason,
		disabled_at, secret_sealed, auth_header_name, auth_header_sealed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		tenantID, id, name, spec.URL, types, spec.Enabled, reason, disabledAt, sealed, authName, authSealed); err != nil {
		return Destination{}, "", fmt.Errorf("create destination: %w", err)
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "delivery_destination.created", TargetType: "delivery_destination",
		TargetID: id.String(), Details: map[string]any{"name": name, "endpoint": endpoint(spec.URL), "event_types": types,
			"enabled": spec.Enabled, "auth_header_configured": authName != nil}}); err != nil {
		return Destination{}, "", err
	}
	d, err := GetDestination(ctx, tx, id)
	return d, secret, err
}

// GetDestination reads a destination that is not deleted.
func GetDestination(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Destination, error) {
	return getDestination(ctx, tx, id, "")
}

func getDestination(ctx context.Context, tx pgx.Tx, id uuid.UUID, lock string) (Destination, error) {
	d, err := scanDestination(tx.QueryRow(ctx, `SELECT `+destinationColumns+` FROM delivery_destinations d
		WHERE d.id = $1 AND d.deleted_at IS NULL`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Destination{}, problem.NotFound("delivery destination")
	}
	if err != nil {
		return Destination{}, fmt.Errorf("get destination: %w", err)
	}
	return d, nil
}

// ListDestinations lists live destinations newest first, one more than
// limit.
func ListDestinations(ctx context.Context, tx pgx.Tx, before *uuid.UUID, limit int) ([]Destination, error) {
	rows, err := tx.Query(ctx, `SELECT `+destinationColumns+` FROM delivery_destinations d
		WHERE d.deleted_at IS NULL AND ($1::uuid IS NULL OR d.id < $1) ORDER BY d.id DESC LIMIT $2`, before, limit+1)
	if err != nil {
		return nil, fmt.Errorf("list destinations: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Destination, error) { return scanDestination(r) })
}

// UpdateDestination applies p after checking If-Match. A URL in p must
// have passed the guard.
func UpdateDestination(ctx context.Context, tx pgx.Tx, keys *secrets.Keyring, tenantID, id uuid.UUID, ifMatch *string, p DestinationPatch) (Destination, error) {
	d, err := getDestination(ctx, tx, id, " FOR UPDATE OF d")
	if err != nil {
		return Destination{}, err
	}
	if err := etag.Check(ifMatch, d.Version); err != nil {
		return Destination{}, err
	}
	changed := map[string]any{}
	sets := []string{"version = version + 1", "updated_at = now()"}
	args := []any{tenantID, id}
	set := func(col string, v any) {
		args = append(args, v)
		sets = append(sets, fmt.Sprintf("%s = $%d", col, len(args)))
	}
	if p.Name != nil {
		name := strings.TrimSpace(*p.Name)
		if name == "" {
			return Destination{}, problem.Invalid("name must not be blank", problem.Field{Pointer: "#/name", Detail: "blank"})
		}
		if name != d.Name {
			set("name", name)
			changed["name"] = name
		}
	}
	if p.URL != nil && *p.URL != d.URL {
		set("url", *p.URL)
		changed["endpoint"] = endpoint(*p.URL)
	}
	if p.EventTypes != nil {
		types, err := checkEventTypes(*p.EventTypes, "#/event_types")
		if err != nil {
			return Destination{}, err
		}
		if !slices.Equal(types, d.EventTypes) {
			set("event_types", types)
			changed["event_types"] = types
		}
	}
	switch {
	case p.ClearAuthHeader && d.AuthHeaderName != nil:
		sets = append(sets, "auth_header_name = NULL", "auth_header_sealed = NULL")
		changed["auth_header_configured"] = false
	case p.AuthHeader != nil:
		name, sealed, err := sealAuthHeader(keys, tenantID, id, *p.AuthHeader, "#/auth_header")
		if err != nil {
			return Destination{}, err
		}
		set("auth_header_name", name)
		set("auth_header_sealed", sealed)
		changed["auth_header_configured"] = true
	}
	disabling := p.Enabled != nil && !*p.Enabled && d.Enabled
	if p.Enabled != nil && *p.Enabled != d.Enabled || p.Enabled != nil && *p.Enabled && d.DisabledReason != nil {
		changed["enabled"] = *p.Enabled
		if *p.Enabled {
			sets = append(sets, "enabled = true", "disabled_reason = NULL", "disabled_at = NULL",
				"failing_since = NULL", "consecutive_failures = 0")
		} else {
			set("disabled_reason", ReasonByUser)
			sets = append(sets, "enabled = false", "disabled_at = now()")
		}
	}
	if len(changed) == 0 {
		return d, nil // nothing differs: no new version, nothing to audit
	}
	if _, err := tx.Exec(ctx, `UPDATE delivery_destinations SET `+strings.Join(sets, ", ")+` WHERE tenant_id = $1 AND id = $2`, args...); err != nil {
		return Destination{}, fmt.Errorf("update destination: %w", err)
	}
	if disabling {
		n, err := cancelOpen(ctx, tx, id)
		if err != nil {
			return Destination{}, err
		}
		changed["deliveries_cancelled"] = n
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "delivery_destination.updated", TargetType: "delivery_destination",
		TargetID: id.String(), Details: changed}); err != nil {
		return Destination{}, err
	}
	return GetDestination(ctx, tx, id)
}

// DeleteDestination marks a destination deleted, erases its sealed
// credentials and cancels its open deliveries. Its history stays.
func DeleteDestination(ctx context.Context, tx pgx.Tx, tenantID, id uuid.UUID) error {
	if _, err := getDestination(ctx, tx, id, " FOR UPDATE OF d"); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE delivery_destinations SET deleted_at = now(), updated_at = now(), enabled = false,
		secret_sealed = NULL, previous_secret_sealed = NULL, previous_secret_expires_at = NULL,
		auth_header_name = NULL, auth_header_sealed = NULL, version = version + 1 WHERE tenant_id = $1 AND id = $2`, tenantID, id); err != nil {
		return fmt.Errorf("delete destination: %w", err)
	}
	n, err := cancelOpen(ctx, tx, id)
	if err != nil {
		return err
	}
	return audit.Record(ctx, tx, tenantID, audit.Entry{Action: "delivery_destination.deleted", TargetType: "delivery_destination",
		TargetID: id.String(), Details: map[string]any{"deliveries_cancelled": n}})
}

// RotateSecret gives a destination a new signing secret and keeps the old
// one signing too until the overlap ends. It returns the new secret and when
// the old one stops.
func RotateSecret(ctx context.Context, tx pgx.Tx, keys *secrets.Keyring, tenantID, id uuid.UUID, overlap time.Duration) (string, time.Time, error) {
	if _, err := getDestination(ctx, tx, id, " FOR UPDATE OF d"); err != nil {
		return "", time.Time{}, err
	}
	secret, err := webhook.NewSecret()
	if err != nil {
		return "", time.Time{}, err
	}
	sealed, err := keys.Seal([]byte(secret), sealContext(tenantID, id, sealSigning))
	if err != nil {
		return "", time.Time{}, err
	}
	var until time.Time
	if err := tx.QueryRow(ctx, `UPDATE delivery_destinations SET previous_secret_sealed = secret_sealed, secret_sealed = $3,
		previous_secret_expires_at = now() + make_interval(secs => $4), updated_at = now(), version = version + 1
		WHERE tenant_id = $1 AND id = $2 RETURNING previous_secret_expires_at`, tenantID, id, sealed, overlap.Seconds()).Scan(&until); err != nil {
		return "", time.Time{}, fmt.Errorf("rotate secret: %w", err)
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "delivery_destination.secret_rotated", TargetType: "delivery_destination",
		TargetID: id.String(), Details: map[string]any{"previous_secret_expires_at": until.UTC().Format(time.RFC3339)}}); err != nil {
		return "", time.Time{}, err
	}
	return secret, until, nil
}

// disable turns a destination off on the control plane's own decision
// (gone, or failing too long): its open deliveries are cancelled, an audit
// entry says why, and the other destinations hear of it.
func disable(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, d Destination, reason string, details map[string]any) error {
	tag, err := tx.Exec(ctx, `UPDATE delivery_destinations SET enabled = false, disabled_reason = $3, disabled_at = now(),
		updated_at = now(), version = version + 1 WHERE tenant_id = $1 AND id = $2 AND enabled`, tenantID, d.ID, reason)
	if err != nil {
		return fmt.Errorf("disable destination: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil // already disabled
	}
	n, err := cancelOpen(ctx, tx, d.ID)
	if err != nil {
		return err
	}
	details["reason"] = reason
	details["deliveries_cancelled"] = n
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "delivery_destination.disabled", TargetType: "delivery_destination",
		TargetID: d.ID.String(), Details: details}); err != nil {
		return err
	}
	return outbox.Publish(ctx, tx, tenantID, outbox.Event{Type: EventDestinationDisabled, AggregateType: "delivery_destination",
		AggregateID: d.ID, Payload: map[string]any{"destination_id": d.ID, "name": d.Name, "reason": reason}})
}

// cancelOpen cancels a destination's pending and retrying deliveries; their
// scheduled jobs find them settled and do nothing.
func cancelOpen(ctx context.Context, tx pgx.Tx, destinationID uuid.UUID) (int64, error) {
	tag, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'cancelled', next_retry_at = NULL, completed_at = now(), updated_at = now()
		WHERE destination_id = $1 AND status IN ('pending', 'retrying')`, destinationID)
	if err != nil {
		return 0, fmt.Errorf("cancel deliveries: %w", err)
	}
	return tag.RowsAffected(), nil
}

func checkEventTypes(types []string, pointer string) ([]string, error) {
	out := make([]string, 0, len(types))
	for i, t := range types {
		if !slices.Contains(EventTypes, t) {
			return nil, problem.Invalid("unknown event type "+t, problem.Field{Pointer: fmt.Sprintf("%s/%d", pointer, i), Detail: "not an event type"})
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, problem.Invalid("subscribe to at least one event type", problem.Field{Pointer: pointer, Detail: "empty"})
	}
	slices.Sort(out)
	return out, nil
}

func sealAuthHeader(keys *secrets.Keyring, tenantID, id uuid.UUID, h AuthHeader, pointer string) (*string, []byte, error) {
	name := http.CanonicalHeaderKey(strings.TrimSpace(h.Name))
	var he *webhook.HeaderError
	if err := webhook.CheckAuthHeader(name, h.Value); errors.As(err, &he) {
		return nil, nil, problem.Invalid(he.Reason, problem.Field{Pointer: pointer + "/" + he.Field, Detail: he.Reason})
	} else if err != nil {
		return nil, nil, err
	}
	sealed, err := keys.Seal([]byte(h.Value), sealContext(tenantID, id, sealAuth))
	if err != nil {
		return nil, nil, err
	}
	return &name, sealed, nil
}

// endpoint is what the audit trail keeps of a URL: scheme and host. Paths
// and queries of webhook URLs often carry the receiver's own token, and the
// trail is readable by auditors.
func endpoint(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
