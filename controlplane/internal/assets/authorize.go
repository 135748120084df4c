package assets

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/evidence"
	"github.com/edgeward/edgeward/controlplane/internal/outbox"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// Authorization states and bases.
const (
	Authorized   = "authorized"
	Unauthorized = "unauthorized"

	BasisAgentHost = "agent_host"
	BasisAllowlist = "allowlist"
	BasisManual    = "manual"
)

// Timeline kinds of discovered devices and authorization.
const (
	KindSeenAgain      = "seen_again"
	KindAddressChanged = "address_changed"
	KindAuthorized     = "authorized"
	KindUnauthorized   = "unauthorized"
	KindAlertRaised    = "alert_raised"
	KindMerged         = "merged"
)

// Lock reads an asset for update, or a 404 problem.
func (Store) Lock(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Asset, error) {
	a, err := scanAsset(tx.QueryRow(ctx, `SELECT `+assetColumns+` FROM assets WHERE id = $1 AND merged_into IS NULL FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, problem.NotFound("asset")
	}
	return a, err
}

// Change is an authorization change to apply.
type Change struct {
	State  string
	Basis  string // empty when unauthorized
	Rule   string // the allowlist rule or the manual reason
	Manual *bool  // set the manual flag (nil leaves it)
	// AlertID ties the evidence to the alert that caused the change.
	AlertID *uuid.UUID
}

// SetAuthorization changes an asset's authorization inside tx: the row, a
// timeline entry, an evidence record, an audit event and an outbox event.
// A change that changes nothing writes nothing.
func (s Store) SetAuthorization(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, a Asset, ch Change) (Asset, error) {
	same := a.AuthState == ch.State && deref(a.AuthBasis) == ch.Basis && deref(a.AuthRule) == ch.Rule
	if same && (ch.Manual == nil || *ch.Manual == a.Manual) {
		return a, nil
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	basis, rule := nullStr(ch.Basis), nullStr(ch.Rule)
	_, err := tx.Exec(ctx, `
		UPDATE assets SET authorization_state = $2, authorization_basis = $3, authorization_rule = $4, authorization_changed_at = $5,
		       manually_authorized = coalesce($6, manually_authorized),
		       alerts_suppressed = CASE WHEN $2 = 'unauthorized' THEN false ELSE alerts_suppressed END, updated_at = $5
		 WHERE id = $1`, a.ID, ch.State, basis, rule, now, ch.Manual)
	if err != nil {
		return a, fmt.Errorf("set authorization: %w", err)
	}
	if ch.Manual != nil {
		a.Manual = *ch.Manual
	}
	kind := KindAuthorized
	summary := "authorized"
	if ch.State == Unauthorized {
		kind, summary = KindUnauthorized, "no longer authorized"
	}
	if ch.Basis != "" {
		summary += " (" + ch.Basis + ")"
	}
	if same {
		// Only the person's decision is new: the state stands on its basis
		// and now on the person's word too.
		summary += ", and by a person"
	}
	details := map[string]any{"state": ch.State, "basis": ch.Basis, "rule": ch.Rule, "previous_state": a.AuthState, "manual": a.Manual}
	if err := s.Record(ctx, tx, tenantID, []TimelineEntry{{AssetID: a.ID, At: now, Kind: kind, Summary: summary, Details: details}}); err != nil {
		return a, err
	}
	assetID := a.ID
	if _, err := evidence.Add(ctx, tx, tenantID, evidence.Record{Kind: evidence.KindAuthorization, AlertID: ch.AlertID, AssetID: &assetID,
		SourceType: "asset", SourceID: a.ID.String(), Content: map[string]any{
			"action": kind, "state": ch.State, "basis": ch.Basis, "reason": ch.Rule, "previous_state": a.AuthState, "manual": a.Manual,
			"mac": firstOf(a.MACs), "name": a.Name,
		}}); err != nil {
		return a, err
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "asset." + kind, TargetType: "asset", TargetID: a.ID.String(),
		Details: map[string]any{"basis": ch.Basis, "previous_state": a.AuthState, "manual": a.Manual}}); err != nil {
		return a, err
	}
	if err := outbox.Publish(ctx, tx, tenantID, outbox.Event{Type: "asset." + kind, AggregateType: "asset", AggregateID: a.ID,
		Payload: map[string]any{"asset_id": a.ID.String(), "state": ch.State, "basis": ch.Basis}}); err != nil {
		return a, err
	}
	a.AuthState, a.AuthBasis, a.AuthRule, a.AuthChangedAt = ch.State, basis, rule, now
	return a, nil
}

// AuthorizeAsset implements POST /api/v1/assets/{asset_id}/authorize.
func (a *API) AuthorizeAsset(ctx context.Context, req api.AuthorizeAssetRequestObject) (api.AuthorizeAssetResponseObject, error) {
	out, err := a.manual(ctx, req.AssetId, req.Body.Reason, true)
	if err != nil {
		return nil, err
	}
	return api.AuthorizeAsset200JSONResponse(out), nil
}

// UnauthorizeAsset implements POST /api/v1/assets/{asset_id}/unauthorize.
func (a *API) UnauthorizeAsset(ctx context.Context, req api.UnauthorizeAssetRequestObject) (api.UnauthorizeAssetResponseObject, error) {
	out, err := a.manual(ctx, req.AssetId, req.Body.Reason, false)
	if err != nil {
		return nil, err
	}
	return api.UnauthorizeAsset200JSONResponse(out), nil
}

// manual applies a person's authorization decision.
func (a *API) manual(ctx context.Context, id uuid.UUID, reason string, authorize bool) (api.Asset, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return api.Asset{}, err
	}
	var x Asset
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if x, err = a.Store.Lock(ctx, tx, id); err != nil {
			return err
		}
		x, err = a.Store.ManualAuthorization(ctx, tx, c.TenantID, x, reason, authorize, nil)
		return err
	})
	if err != nil {
		return api.Asset{}, err
	}
	return x.ToAPI(nil), nil
}

// ManualAuthorization records a person's decision. Authorizing an asset an
// agent or allowlist already authorizes only records the manual flag;
// unauthorizing such an asset is a conflict, since the person cannot undo
// what the agent or the rule decides.
func (s Store) ManualAuthorization(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, x Asset, reason string, authorize bool, alertID *uuid.UUID) (Asset, error) {
	yes, no := true, false
	basis := deref(x.AuthBasis)
	switch {
	case authorize && x.AuthState == Authorized && basis != BasisManual:
		return s.SetAuthorization(ctx, tx, tenantID, x, Change{State: Authorized, Basis: basis, Rule: deref(x.AuthRule), Manual: &yes, AlertID: alertID})
	case authorize:
		return s.SetAuthorization(ctx, tx, tenantID, x, Change{State: Authorized, Basis: BasisManual, Rule: reason, Manual: &yes, AlertID: alertID})
	case x.AuthState == Unauthorized:
		return x, problem.New(http.StatusConflict, problem.CodeConflict, "the asset is not authorized")
	case basis == BasisAgentHost:
		return x, problem.New(http.StatusConflict, problem.CodeConflict, "the asset is an enrolled agent host: revoke its agent to withdraw its authorization")
	case basis == BasisAllowlist:
		return x, problem.Newf(http.StatusConflict, problem.CodeConflict, "the asset is authorized by the site's %s: change the discovery policy to withdraw it", deref(x.AuthRule))
	}
	return s.SetAuthorization(ctx, tx, tenantID, x, Change{State: Unauthorized, Rule: reason, Manual: &no, AlertID: alertID})
}

// Withdraw takes away the basis an agent or an allowlist rule gave an
// asset (why says what happened). A device a person also authorized stays
// authorized on the person's word; any other becomes unauthorized.
func (s Store) Withdraw(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, a Asset, why string) (Asset, error) {
	if a.Manual {
		return s.SetAuthorization(ctx, tx, tenantID, a, Change{State: Authorized, Basis: BasisManual, Rule: "authorized by a person; " + why})
	}
	return s.SetAuthorization(ctx, tx, tenantID, a, Change{State: Unauthorized, Rule: why})
}

// Device is a network device as discovery sees it.
type Device struct {
	MAC       string
	IP        string
	SiteID    uuid.UUID
	VendorOUI string
	SeenAt    time.Time
}

// AssetOfMAC returns the asset that owns a MAC.
func (Store) AssetOfMAC(ctx context.Context, tx pgx.Tx, mac string) (uuid.UUID, bool, error) {
	var id uuid.UUID
	err := tx.QueryRow(ctx, `SELECT asset_id FROM asset_macs WHERE mac = $1`, mac).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return id, false, nil
	}
	return id, err == nil, err
}

// discoveredName is the name of a device known only by its MAC.
func discoveredName(mac string) string { return "device " + mac }

// Discovered creates the asset of a device seen only through discovery.
func (s Store) Discovered(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, d Device) (Asset, error) {
	id := uuid.Must(uuid.NewV7())
	_, err := tx.Exec(ctx, `
		INSERT INTO assets (tenant_id, id, name, source, site_id, vendor_oui, addresses, macs, first_seen_at, last_seen_at)
		VALUES ($1, $2, $3, 'discovery', $4, $5, $6, $7, $8, $8)`,
		tenantID, id, discoveredName(d.MAC), d.SiteID, d.VendorOUI, []string{d.IP}, []string{d.MAC}, d.SeenAt)
	if err != nil {
		return Asset{}, fmt.Errorf("discovered asset: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO asset_macs (tenant_id, mac, asset_id) VALUES ($1, $2, $3)`, tenantID, d.MAC, id); err != nil {
		return Asset{}, fmt.Errorf("discovered asset mac: %w", err)
	}
	if err := s.Record(ctx, tx, tenantID, []TimelineEntry{{AssetID: id, At: d.SeenAt, Kind: KindFirstSeen,
		Summary: "first seen at " + d.IP, Details: map[string]any{"mac": d.MAC, "ip": d.IP, "site_id": d.SiteID.String()}}}); err != nil {
		return Asset{}, err
	}
	return s.Lock(ctx, tx, id)
}

// seenAgainGap is how long a device must be away before seeing it again is
// worth a timeline entry: sightings in between are coalesced.
const seenAgainGap = time.Hour

// SeenAt records a sighting of a discovered device at an address.
func (s Store) SeenAt(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, a Asset, ip string, at time.Time) (Asset, error) {
	var entries []TimelineEntry
	if at.Sub(a.LastSeenAt) > seenAgainGap {
		entries = append(entries, TimelineEntry{AssetID: a.ID, At: at, Kind: KindSeenAgain, Summary: "seen again at " + ip,
			Details: map[string]any{"ip": ip, "away_seconds": int64(at.Sub(a.LastSeenAt).Seconds())}})
	}
	addrs := a.Addresses
	if !slices.Contains(addrs, ip) {
		entries = append(entries, TimelineEntry{AssetID: a.ID, At: at, Kind: KindAddressChanged, Summary: "new address " + ip,
			Details: map[string]any{"ip": ip, "previous": a.Addresses}})
		addrs = append([]string{ip}, addrs...)
		if len(addrs) > 16 {
			addrs = addrs[:16]
		}
	}
	if len(entries) == 0 && at.Sub(a.LastSeenAt) < LastSeenResolution {
		return a, nil
	}
	if _, err := tx.Exec(ctx, `UPDATE assets SET last_seen_at = greatest(last_seen_at, $2), addresses = $3, updated_at = now() WHERE id = $1`, a.ID, at, addrs); err != nil {
		return a, err
	}
	a.Addresses = addrs
	if at.After(a.LastSeenAt) {
		a.LastSeenAt = at
	}
	return a, s.Record(ctx, tx, tenantID, entries)
}

// ClaimMACs makes an agent host's asset the owner of its interfaces' MACs.
// Discovered assets that owned one of them are merged into it (a host is
// never both) and returned, so their alerts can be closed.
func (s Store) ClaimMACs(ctx context.Context, tx pgx.Tx, tenantID, hostAsset uuid.UUID, macs []string) ([]uuid.UUID, error) {
	var merged []uuid.UUID
	for _, mac := range macs {
		var owner uuid.UUID
		var source string
		err := tx.QueryRow(ctx, `SELECT m.asset_id, a.source FROM asset_macs m JOIN assets a ON a.tenant_id = m.tenant_id AND a.id = m.asset_id WHERE m.mac = $1 FOR UPDATE OF m`, mac).Scan(&owner, &source)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, `INSERT INTO asset_macs (tenant_id, mac, asset_id) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, mac) DO NOTHING`, tenantID, mac, hostAsset); err != nil {
				return nil, err
			}
			continue
		case err != nil:
			return nil, err
		case owner == hostAsset || source == SourceAgent:
			// Ours already, or another agent host's (MACs can repeat across
			// virtual machines): leave it.
			continue
		}
		if _, err := tx.Exec(ctx, `UPDATE asset_macs SET asset_id = $2 WHERE mac = $1`, mac, hostAsset); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, `UPDATE assets SET merged_into = $2, updated_at = now() WHERE id = $1`, owner, hostAsset); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, `UPDATE observations SET asset_id = $2 WHERE asset_id = $1`, owner, hostAsset); err != nil {
			return nil, err
		}
		if err := s.Record(ctx, tx, tenantID, []TimelineEntry{
			{AssetID: owner, At: time.Now().UTC().Truncate(time.Microsecond), Kind: KindMerged, Summary: "enrolled as an agent host", Details: map[string]any{"merged_into": hostAsset.String(), "mac": mac}},
			{AssetID: hostAsset, At: time.Now().UTC().Truncate(time.Microsecond), Kind: KindMerged, Summary: "absorbed the discovered device " + mac, Details: map[string]any{"merged_asset": owner.String(), "mac": mac}},
		}); err != nil {
			return nil, err
		}
		merged = append(merged, owner)
	}
	return merged, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func nullStr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
