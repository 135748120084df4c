// Package assets is the asset inventory: every device a tenant knows, with a
// timeline of what happened to it. An enrolled host is keyed by its machine
// id, so re-installing or re-enrolling the same machine keeps one asset.
package assets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// Sources of an asset.
const (
	SourceAgent     = "agent"
	SourceDiscovery = "discovery"
)

// Timeline kinds written by agents.
const (
	KindEnrolled     = "enrolled"
	KindReenrolled   = "reenrolled"
	KindFirstSeen    = "first_seen"
	KindFactsChanged = "facts_changed"
	KindRevoked      = "revoked"
)

// Asset is one device.
type Asset struct {
	ID          uuid.UUID
	Name        string
	Source      string
	MachineID   *string
	OS          *string
	Platform    *string
	AgentID     *uuid.UUID
	SiteID      *uuid.UUID
	VendorOUI   *string
	Addresses   []string
	MACs        []string
	FirstSeenAt time.Time
	LastSeenAt  time.Time
	// Authorization: whether the device may be on the network, and why.
	AuthState     string
	AuthBasis     *string
	AuthRule      *string
	AuthChangedAt time.Time
	// Manual: a person authorized the device. It stays authorized (on that
	// basis) when the agent or the allowlist rule that also vouched for it
	// goes away.
	Manual bool
}

// Host is what an agent says about the machine an asset stands for.
type Host struct {
	MachineID string
	Name      string
	OS        string
	Platform  string
	AgentID   uuid.UUID
	Addresses []string
	MACs      []string
}

// Store reads and writes assets inside the caller's tenant transaction.
type Store struct{}

// ForMachine returns the asset of a machine, creating it on first sight and
// pointing it at the machine's current agent, which vouches for it: a
// machine enrolled again after its agent was revoked is authorized again,
// on the record.
func (s Store) ForMachine(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, h Host, at time.Time) (id uuid.UUID, created bool, err error) {
	err = tx.QueryRow(ctx, `
		INSERT INTO assets (tenant_id, id, name, source, machine_id, os, platform, agent_id, addresses, macs, first_seen_at, last_seen_at,
		                    authorization_state, authorization_basis, authorization_changed_at)
		VALUES ($1, $2, $3, 'agent', $4, $5, $6, $7, $8, $9, $10, $10, 'authorized', 'agent_host', $10)
		ON CONFLICT (tenant_id, machine_id) DO UPDATE
		   SET name = EXCLUDED.name, source = 'agent', os = EXCLUDED.os, platform = EXCLUDED.platform,
		       agent_id = EXCLUDED.agent_id, addresses = EXCLUDED.addresses, macs = EXCLUDED.macs,
		       last_seen_at = greatest(assets.last_seen_at, EXCLUDED.last_seen_at), updated_at = now()
		RETURNING id, (xmax = 0)`,
		tenantID, uuid.Must(uuid.NewV7()), h.Name, h.MachineID, h.OS, h.Platform, h.AgentID, nonNil(h.Addresses), nonNil(h.MACs), at).Scan(&id, &created)
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("asset for machine: %w", err)
	}
	if created {
		return id, created, nil
	}
	a, err := s.Lock(ctx, tx, id)
	if err != nil {
		return uuid.Nil, false, err
	}
	if _, err := s.SetAuthorization(ctx, tx, tenantID, a, Change{State: Authorized, Basis: BasisAgentHost}); err != nil {
		return uuid.Nil, false, err
	}
	return id, created, nil
}

// Sighting is one asset seen by its agent: LastSeen moves forward; Host
// replaces the descriptive fields when it is set (facts changed).
//
// An asset's last-seen time is kept to LastSeenResolution: heartbeats in
// between do not rewrite the row (or its last-seen index entry).
type Sighting struct {
	AssetID  uuid.UUID
	LastSeen time.Time
	Host     *Host
}

// LastSeenResolution is how stale an asset's last-seen time may get.
const LastSeenResolution = 30 * time.Second

