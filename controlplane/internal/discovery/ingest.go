package discovery

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/alerts"
	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// Observation is one neighbour-table entry a collector reported.
type Observation struct {
	MAC       string
	IP        string
	Interface string
	State     string
	SeenAt    time.Time
}

// Collector is the agent that reported observations.
type Collector struct {
	AgentID uuid.UUID
	SiteID  *uuid.UUID
}

// AgentPolicy is what an agent is told about discovery in its heartbeat
// response.
type AgentPolicy struct {
	PassiveNeighbor bool
	CIDRs           []string
	Version         int
}

// Ingest turns observations into discovered assets, authorization
// decisions and alerts, inside the heartbeat's transaction.
type Ingest struct {
	Assets assets.Store
	Alerts alerts.Raiser
}

// PoliciesFor tells agents whether and where they may observe, reading
// each site's policy once.
func (in Ingest) PoliciesFor(ctx context.Context, tx pgx.Tx, cols []Collector) (map[uuid.UUID]AgentPolicy, error) {
	out := map[uuid.UUID]AgentPolicy{}
	sites := map[uuid.UUID]Policy{}
	for _, col := range cols {
		if col.SiteID == nil {
			continue
		}
		p, ok := sites[*col.SiteID]
		if !ok {
			var err error
			if p, err = LoadPolicy(ctx, tx, *col.SiteID); err != nil {
				return nil, err
			}
			sites[*col.SiteID] = p
		}
		ap := AgentPolicy{PassiveNeighbor: p.Allows(MethodPassiveNeighbor, col.AgentID), Version: p.Version}
		if ap.PassiveNeighbor {
			for _, c := range p.CIDRs {
				ap.CIDRs = append(ap.CIDRs, c.String())
			}
		}
		out[col.AgentID] = ap
	}
	return out, nil
}

