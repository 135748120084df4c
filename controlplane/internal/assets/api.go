package assets

import (
	"context"
	"net/http"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// API serves the asset operations of specs/openapi.yaml.
type API struct {
	Pool  *pgxpool.Pool
	Store Store
}

// ListAssets implements GET /api/v1/assets.
func (a *API) ListAssets(ctx context.Context, req api.ListAssetsRequestObject) (api.ListAssetsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	f := Filter{Limit: page.Limit(req.Params.Limit)}
	if req.Params.Source != nil {
		f.Source = string(*req.Params.Source)
	}
	if req.Params.Q != nil {
		if !redact.SeesIdentifiers(c.Role) {
			// A search over identifiers would tell, by what it finds, whether
			// a MAC or an address the reader cannot see exists.
			return nil, problem.Newf(http.StatusForbidden, problem.CodeForbidden,
				"the %s role sees MACs and addresses redacted, so it may not search them with q; filter by source, authorization, site_id or seen_since instead", c.Role)
		}
		f.Query = *req.Params.Q
	}
	if req.Params.Authorization != nil {
		f.Authorization = string(*req.Params.Authorization)
	}
	f.SiteID = req.Params.SiteId
	if req.Params.SeenSince != nil {
		f.SeenSince = *req.Params.SeenSince
	}
	if req.Params.SeenBefore != nil {
		f.SeenBefore = *req.Params.SeenBefore
	}
	var cur Cursor
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		f.After = &cur
	}
	var list []Asset
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		list, err = a.Store.List(ctx, tx, f)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, f.Limit)
	out := api.ListAssets200JSONResponse{Items: make([]api.Asset, 0, len(list))}
	for _, x := range list {
		out.Items = append(out.Items, x.ToAPI(red))
	}
	if more {
		last := list[len(list)-1]
		out.NextCursor = page.Encode(ctx, Cursor{LastSeen: last.LastSeenAt, ID: last.ID})
	}
	return out, nil
}

// GetAsset implements GET /api/v1/assets/{asset_id}.
func (a *API) GetAsset(ctx context.Context, req api.GetAssetRequestObject) (api.GetAssetResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var x Asset
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		x, err = a.Store.Get(ctx, tx, req.AssetId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetAsset200JSONResponse(x.ToAPI(red)), nil
}

type timelineCursor struct {
	ID uuid.UUID `json:"i"`
}

// GetAssetTimeline implements GET /api/v1/assets/{asset_id}/timeline.
func (a *API) GetAssetTimeline(ctx context.Context, req api.GetAssetTimelineRequestObject) (api.GetAssetTimelineResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	var cur timelineCursor
	var before *uuid.UUID
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		before = &cur.ID
	}
	var entries []TimelineEntry
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if _, err := a.Store.Get(ctx, tx, req.AssetId); err != nil {
			return err
		}
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		entries, err = a.Store.Timeline(ctx, tx, req.AssetId, before, limit)
		return err
	}); err != nil {
		return nil, err
	}
	entries, more := page.Trim(entries, limit)
	out := api.GetAssetTimeline200JSONResponse{Items: make([]api.AssetTimelineEntry, 0, len(entries))}
	for _, e := range entries {
		out.Items = append(out.Items, e.toAPI(red))
	}
	if more {
		out.NextCursor = page.Encode(ctx, timelineCursor{ID: entries[len(entries)-1].ID})
	}
	return out, nil
}

func (e TimelineEntry) toAPI(red *redact.Redactor) api.AssetTimelineEntry {
	out := api.AssetTimelineEntry{Id: e.ID, At: e.At, Kind: e.Kind, Summary: e.Summary, Details: e.Details}
	if red != nil {
		out.Summary, out.Details, out.Redacted = red.Text(e.Summary), red.Details(e.Details), true
	}
	if out.Details == nil {
		out.Details = map[string]any{}
	}
	return out
}

// ToAPI is the REST form of an asset. With a Redactor (a reader who does
// not see identifiers) its MACs and addresses are masked, wherever they
// appear, and a discovered device is named after its masked MAC.
func (x Asset) ToAPI(red *redact.Redactor) api.Asset {
	out := api.Asset{
		Id: x.ID, Name: x.Name, Source: api.AssetSource(x.Source), MachineId: x.MachineID, Os: x.OS, Platform: x.Platform,
		AgentId: x.AgentID, SiteId: x.SiteID, VendorOui: x.VendorOUI, Addresses: nonNil(x.Addresses), Macs: nonNil(x.MACs),
		FirstSeenAt: x.FirstSeenAt, LastSeenAt: x.LastSeenAt,
	}
	out.Authorization.State = api.AuthorizationState(x.AuthState)
	out.Authorization.ChangedAt = x.AuthChangedAt
	out.Authorization.Rule = x.AuthRule
	if x.AuthBasis != nil {
		b := api.AssetAuthorizationBasis(*x.AuthBasis)
		out.Authorization.Basis = &b
	}
	if red == nil {
		return out
	}
	out.Redacted = true
	out.Addresses, out.Macs = each(out.Addresses, red.IP), each(out.Macs, red.MAC)
	if x.Source == SourceDiscovery && len(x.MACs) > 0 {
		out.Name = discoveredName(red.MAC(x.MACs[0]))
	} else {
		out.Name = red.Text(x.Name)
	}
	if x.AuthRule != nil {
		rule := red.Text(*x.AuthRule)
		out.Authorization.Rule = &rule
	}
	return out
}

func each(v []string, f func(string) string) []string {
	out := make([]string, len(v))
	for i, s := range v {
		out[i] = f(s)
	}
	return out
}
