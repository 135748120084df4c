package compliance

import (
	"context"
	"encoding/hex"
	"net/http"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/etag"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// API serves the compliance operations of specs/openapi.yaml.
type API struct {
	Pool   *pgxpool.Pool
	Runner *Runner
}

// ListComplianceFrameworks implements GET /api/v1/compliance/frameworks.
func (a *API) ListComplianceFrameworks(ctx context.Context, _ api.ListComplianceFrameworksRequestObject) (api.ListComplianceFrameworksResponseObject, error) {
	var list []Framework
	var version string
	if err := caller.InTenant(ctx, a.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
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
	if has, err := page.Decode(ctx, p.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		if !page.ValidInt32(cur.S) {
			return nil, page.InvalidCursor()
		}
		f.AfterFramework, f.AfterSort = cur.F, cur.S
	}
	var list []Control
	var red *redact.Redactor
	if err := caller.InTenant(ctx, a.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		if list, err = Controls(ctx, tx, f); err != nil {
			return err
		}
		red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, f.Limit)
	out := api.ListComplianceControls200JSONResponse{Items: make([]api.ComplianceControl, 0, len(list))}
	for _, c := range list {
		out.Items = append(out.Items, c.toAPI(red))
	}
	if more {
		last := list[len(list)-1]
		out.NextCursor = page.Encode(ctx, controlCursor{F: last.Framework, S: last.Sort})
	}
	return out, nil
}

// GetComplianceControl implements GET /api/v1/compliance/controls/{control_id}.
func (a *API) GetComplianceControl(ctx context.Context, req api.GetComplianceControlRequestObject) (api.GetComplianceControlResponseObject, error) {
	var d api.ComplianceControlDetail
	if err := caller.InTenant(ctx, a.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		red, err := redact.ForReader(ctx, tx, c.TenantID, c.Role)
		if err != nil {
			return err
		}
		id, err := ResolveControl(ctx, tx, req.ControlId)
		if err != nil {
			return err
		}
		d, err = detail(ctx, tx, id, red)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetComplianceControl200JSONResponse(d), nil
}

// MarkControlNotApplicable implements POST /api/v1/compliance/controls/{control_id}/not-applicable.
func (a *API) MarkControlNotApplicable(ctx context.Context, req api.MarkControlNotApplicableRequestObject) (api.MarkControlNotApplicableResponseObject, error) {
	var d api.ComplianceControlDetail
	if err := caller.InTenant(ctx, a.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		id, err := ResolveControl(ctx, tx, req.ControlId)
		if err != nil {
			return err
		}
		if err = MarkNotApplicable(ctx, tx, c.TenantID, id, req.Body.Justification); err != nil {
			return err
		}
		d, err = detail(ctx, tx, id, nil)
		return err
	}); err != nil {
		return nil, err
	}
	return api.MarkControlNotApplicable200JSONResponse(d), nil
}

// ClearControlNotApplicable implements DELETE /api/v1/compliance/controls/{control_id}/not-applicable.
func (a *API) ClearControlNotApplicable(ctx context.Context, req api.ClearControlNotApplicableRequestObject) (api.ClearControlNotApplicableResponseObject, error) {
	var d api.ComplianceControlDetail
	if err := caller.InTenant(ctx, a.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		id, err := ResolveControl(ctx, tx, req.ControlId)
		if err != nil {
			return err
		}
		if err = ClearNotApplicable(ctx, tx, c.TenantID, id); err != nil {
			return err
		}
		if slices.Contains(EvaluatedControls(), id) {
			if err = a.Runner.Queue(ctx, tx, c.TenantID); err != nil {
				return err
			}
		}
		d, err = detail(ctx, tx, id, nil)
		return err
	}); err != nil {
		return nil, err
	}
	return api.ClearControlNotApplicable200JSONResponse(d), nil
}

// detail assembles a control's definition, status, evidence references and
// mappings, as red (nil for roles that see identifiers) shows them.
func detail(ctx context.Context, tx pgx.Tx, id string, red *redact.Redactor) (api.ComplianceControlDetail, error) {
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
	out := api.ComplianceControlDetail{Control: c.toAPI(red), EvaluatedByEdgeward: slices.Contains(EvaluatedControls(), id),
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

// toAPI is the REST form of a control. With a Redactor (a reader who does
// not see identifiers) the MACs and addresses in its status's text are
// masked: a justification is an admin's free text.
func (c Control) toAPI(red *redact.Redactor) api.ComplianceControl {
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
	if red != nil {
		for _, text := range []**string{&out.Status.Reason, &out.Status.Justification} {
			if *text != nil {
				masked := red.Text(**text)
				*text = &masked
			}
		}
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// policyRef is a policy id: a baseline's slug or a managed copy's UUID.
func policyRef(id string) (uuid.UUID, *Baseline, error) {
	if b := baseline(id); b != nil {
		return uuid.Nil, b, nil
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return uuid.Nil, nil, problem.NotFound("compliance policy")
	}
	return u, nil, nil
}

func baselineToAPI(b *Baseline) api.CompliancePolicy {
	return api.CompliancePolicy{Id: b.ID, Kind: api.Baseline, BaselineId: b.ID, Name: b.Name,
		Description: b.Description, Parameters: b.Defaults, ParametersSchema: b.schemaMap(), Controls: b.Controls, Version: 1}
}

func (p Policy) toAPI() api.CompliancePolicy {
	b := baseline(p.BaselineID)
	out := api.CompliancePolicy{Id: p.ID.String(), Kind: api.Tenant, BaselineId: p.BaselineID, Name: p.Name,
		Parameters: p.Parameters, Version: p.Version, CreatedAt: api.UTC(&p.CreatedAt), UpdatedAt: api.UTC(&p.UpdatedAt),
		Controls: []string{}, ParametersSchema: map[string]any{}}
	if b != nil {
		out.Description, out.Controls, out.ParametersSchema = b.Description, b.Controls, b.schemaMap()
	}
	return out
}

func (p Policy) etag() *string {
	s := etag.Of(p.Version)
	return &s
}

// ListCompliancePolicies implements GET /api/v1/compliance/policies.
func (a *API) ListCompliancePolicies(ctx context.Context, _ api.ListCompliancePoliciesRequestObject) (api.ListCompliancePoliciesResponseObject, error) {
	var list []Policy
	if err := caller.InTenant(ctx, a.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
		list, err = Policies(ctx, tx)
		return err
	}); err != nil {
		return nil, err
	}
	out := api.ListCompliancePolicies200JSONResponse{Items: make([]api.CompliancePolicy, 0, len(Baselines)+len(list))}
	for _, b := range Baselines {
		out.Items = append(out.Items, baselineToAPI(b))
	}
	for _, p := range list {
		out.Items = append(out.Items, p.toAPI())
	}
	return out, nil
}

// GetCompliancePolicy implements GET /api/v1/compliance/policies/{policy_id}.
func (a *API) GetCompliancePolicy(ctx context.Context, req api.GetCompliancePolicyRequestObject) (api.GetCompliancePolicyResponseObject, error) {
	id, b, err := policyRef(req.PolicyId)
	if err != nil {
		return nil, err
	}
	if b != nil {
		return api.GetCompliancePolicy200JSONResponse{Body: baselineToAPI(b), Headers: api.GetCompliancePolicy200ResponseHeaders{ETag: Policy{Version: 1}.etag()}}, nil
	}
	var p Policy
	if err := caller.InTenant(ctx, a.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
		p, err = GetPolicy(ctx, tx, id)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetCompliancePolicy200JSONResponse{Body: p.toAPI(), Headers: api.GetCompliancePolicy200ResponseHeaders{ETag: p.etag()}}, nil
}

// ForkCompliancePolicy implements POST /api/v1/compliance/policies/{policy_id}/fork.
func (a *API) ForkCompliancePolicy(ctx context.Context, req api.ForkCompliancePolicyRequestObject) (api.ForkCompliancePolicyResponseObject, error) {
	_, b, err := policyRef(req.PolicyId)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, problem.New(http.StatusConflict, "not_a_baseline", "only a baseline policy can be forked; this is already a managed copy")
	}
	name := ""
	if req.Body != nil && req.Body.Name != nil {
		name = *req.Body.Name
	}
	var p Policy
	if err := caller.InTenant(ctx, a.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		p, err = Fork(ctx, tx, c.TenantID, b.ID, name)
		return err
	}); err != nil {
		return nil, err
	}
	return api.ForkCompliancePolicy201JSONResponse{Body: p.toAPI(), Headers: api.ForkCompliancePolicy201ResponseHeaders{ETag: p.etag()}}, nil
}

// UpdateCompliancePolicy implements PUT /api/v1/compliance/policies/{policy_id}.
func (a *API) UpdateCompliancePolicy(ctx context.Context, req api.UpdateCompliancePolicyRequestObject) (api.UpdateCompliancePolicyResponseObject, error) {
	id, b, err := policyRef(req.PolicyId)
	if err != nil {
		return nil, err
	}
	if b != nil {
		return nil, problem.New(http.StatusConflict, "baseline_immutable",
			"baseline policies are shipped and cannot be changed; fork it (POST .../fork) and change the copy")
	}
	var p Policy
	if err := caller.InTenant(ctx, a.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		p, err = UpdatePolicy(ctx, tx, c.TenantID, id, req.Params.IfMatch, req.Body.Name, req.Body.Parameters)
		return err
	}); err != nil {
		return nil, err
	}
	return api.UpdateCompliancePolicy200JSONResponse{Body: p.toAPI(), Headers: api.UpdateCompliancePolicy200ResponseHeaders{ETag: p.etag()}}, nil
}

type versionCursor struct {
	V int `json:"v"`
}

// ListCompliancePolicyVersions implements GET /api/v1/compliance/policies/{policy_id}/versions.
func (a *API) ListCompliancePolicyVersions(ctx context.Context, req api.ListCompliancePolicyVersionsRequestObject) (api.ListCompliancePolicyVersionsResponseObject, error) {
	id, b, err := policyRef(req.PolicyId)
	if err != nil {
		return nil, err
	}
	if b != nil {
		return nil, problem.Newf(http.StatusNotFound, problem.CodeNotFound, "a baseline policy has no versions; its managed copy does")
	}
	limit := page.Limit(req.Params.Limit)
	var cur versionCursor
	if _, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	}
	if !page.ValidInt32(cur.V) {
		return nil, page.InvalidCursor()
	}
	var list []PolicyVersion
	if err := caller.InTenant(ctx, a.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
		list, err = PolicyVersions(ctx, tx, id, cur.V, limit)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListCompliancePolicyVersions200JSONResponse{Items: make([]api.CompliancePolicyVersion, 0, len(list))}
	for _, v := range list {
		out.Items = append(out.Items, v.toAPI())
	}
	if more {
		out.NextCursor = page.Encode(ctx, versionCursor{V: list[len(list)-1].Version})
	}
	return out, nil
}

// GetCompliancePolicyVersion implements GET /api/v1/compliance/policies/{policy_id}/versions/{version}.
func (a *API) GetCompliancePolicyVersion(ctx context.Context, req api.GetCompliancePolicyVersionRequestObject) (api.GetCompliancePolicyVersionResponseObject, error) {
	id, b, err := policyRef(req.PolicyId)
	if err != nil {
		return nil, err
	}
	if b != nil {
		return nil, problem.Newf(http.StatusNotFound, problem.CodeNotFound, "a baseline policy has no versions; its managed copy does")
	}
	var list []PolicyVersion
	if err := caller.InTenant(ctx, a.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
		list, err = PolicyVersions(ctx, tx, id, req.Version-1, 1)
		return err
	}); err != nil {
		return nil, err
	}
	if len(list) == 0 || list[0].Version != req.Version {
		return nil, problem.NotFound("policy version")
	}
	return api.GetCompliancePolicyVersion200JSONResponse(list[0].toAPI()), nil
}

func (v PolicyVersion) toAPI() api.CompliancePolicyVersion {
	return api.CompliancePolicyVersion{PolicyId: v.PolicyID, Version: v.Version, Change: api.CompliancePolicyVersionChange(v.Change),
		Name: v.Name, Parameters: v.Parameters, ChangedAt: v.ChangedAt.UTC(), ChangedBy: v.ChangedBy}
}