// Seen applies many sightings in one statement.
func (Store) Seen(ctx context.Context, tx pgx.Tx, sightings []Sighting) error {
	if len(sightings) == 0 {
		return nil
	}
	n := len(sightings)
	ids, seen := make([]uuid.UUID, n), make([]time.Time, n)
	changed := make([]bool, n)
	names, oses, platforms := make([]string, n), make([]string, n), make([]string, n)
	addrs, macs := make([]string, n), make([]string, n)
	for i, s := range sightings {
		ids[i], seen[i] = s.AssetID, s.LastSeen
		if s.Host != nil {
			changed[i] = true
			names[i], oses[i], platforms[i] = s.Host.Name, s.Host.OS, s.Host.Platform
			addrs[i], macs[i] = jsonArray(s.Host.Addresses), jsonArray(s.Host.MACs)
		} else {
			addrs[i], macs[i] = "[]", "[]"
		}
	}
	_, err := tx.Exec(ctx, `
		UPDATE assets a
		   SET last_seen_at = greatest(a.last_seen_at, s.seen),
		       name = CASE WHEN s.changed THEN s.name ELSE a.name END,
		       os = CASE WHEN s.changed THEN s.os ELSE a.os END,
		       platform = CASE WHEN s.changed THEN s.platform ELSE a.platform END,
		       addresses = CASE WHEN s.changed THEN ARRAY(SELECT jsonb_array_elements_text(s.addrs)) ELSE a.addresses END,
		       macs = CASE WHEN s.changed THEN ARRAY(SELECT jsonb_array_elements_text(s.macs)) ELSE a.macs END,
		       updated_at = CASE WHEN s.changed THEN now() ELSE a.updated_at END
		  FROM unnest($1::uuid[], $2::timestamptz[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[])
		       AS s(id, seen, changed, name, os, platform, addrs, macs)
		 WHERE a.id = s.id AND (s.changed OR a.last_seen_at < s.seen - $9::interval)`,
		db.UUIDs(ids), seen, changed, names, oses, platforms, addrs, macs, LastSeenResolution)
	if err != nil {
		return fmt.Errorf("assets seen: %w", err)
	}
	return nil
}

// DetachAgent unlinks a revoked agent from its asset and withdraws the
// authorization the agent gave its host: a revoked agent vouches for
// nothing, so the host is judged like any device when it is seen again
// (unless a person authorized it). Enrolling the machine again restores it.
func (s Store) DetachAgent(ctx context.Context, tx pgx.Tx, tenantID, assetID, agentID uuid.UUID) error {
	tag, err := tx.Exec(ctx, `UPDATE assets SET agent_id = NULL, updated_at = now() WHERE id = $1 AND agent_id = $2`, assetID, agentID)
	if err != nil || tag.RowsAffected() == 0 {
		return err
	}
	host, err := s.Lock(ctx, tx, assetID)
	if err != nil {
		return err
	}
	if host.AuthState != Authorized || deref(host.AuthBasis) != BasisAgentHost {
		return nil
	}
	_, err = s.Withdraw(ctx, tx, tenantID, host, "its agent was revoked")
	return err
}

// TimelineEntry is one event in an asset's history.
type TimelineEntry struct {
	ID      uuid.UUID
	AssetID uuid.UUID
	At      time.Time
	Kind    string
	Summary string
	Details map[string]any
}

