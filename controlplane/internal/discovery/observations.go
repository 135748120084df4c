package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

type observation struct {
	ID          uuid.UUID
	SiteID      uuid.UUID
	CollectorID uuid.UUID
	AssetID     *uuid.UUID
	MAC         string
	IP          netip.Addr
	Interface   string
	State       string
	FirstSeenAt time.Time
	LastSeenAt  time.Time
	SeenCount   int64
}

func (o observation) toAPI(r redact.Redactor, redacted bool) api.Observation {
	out := api.Observation{Id: o.ID, SiteId: o.SiteID, CollectorId: o.CollectorID, AssetId: o.AssetID, Mac: o.MAC, Ip: o.IP.String(),
		Interface: o.Interface, State: o.State, FirstSeenAt: o.FirstSeenAt.UTC(), LastSeenAt: o.LastSeenAt.UTC(), SeenCount: o.SeenCount,
		Redacted: redacted, SubjectHash: r.Hash(o.MAC)}
	if redacted {
		out.Mac, out.Ip = r.MAC(o.MAC), r.IP(o.IP.String())
	}
	return out
}

// ListObservations implements GET /api/v1/discovery/observations.
func (a *API) ListObservations(ctx context.Context, req api.ListObservationsRequestObject) (api.ListObservationsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	q := `SELECT id, site_id, collector_id, asset_id, mac, ip, interface, state, first_seen_at, last_seen_at, seen_count FROM observations WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if req.Params.SiteId != nil {
		q += " AND site_id = " + arg(*req.Params.SiteId)
	}
	if req.Params.AssetId != nil {
		q += " AND asset_id = " + arg(*req.Params.AssetId)
	}
	var cur struct {
		At time.Time `json:"t"`
		ID uuid.UUID `json:"i"`
	}
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		q += fmt.Sprintf(" AND (last_seen_at, id) < (%s, %s)", arg(cur.At), arg(cur.ID))
	}
	q += " ORDER BY last_seen_at DESC, id DESC LIMIT " + arg(limit+1)
	var list []observation
	var red redact.Redactor
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForTenant(ctx, tx, c.TenantID, false); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (observation, error) {
			var o observation
			return o, r.Scan(&o.ID, &o.SiteID, &o.CollectorID, &o.AssetID, &o.MAC, &o.IP, &o.Interface, &o.State, &o.FirstSeenAt, &o.LastSeenAt, &o.SeenCount)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	redacted := !redact.SeesIdentifiers(c.Role)
	out := api.ListObservations200JSONResponse{Items: make([]api.Observation, 0, len(list))}
	for _, o := range list {
		out.Items = append(out.Items, o.toAPI(red, redacted))
	}
	if more {
		last := list[len(list)-1]
		cur.At, cur.ID = last.LastSeenAt, last.ID
		out.NextCursor = page.Encode(ctx, cur)
	}
	return out, nil
}

// GetDiscoveryStatus implements GET /api/v1/discovery/status.
func (a *API) GetDiscoveryStatus(ctx context.Context, _ api.GetDiscoveryStatusRequestObject) (api.GetDiscoveryStatusResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	out := api.GetDiscoveryStatus200JSONResponse{Sites: []api.SiteDiscoveryStatus{}}
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT s.id, s.name, p.version, 'passive_neighbor' = ANY (p.allowed_methods),
			       (SELECT count(*) FROM agents a WHERE a.site_id = s.id AND a.revoked_at IS NULL
			           AND a.last_seen_at > now() - make_interval(secs => 3 * a.heartbeat_interval_seconds)),
			       (SELECT max(o.last_seen_at) FROM observations o WHERE o.site_id = s.id),
			       (SELECT count(*) FROM observations o WHERE o.site_id = s.id),
			       (SELECT count(*) FROM observations o WHERE o.site_id = s.id AND o.last_seen_at > now() - interval '24 hours'),
			       (SELECT coalesce(sum(a.observations_dropped_by_server), 0) FROM agents a WHERE a.site_id = s.id),
			       (SELECT count(*) FROM assets x WHERE x.site_id = s.id AND x.source = 'discovery' AND x.merged_into IS NULL)
			  FROM sites s JOIN discovery_policies p ON p.tenant_id = s.tenant_id AND p.site_id = s.id
			 ORDER BY lower(s.name), s.id`)
		if err != nil {
			return err
		}
		out.Sites, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (api.SiteDiscoveryStatus, error) {
			var s api.SiteDiscoveryStatus
			err := r.Scan(&s.SiteId, &s.SiteName, &s.PolicyVersion, &s.PassiveNeighborAllowed, &s.ActiveCollectors, &s.LastObservationAt,
				&s.ObservationsTotal, &s.ObservationsLast24h, &s.DroppedOutsidePolicy, &s.DiscoveredAssets)
			if s.LastObservationAt != nil {
				t := s.LastObservationAt.UTC()
				s.LastObservationAt = &t
			}
			return s, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	if out.Sites == nil {
		out.Sites = []api.SiteDiscoveryStatus{}
	}
	return out, nil
}