// Observe applies one collector's observations. Observations the policy does
// not allow (no site, method not allowed, collector not listed, address
// outside the CIDRs) are dropped and counted, as are invalid ones.
func (in Ingest) Observe(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, col Collector, obs []Observation, droppedByAgent int64) error {
	if len(obs) == 0 && droppedByAgent == 0 {
		return nil
	}
	var dropped int64
	var kept []Observation
	var policy Policy
	allowed := false
	if col.SiteID != nil {
		var err error
		if policy, err = LoadPolicy(ctx, tx, *col.SiteID); err != nil {
			return err
		}
		allowed = policy.Allows(MethodPassiveNeighbor, col.AgentID)
	}
	type key struct{ mac, ip string }
	seen := map[key]bool{}
	for _, o := range obs {
		mac, okMAC := assets.NormalizeMAC(o.MAC)
		ip, err := netip.ParseAddr(strings.TrimSpace(o.IP))
		if !allowed || !okMAC || err != nil {
			dropped++
			continue
		}
		if _, covered := policy.Covers(ip); !covered {
			dropped++
			continue
		}
		k := key{mac, ip.Unmap().String()}
		if seen[k] {
			continue
		}
		seen[k] = true
		o.MAC, o.IP = mac, k.ip
		o.Interface, o.State = truncate(o.Interface, 100), truncate(o.State, 32)
		kept = append(kept, o)
	}
	var lastObs *time.Time
	if len(kept) > 0 {
		if _, err := redact.ForTenant(ctx, tx, tenantID, true); err != nil {
			return err
		}
		for _, o := range kept {
			if err := in.one(ctx, tx, tenantID, col, policy, o); err != nil {
				return err
			}
			if lastObs == nil || o.SeenAt.After(*lastObs) {
				t := o.SeenAt
				lastObs = &t
			}
		}
	}
	_, err := tx.Exec(ctx, `
		UPDATE agents SET observations_dropped_by_agent = observations_dropped_by_agent + $2,
		       observations_dropped_by_server = observations_dropped_by_server + $3,
		       last_observation_at = greatest(last_observation_at, $4)
		 WHERE id = $1`, col.AgentID, droppedByAgent, dropped, lastObs)
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// one applies a single observation: record it, find or make its asset,
// decide its authorization, and raise or update its alert.
func (in Ingest) one(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, col Collector, policy Policy, o Observation) error {
	site := *col.SiteID
	assetID, known, err := in.Assets.AssetOfMAC(ctx, tx, o.MAC)
	if err != nil {
		return err
	}
	var asset assets.Asset
	if known {
		if asset, err = in.Assets.Lock(ctx, tx, assetID); err != nil {
			return err
		}
		switch {
		case asset.Source == assets.SourceAgent && asset.AuthState == assets.Authorized:
			// An agent host's own interface seen by a neighbour: the host
			// is known and vouched for by its agent (or a person).
			_, err := in.record(ctx, tx, tenantID, col, site, &asset.ID, o)
			return err
		case asset.Source == assets.SourceAgent:
			// A host whose agent was revoked: its facts keep its
			// addresses; it is judged like any device below.
		default:
			if asset, err = in.Assets.SeenAt(ctx, tx, tenantID, asset, o.IP, o.SeenAt); err != nil {
				return err
			}
		}
	} else {
		asset, err = in.Assets.Discovered(ctx, tx, tenantID, assets.Device{MAC: o.MAC, IP: o.IP, SiteID: site, VendorOUI: oui(o.MAC), SeenAt: o.SeenAt})
		if err != nil {
			return err
		}
	}
	obsID, err := in.record(ctx, tx, tenantID, col, site, &asset.ID, o)
	if err != nil {
		return err
	}
	// Allowlist rules decide unless a person decided.
	if deref(asset.AuthBasis) != assets.BasisManual {
		ip, _ := netip.ParseAddr(o.IP)
		if rule, ok := policy.Match(o.MAC, ip); ok {
			asset, err = in.Assets.SetAuthorization(ctx, tx, tenantID, asset, assets.Change{State: assets.Authorized, Basis: assets.BasisAllowlist, Rule: rule.RuleName()})
		} else if deref(asset.AuthBasis) == assets.BasisAllowlist {
			asset, err = in.Assets.Withdraw(ctx, tx, tenantID, asset, "no allowlist rule matches any more")
		}
		if err != nil {
			return err
		}
	}
	if asset.AuthState == assets.Authorized {
		return nil
	}
	return in.Alerts.Observe(ctx, tx, tenantID, alerts.Sighting{Asset: asset, MAC: o.MAC, IP: o.IP, Interface: o.Interface, State: o.State,
		CollectorID: col.AgentID, ObservationID: obsID, SeenAt: o.SeenAt})
}

// record upserts the observation row of (site, MAC, IP).
func (in Ingest) record(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, col Collector, site uuid.UUID, assetID *uuid.UUID, o Observation) (uuid.UUID, error) {
	var id uuid.UUID
	err := tx.QueryRow(ctx, `
		INSERT INTO observations (tenant_id, id, site_id, collector_id, asset_id, mac, ip, interface, state, first_seen_at, last_seen_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
		ON CONFLICT (tenant_id, site_id, mac, ip) DO UPDATE
		   SET collector_id = EXCLUDED.collector_id, asset_id = EXCLUDED.asset_id, interface = EXCLUDED.interface, state = EXCLUDED.state,
		       last_seen_at = greatest(observations.last_seen_at, EXCLUDED.last_seen_at),
		       seen_count = observations.seen_count + 1
		RETURNING id`,
		tenantID, uuid.Must(uuid.NewV7()), site, col.AgentID, assetID, o.MAC, o.IP, o.Interface, o.State, o.SeenAt).Scan(&id)
	if err != nil {
		return id, fmt.Errorf("record observation: %w", err)
	}
	return id, nil
}

// ClaimHost links an agent host's interface MACs to its asset. Discovered
// assets that held one of them are merged into it, and their open alerts
// are resolved: the device turned out to be an enrolled, authorized host.
func (in Ingest) ClaimHost(ctx context.Context, tx pgx.Tx, tenantID, hostAsset uuid.UUID, macs []string) error {
	var norm []string
	for _, m := range macs {
		if mac, ok := assets.NormalizeMAC(m); ok && mac != "00:00:00:00:00:00" {
			norm = append(norm, mac)
		}
	}
	merged, err := in.Assets.ClaimMACs(ctx, tx, tenantID, hostAsset, norm)
	if err != nil {
		return err
	}
	// The merged devices' alerts, and the host's own (raised while an
	// earlier agent of the machine was revoked), are settled: an agent
	// vouches for the host now.
	for _, id := range append(merged, hostAsset) {
		if err := in.Alerts.ResolveForAsset(ctx, tx, tenantID, id, alerts.ResolvedAuthorized, "the device enrolled as an agent host"); err != nil {
			return err
		}
	}
	return nil
}

// Expire deletes the tenant's observations older than their site's
// retention (tx is a tenant transaction).
func Expire(ctx context.Context, tx pgx.Tx) (int64, error) {
	tag, err := tx.Exec(ctx, `
		DELETE FROM observations o USING discovery_policies p
		 WHERE p.tenant_id = o.tenant_id AND p.site_id = o.site_id
		   AND o.last_seen_at < now() - make_interval(days => p.observation_retention_days)`)
	if err != nil {
		return 0, fmt.Errorf("expire observations: %w", err)
	}
	return tag.RowsAffected(), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
