package auth

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
)

// API serves the identity and API token operations of specs/openapi.yaml.
type API struct {
	Pool  *pgxpool.Pool
	Index *api.Index
	Now   func() time.Time
}

func (a *API) now() time.Time { return nowFrom(a.Now) }

// GetMe implements GET /api/v1/me.
func (a *API) GetMe(ctx context.Context, _ api.GetMeRequestObject) (api.GetMeResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	allowed := a.Index.AllowedFor(c.Role)
	if allowed == nil {
		allowed = []string{}
	}
	return api.GetMe200JSONResponse{
		TenantId:          c.TenantID,
		TenantName:        c.TenantName,
		PrincipalId:       c.PrincipalID,
		PrincipalName:     c.PrincipalName,
		PrincipalKind:     api.PrincipalKind(c.PrincipalKind),
		Role:              api.Role(c.Role),
		TokenId:           c.TokenID,
		TokenName:         c.TokenName,
		TokenExpiresAt:    c.TokenExpiresAt,
		AllowedOperations: allowed,
	}, nil
}

type tokenCursor struct {
	ID uuid.UUID `json:"i"`
}

// ListApiTokens implements GET /api/v1/api-tokens.
func (a *API) ListApiTokens(ctx context.Context, req api.ListApiTokensRequestObject) (api.ListApiTokensResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	f := TokenFilter{Limit: page.Limit(req.Params.Limit), PrincipalID: req.Params.PrincipalId}
	if req.Params.Status != nil {
		f.Status = string(*req.Params.Status)
	}
	var cur tokenCursor
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		f.BeforeID = &cur.ID
	}
	var tokens []Token
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		tokens, err = ListTokens(ctx, tx, f)
		return err
	}); err != nil {
		return nil, err
	}
	tokens, more := page.Trim(tokens, f.Limit)
	now := a.now()
	out := api.ListApiTokens200JSONResponse{Items: make([]api.ApiToken, 0, len(tokens))}
	for _, t := range tokens {
		out.Items = append(out.Items, t.toAPI(now))
	}
	if more {
		out.NextCursor = page.Encode(ctx, tokenCursor{ID: tokens[len(tokens)-1].ID})
	}
	return out, nil
}

// CreateApiToken implements POST /api/v1/api-tokens.
func (a *API) CreateApiToken(ctx context.Context, req api.CreateApiTokenRequestObject) (api.CreateApiTokenResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	spec := TokenSpec{Name: req.Body.Name, Role: string(req.Body.Role), PrincipalID: req.Body.PrincipalId, CreatedBy: &c.PrincipalID}
	if req.Body.ExpiresAt != nil {
		spec.ExpiresAt = *req.Body.ExpiresAt
	}
	var issued IssuedToken
	now := a.now()
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		issued, err = IssueToken(ctx, tx, c.TenantID, spec, now)
		return err
	}); err != nil {
		return nil, err
	}
	t := issued.toAPI(now)
	return api.CreateApiToken201JSONResponse{
		Id: t.Id, Name: t.Name, Role: t.Role, PrincipalId: t.PrincipalId, PrincipalName: t.PrincipalName,
		Status: t.Status, CreatedAt: t.CreatedAt, CreatedBy: t.CreatedBy, ExpiresAt: t.ExpiresAt,
		LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt, Token: issued.Secret,
	}, nil
}

// GetApiToken implements GET /api/v1/api-tokens/{token_id}.
func (a *API) GetApiToken(ctx context.Context, req api.GetApiTokenRequestObject) (api.GetApiTokenResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var t Token
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		t, err = GetToken(ctx, tx, req.TokenId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetApiToken200JSONResponse(t.toAPI(a.now())), nil
}

// RevokeApiToken implements DELETE /api/v1/api-tokens/{token_id}.
func (a *API) RevokeApiToken(ctx context.Context, req api.RevokeApiTokenRequestObject) (api.RevokeApiTokenResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		return RevokeToken(ctx, tx, c.TenantID, req.TokenId, &c.PrincipalID)
	}); err != nil {
		return nil, err
	}
	return api.RevokeApiToken204Response{}, nil
}

func (t Token) toAPI(now time.Time) api.ApiToken {
	var createdBy *string
	if t.CreatedBy != nil {
		s := t.CreatedBy.String()
		createdBy = &s
	}
	return api.ApiToken{
		Id:            t.ID,
		Name:          t.Name,
		Role:          api.Role(t.Role),
		PrincipalId:   t.PrincipalID,
		PrincipalName: t.PrincipalName,
		Status:        api.ApiTokenStatus(t.Status(now)),
		CreatedAt:     t.CreatedAt,
		CreatedBy:     createdBy,
		ExpiresAt:     t.ExpiresAt,
		LastUsedAt:    t.LastUsedAt,
		RevokedAt:     t.RevokedAt,
	}
}
