package assets

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
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
	if has, err := page.Decode(req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		f.After = &cur
	}
	var list []Asset
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		list, err = a.Store.List(ctx, tx, f)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, f.Limit)
	out := api.ListAssets200JSONResponse{Items: make([]api.Asset, 0, len(list))}
	for _, x := range list {
		out.Items = append(out.Items, x.ToAPI())
	}
	if more {
		last := list[len(list)-1]
		out.NextCursor = page.Encode(Cursor{LastSeen: last.LastSeenAt, ID: last.ID})
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
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		x, err = a.Store.Get(ctx, tx, req.AssetId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetAsset200JSONResponse(x.ToAPI()), nil
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
	if has, err := page.Decode(req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		before = &cur.ID
	}
	var entries []TimelineEntry
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if _, err := a.Store.Get(ctx, tx, req.AssetId); err != nil {
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
		d := e.Details
		if d == nil {
			d = map[string]any{}
		}
		out.Items = append(out.Items, api.AssetTimelineEntry{Id: e.ID, At: e.At, Kind: e.Kind, Summary: e.Summary, Details: d})
	}
	if more {
		out.NextCursor = page.Encode(timelineCursor{ID: entries[len(entries)-1].ID})
	}
	return out, nil
}

// ToAPI is the REST form of an asset.
func (x Asset) ToAPI() api.Asset {
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
	return out
}