const collectorQuery = `
	SELECT a.id, a.hostname, a.site_id,
	       CASE WHEN a.revoked_at IS NOT NULL THEN 'revoked'
	            WHEN coalesce(a.last_seen_at, a.enrolled_at) < now() - make_interval(secs => 3 * a.heartbeat_interval_seconds) THEN 'stale'
	            ELSE 'active' END,
	       a.revoked_at IS NULL AND 'passive_neighbor' = ANY (p.allowed_methods)
	           AND (cardinality(p.collector_agent_ids) = 0 OR a.id = ANY (p.collector_agent_ids)),
	       a.last_seen_at, a.last_observation_at,
	       (SELECT count(*) FROM observations o WHERE o.collector_id = a.id AND o.last_seen_at > now() - interval '1 hour'),
	       a.observations_dropped_by_agent, a.observations_dropped_by_server
	  FROM agents a JOIN discovery_policies p ON p.tenant_id = a.tenant_id AND p.site_id = a.site_id`

func scanCollector(r pgx.Row) (api.Collector, error) {
	var c api.Collector
	var status string
	err := r.Scan(&c.Id, &c.Hostname, &c.SiteId, &status, &c.Observing, &c.LastReportAt, &c.LastObservationAt,
		&c.ObservationsLastHour, &c.DroppedOutsidePolicyByAgent, &c.DroppedOutsidePolicyByServer)
	c.Status = api.AgentStatus(status)
	for _, t := range []**time.Time{&c.LastReportAt, &c.LastObservationAt} {
		if *t != nil {
			u := (**t).UTC()
			*t = &u
		}
	}
	return c, err
}

// ListCollectors implements GET /api/v1/collectors.
func (a *API) ListCollectors(ctx context.Context, req api.ListCollectorsRequestObject) (api.ListCollectorsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	q := collectorQuery + ` WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if req.Params.SiteId != nil {
		q += " AND a.site_id = " + arg(*req.Params.SiteId)
	}
	var cur idCursor
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		q += " AND a.id < " + arg(cur.ID)
	}
	q += " ORDER BY a.id DESC LIMIT " + arg(limit+1)
	var list []api.Collector
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (api.Collector, error) { return scanCollector(r) })
		return err
	})
	if err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListCollectors200JSONResponse{Items: list}
	if out.Items == nil {
		out.Items = []api.Collector{}
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].Id})
	}
	return out, nil
}

// GetCollector implements GET /api/v1/collectors/{collector_id}.
func (a *API) GetCollector(ctx context.Context, req api.GetCollectorRequestObject) (api.GetCollectorResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var out api.Collector
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		out, err = scanCollector(tx.QueryRow(ctx, collectorQuery+` WHERE a.id = $1`, req.CollectorId))
		if errors.Is(err, pgx.ErrNoRows) {
			return problem.NotFound("collector")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return api.GetCollector200JSONResponse(out), nil
}
