package compliance

import (
	"context"
	"encoding/hex"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/page"
)

// API serves the compliance operations of specs/openapi.yaml.
type API struct {
	Pool   *pgxpool.Pool
	Runner *Runner
}

func (a *API) inTenant(ctx context.Context, fn func(c caller.Caller, tx pgx.Tx) error) error {
	c, err := caller.Require(ctx)
	if err != nil {
		return err
	}
	return db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error { return fn(c, tx) })
}

// ListComplianceFrameworks implements GET /api/v1/compliance/frameworks.
func (a *API) ListComplianceFrameworks(ctx context.Context, _ api.ListComplianceFrameworksRequestObject) (api.ListComplianceFrameworksResponseObject, error) {
	var list []Framework
	var version string
	if err := a.inTenant(ctx, func(_ caller.Caller, tx pgx.Tx) (err error) {
		if version, err = CatalogVersion(ctx, tx); err != nil {
			return err
		}
		list, err = Frameworks(ctx, tx)
		return err
	}); err != nil {
		return nil, err
	}
	out := api.ListComplianceFrameworks200JSONResponse{CatalogVersion: version, Items: make([]api.ComplianceFramework, 0, len(list))}
	for _, f := range list {
		out.Items = append(out.Items, api.ComplianceFramework{Id: f.ID, Name: f.Name, Version: f.Version, Publisher: f.Publisher,
			Url: f.URL, License: f.License, ControlCount: f.Controls})
	}
	return out, nil
}

type controlCursor struct {
	F string `json:"f"`
	S int    `json:"s"`
}

// ListComplianceControls implements GET /api/v1/compliance/controls.
func (a *API) ListComplianceControls(ctx context.Context, req api.ListComplianceControlsRequestObject) (api.ListComplianceControlsResponseObject, error) {
	p := req.Params
	f := Filter{Limit: page.Limit(p.Limit), Framework: deref(p.Framework), Family: deref(p.Family), Query: deref(p.Q)}
	if p.Status != nil {
		f.Status = string(*p.Status)
	}
	var cur controlCursor
	if has, err := page.Decode(p.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		f.AfterFramework, f.AfterSort = cur.F, cur.S
	}
	var list []Control
	if err := a.inTenant(ctx, func(_ caller.Caller, tx pgx.Tx) (err error) {
		list, err = Controls(ctx, tx, f)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, f.Limit)
	out := api.ListComplianceControls200JSONResponse{Items: make([]api.ComplianceControl, 0, len(list))}
	for _, c := range list {
		out.Items = append(out.Items, c.toAPI())
	}
	if more {
		last := list[len(list)-1]
		out.NextCursor = page.Encode(controlCursor{F: last.Framework, S: last.Sort})
	}
	return out, nil
}

// GetComplianceControl implements GET /api/v1/compliance/controls/{control_id}.
func (a *API) GetComplianceControl(ctx context.Context, req api.GetComplianceControlRequestObject) (api.GetComplianceControlResponseObject, error) {
	var d api.ComplianceControlDetail
	if err := a.inTenant(ctx, func(_ caller.Caller, tx pgx.Tx) (err error) {
		d, err = detail(ctx, tx, req.ControlId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetComplianceControl200JSONResponse(d), nil
}

// MarkControlNotApplicable implements POST /api/v1/compliance/controls/{control_id}/not-applicable.
func (a *API) MarkControlNotApplicable(ctx context.Context, req api.MarkControlNotApplicableRequestObject) (api.MarkControlNotApplicableResponseObject, error) {
	var d api.ComplianceControlDetail
	if err := a.inTenant(ctx, func(c caller.Caller, tx pgx.Tx) (err error) {
		if err = MarkNotApplicable(ctx, tx, c.TenantID, req.ControlId, req.Body.Justification); err != nil {
			return err
		}
		d, err = detail(ctx, tx, req.ControlId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.MarkControlNotApplicable200JSONResponse(d), nil
}

// ClearControlNotApplicable implements DELETE /api/v1/compliance/controls/{control_id}/not-applicable.
func (a *API) ClearControlNotApplicable(ctx context.Context, req api.ClearControlNotApplicableRequestObject) (api.ClearControlNotApplicableResponseObject, error) {
	var d api.ComplianceControlDetail
	if err := a.inTenant(ctx, func(c caller.Caller, tx pgx.Tx) (err error) {
		if err = ClearNotApplicable(ctx, tx, c.TenantID, req.ControlId); err != nil {
			return err
		}
		if slices.Contains(EvaluatedControls(), req.ControlId) {
			if err = a.Runner.Queue(ctx, tx, c.TenantID); err != nil {
				return err
			}
		}
		d, err = detail(ctx, tx, req.ControlId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.ClearControlNotApplicable200JSONResponse(d), nil
}

// detail assembles a control's definition, status, evidence references and
// mappings.
func detail(ctx context.Context, tx pgx.Tx, id string) (api.ComplianceControlDetail, error) {
	c, err := GetControl(ctx, tx, id)
	if err != nil {
		return api.ComplianceControlDetail{}, err
	}
	refs, err := ControlEvidence(ctx, tx, id)
	if err != nil {
		return api.ComplianceControlDetail{}, err
	}
	maps, err := ControlMappings(ctx, tx, id)
	if err != nil {
		return api.ComplianceControlDetail{}, err
	}
	out := api.ComplianceControlDetail{Control: c.toAPI(), EvaluatedByEdgeward: slices.Contains(EvaluatedControls(), id),
		Evidence: make([]api.ControlEvidenceRef, 0, len(refs)), Mappings: make([]api.ControlMapping, 0, len(maps))}
	for _, r := range refs {
		out.Evidence = append(out.Evidence, api.ControlEvidenceRef{EvidenceId: r.ID, Role: api.ControlEvidenceRefRole(r.Role),
			Kind: api.EvidenceKind(r.Kind), ContentSha256: hex.EncodeToString(r.SHA256), CreatedAt: r.CreatedAt.UTC(), LinkedAt: r.LinkedAt.UTC()})
	}
	for _, m := range maps {
		out.Mappings = append(out.Mappings, api.ControlMapping{ControlId: m.ControlID, FrameworkId: m.Framework, Label: m.Label,
			Title: m.Title, Source: m.Source})
	}
	return out, nil
}

func (c Control) toAPI() api.ComplianceControl {
	out := api.ComplianceControl{Id: c.ID, FrameworkId: c.Framework, Key: c.Key, Label: c.Label, Title: c.Title, Family: c.Family,
		FamilyTitle: c.FamilyTitle, ParentId: c.ParentID, Withdrawn: c.Withdrawn, Baselines: c.Baselines,
		Status: api.ControlStatus{Status: api.ControlStatusValue(c.Status.Status), Evaluator: c.Status.Evaluator,
			Reason: c.Status.Reason, EvaluatedAt: api.UTC(c.Status.EvaluatedAt), ChangedAt: api.UTC(c.Status.ChangedAt),
			Justification: c.Status.Justification}}
	if out.Baselines == nil {
		out.Baselines = []string{}
	}
	if c.URL != "" {
		u := c.URL
		out.Url = &u
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