// Record appends timeline entries in one statement.
func (Store) Record(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, entries []TimelineEntry) error {
	if len(entries) == 0 {
		return nil
	}
	n := len(entries)
	ids, assetIDs, ats := make([]uuid.UUID, n), make([]uuid.UUID, n), make([]time.Time, n)
	kinds, summaries, details := make([]string, n), make([]string, n), make([]string, n)
	for i, e := range entries {
		ids[i] = e.ID
		if ids[i] == uuid.Nil {
			ids[i] = uuid.Must(uuid.NewV7())
		}
		assetIDs[i], ats[i], kinds[i], summaries[i] = e.AssetID, e.At, e.Kind, e.Summary
		b, err := json.Marshal(e.Details)
		if err != nil || e.Details == nil {
			b = []byte("{}")
		}
		details[i] = string(b)
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO asset_timeline (tenant_id, id, asset_id, at, kind, summary, details)
		SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[], $6::text[], $7::jsonb[])`,
		tenantID, db.UUIDs(ids), db.UUIDs(assetIDs), ats, kinds, summaries, details)
	if err != nil {
		return fmt.Errorf("asset timeline: %w", err)
	}
	return nil
}

const assetColumns = `id, name, source, machine_id, os, platform, agent_id, site_id, vendor_oui, addresses, macs, first_seen_at, last_seen_at,
	authorization_state, authorization_basis, authorization_rule, authorization_changed_at, manually_authorized`

func scanAsset(row pgx.Row) (Asset, error) {
	var a Asset
	err := row.Scan(&a.ID, &a.Name, &a.Source, &a.MachineID, &a.OS, &a.Platform, &a.AgentID, &a.SiteID, &a.VendorOUI, &a.Addresses, &a.MACs,
		&a.FirstSeenAt, &a.LastSeenAt, &a.AuthState, &a.AuthBasis, &a.AuthRule, &a.AuthChangedAt, &a.Manual)
	a.FirstSeenAt, a.LastSeenAt, a.AuthChangedAt = a.FirstSeenAt.UTC(), a.LastSeenAt.UTC(), a.AuthChangedAt.UTC()
	return a, err
}

// Filter selects assets for List.
type Filter struct {
	Source        string
	Authorization string
	SiteID        *uuid.UUID
	SeenSince     time.Time
	SeenBefore    time.Time
	Query         string
	After         *Cursor
	Limit         int
}

// Cursor is the position after the last asset of a page.
type Cursor struct {
	LastSeen time.Time `json:"t"`
	ID       uuid.UUID `json:"i"`
}

// List returns assets, most recently seen first, fetching Limit+1.
func (Store) List(ctx context.Context, tx pgx.Tx, f Filter) ([]Asset, error) {
	q := `SELECT ` + assetColumns + ` FROM assets WHERE merged_into IS NULL`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.Source != "" {
		q += " AND source = " + arg(f.Source)
	}
	if f.Authorization != "" {
		q += " AND authorization_state = " + arg(f.Authorization)
	}
	if f.SiteID != nil {
		q += " AND site_id = " + arg(*f.SiteID)
	}
	if !f.SeenSince.IsZero() {
		q += " AND last_seen_at >= " + arg(f.SeenSince)
	}
	if !f.SeenBefore.IsZero() {
		q += " AND last_seen_at < " + arg(f.SeenBefore)
	}
	if mac, ok := NormalizeMAC(f.Query); ok {
		// A whole MAC is looked up by its owner in asset_macs, by equality:
		// row-level security keeps PostgreSQL from using an index for
		// ILIKE (its operators are not leakproof), so the substring search
		// below reads every asset of the tenant.
		q += " AND id IN (SELECT asset_id FROM asset_macs WHERE mac = " + arg(mac) + ")"
	} else if f.Query != "" {
		p := arg("%" + escapeLike(f.Query) + "%")
		q += fmt.Sprintf(` AND (name ILIKE %[1]s OR machine_id ILIKE %[1]s
			OR EXISTS (SELECT 1 FROM unnest(addresses) x WHERE x ILIKE %[1]s)
			OR EXISTS (SELECT 1 FROM unnest(macs) x WHERE x ILIKE %[1]s))`, p)
	}
	if f.After != nil {
		q += fmt.Sprintf(" AND (last_seen_at, id) < (%s, %s)", arg(f.After.LastSeen), arg(f.After.ID))
	}
	q += " ORDER BY last_seen_at DESC, id DESC LIMIT " + arg(f.Limit+1)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list assets: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Asset, error) { return scanAsset(r) })
}

// Get returns one asset, or a 404 problem.
func (Store) Get(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Asset, error) {
	a, err := scanAsset(tx.QueryRow(ctx, `SELECT `+assetColumns+` FROM assets WHERE id = $1 AND merged_into IS NULL`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, problem.NotFound("asset")
	}
	if err != nil {
		return a, fmt.Errorf("get asset: %w", err)
	}
	return a, nil
}

// Timeline returns an asset's entries, newest first, fetching limit+1.
func (Store) Timeline(ctx context.Context, tx pgx.Tx, assetID uuid.UUID, before *uuid.UUID, limit int) ([]TimelineEntry, error) {
	q := `SELECT id, asset_id, at, kind, summary, details FROM asset_timeline WHERE asset_id = $1`
	args := []any{assetID}
	if before != nil {
		args = append(args, *before)
		q += " AND id < $2"
	}
	args = append(args, limit+1)
	q += fmt.Sprintf(" ORDER BY id DESC LIMIT $%d", len(args))
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("asset timeline: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (TimelineEntry, error) {
		var e TimelineEntry
		err := r.Scan(&e.ID, &e.AssetID, &e.At, &e.Kind, &e.Summary, &e.Details)
		e.At = e.At.UTC()
		return e, err
	})
}

// NormalizeMAC returns s as one complete EUI-48 address in the form assets
// and observations store it (lowercase, colons), or false.
func NormalizeMAC(s string) (string, bool) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", false
	}
	return hw.String(), true
}

func escapeLike(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '%' || r == '_' || r == '\\' {
			out = append(out, '\\')
		}
		out = append(out, r)
	}
	return string(out)
}

func jsonArray(v []string) string {
	b, _ := json.Marshal(nonNil(v))
	return string(b)
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}
