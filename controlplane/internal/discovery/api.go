package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/etag"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// API serves the discovery operations of specs/openapi.yaml.
type API struct {
	Pool *pgxpool.Pool
}

// --- sites ---

type site struct {
	ID          uuid.UUID
	Name        string
	Description *string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

func (s site) toAPI() api.Site {
	return api.Site{Id: s.ID, Name: s.Name, Description: s.Description, CreatedAt: s.CreatedAt.UTC(), UpdatedAt: s.UpdatedAt.UTC()}
}

func getSite(ctx context.Context, tx pgx.Tx, id uuid.UUID) (site, error) {
	var s site
	err := tx.QueryRow(ctx, `SELECT id, name, description, created_at, updated_at FROM sites WHERE id = $1`, id).
		Scan(&s.ID, &s.Name, &s.Description, &s.CreatedAt, &s.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, problem.NotFound("site")
	}
	return s, err
}

func duplicateName(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return problem.New(http.StatusConflict, problem.CodeConflict, "a site with that name already exists in this tenant")
	}
	return err
}

type nameCursor struct {
	Name string    `json:"n"`
	ID   uuid.UUID `json:"i"`
}

// ListSites implements GET /api/v1/sites.
func (a *API) ListSites(ctx context.Context, req api.ListSitesRequestObject) (api.ListSitesResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	var cur nameCursor
	has, err := page.Decode(ctx, req.Params.Cursor, &cur)
	if err != nil {
		return nil, err
	}
	var list []site
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		q := `SELECT id, name, description, created_at, updated_at FROM sites`
		args := []any{limit + 1}
		if has {
			q += ` WHERE (lower(name), id) > (lower($2), $3)`
			args = append(args, cur.Name, cur.ID)
		}
		rows, err := tx.Query(ctx, q+` ORDER BY lower(name), id LIMIT $1`, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (site, error) {
			var s site
			return s, r.Scan(&s.ID, &s.Name, &s.Description, &s.CreatedAt, &s.UpdatedAt)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListSites200JSONResponse{Items: make([]api.Site, 0, len(list))}
	for _, s := range list {
		out.Items = append(out.Items, s.toAPI())
	}
	if more {
		last := list[len(list)-1]
		out.NextCursor = page.Encode(ctx, nameCursor{Name: last.Name, ID: last.ID})
	}
	return out, nil
}

// siteName is a site's name without surrounding spaces; a name of spaces
// only is no name.
func siteName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", problem.Invalid("the site needs a name", problem.Field{Pointer: "#/name", Detail: "must contain more than spaces"})
	}
	return s, nil
}

// CreateSite implements POST /api/v1/sites. The site starts with a
// deny-all discovery policy.
func (a *API) CreateSite(ctx context.Context, req api.CreateSiteRequestObject) (api.CreateSiteResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	name, err := siteName(req.Body.Name)
	if err != nil {
		return nil, err
	}
	s := site{ID: uuid.Must(uuid.NewV7()), Name: name, Description: req.Body.Description}
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO sites (tenant_id, id, name, description) VALUES ($1, $2, $3, $4) RETURNING created_at, updated_at`,
			c.TenantID, s.ID, s.Name, s.Description).Scan(&s.CreatedAt, &s.UpdatedAt)
		if err != nil {
			return duplicateName(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO discovery_policies (tenant_id, site_id, updated_by) VALUES ($1, $2, $3)`, c.TenantID, s.ID, c.PrincipalID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, c.TenantID, audit.Entry{Action: "site.created", TargetType: "site", TargetID: s.ID.String(), Details: map[string]any{"name": s.Name}})
	})
	if err != nil {
		return nil, err
	}
	return api.CreateSite201JSONResponse(s.toAPI()), nil
}

// GetSite implements GET /api/v1/sites/{site_id}.
func (a *API) GetSite(ctx context.Context, req api.GetSiteRequestObject) (api.GetSiteResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var s site
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		s, err = getSite(ctx, tx, req.SiteId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetSite200JSONResponse(s.toAPI()), nil
}

// UpdateSite implements PATCH /api/v1/sites/{site_id}.
func (a *API) UpdateSite(ctx context.Context, req api.UpdateSiteRequestObject) (api.UpdateSiteResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var s site
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if s, err = getSite(ctx, tx, req.SiteId); err != nil {
			return err
		}
		details := map[string]any{}
		if req.Body.Name != nil {
			if s.Name, err = siteName(*req.Body.Name); err != nil {
				return err
			}
			details["name"] = s.Name
		}
		if req.Body.Description.IsSpecified() {
			s.Description = nil // null removes it
			if d, err := req.Body.Description.Get(); err == nil {
				s.Description = &d
			}
			details["description_changed"] = true
		}
		err := tx.QueryRow(ctx, `UPDATE sites SET name = $2, description = $3, updated_at = now() WHERE id = $1 RETURNING updated_at`,
			s.ID, s.Name, s.Description).Scan(&s.UpdatedAt)
		if err != nil {
			return duplicateName(err)
		}
		return audit.Record(ctx, tx, c.TenantID, audit.Entry{Action: "site.updated", TargetType: "site", TargetID: s.ID.String(), Details: details})
	})
	if err != nil {
		return nil, err
	}
	return api.UpdateSite200JSONResponse(s.toAPI()), nil
}

// --- policies ---

// toAPI is the REST form of a policy. With a Redactor (a reader who does
// not see identifiers) its allowlist names devices the way assets do: a
// MAC by its vendor prefix, an address range with its host part masked,
// and the identifiers in descriptions masked. The allowed CIDRs are the
// scope of discovery, not devices, and are shown as they are.
func (p Policy) toAPI(red *redact.Redactor) api.DiscoveryPolicy {
	out := api.DiscoveryPolicy{
		SiteId: p.SiteID, SiteName: p.SiteName, Version: p.Version, ObservationRetentionDays: p.RetentionDays, UpdatedAt: p.UpdatedAt,
		AllowedCidrs: make([]string, 0, len(p.CIDRs)), AllowedMethods: make([]api.DiscoveryMethod, 0, len(p.Methods)),
		CollectorAgentIds: append([]uuid.UUID{}, p.Collectors...), Allowlist: make([]api.AllowlistRule, 0, len(p.Allowlist)),
	}
	for _, c := range p.CIDRs {
		out.AllowedCidrs = append(out.AllowedCidrs, c.String())
	}
	for _, m := range p.Methods {
		out.AllowedMethods = append(out.AllowedMethods, api.DiscoveryMethod(m))
	}
	for _, r := range p.Allowlist {
		rule := api.AllowlistRule{Type: api.AllowlistRuleType(r.Type), Value: r.Value}
		if r.Description != "" {
			d := r.Description
			rule.Description = &d
		}
		if red != nil {
			rule.Value = red.Text(r.Value)
			switch r.Type {
			case "mac":
				rule.Value = red.MAC(r.Value)
			case "cidr":
				rule.Value = red.IP(r.Value)
			}
			if rule.Description != nil {
				d := red.Text(*rule.Description)
				rule.Description = &d
			}
		}
		out.Allowlist = append(out.Allowlist, rule)
	}
	if p.UpdatedBy != nil {
		s := p.UpdatedBy.String()
		out.UpdatedBy = &s
	}
	return out
}

// ListDiscoveryPolicies implements GET /api/v1/discovery/policies.
func (a *API) ListDiscoveryPolicies(ctx context.Context, req api.ListDiscoveryPoliciesRequestObject) (api.ListDiscoveryPoliciesResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	var cur nameCursor
	has, err := page.Decode(ctx, req.Params.Cursor, &cur)
	if err != nil {
		return nil, err
	}
	var list []Policy
	var red *redact.Redactor
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		q := `SELECT ` + policyColumns + policyFrom
		args := []any{limit + 1}
		if has {
			q += ` WHERE (lower(s.name), s.id) > (lower($2), $3)`
			args = append(args, cur.Name, cur.ID)
		}
		rows, err := tx.Query(ctx, q+` ORDER BY lower(s.name), s.id LIMIT $1`, args...)
		if err != nil {
			return err
		}
		if list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Policy, error) { return scanPolicy(r) }); err != nil {
			return err
		}
		red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role)
		return err
	})
	if err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListDiscoveryPolicies200JSONResponse{Items: make([]api.DiscoveryPolicy, 0, len(list))}
	for _, p := range list {
		out.Items = append(out.Items, p.toAPI(red))
	}
	if more {
		last := list[len(list)-1]
		out.NextCursor = page.Encode(ctx, nameCursor{Name: last.SiteName, ID: last.SiteID})
	}
	return out, nil
}

// GetDiscoveryPolicy implements GET /api/v1/discovery/policies/{site_id}.
func (a *API) GetDiscoveryPolicy(ctx context.Context, req api.GetDiscoveryPolicyRequestObject) (api.GetDiscoveryPolicyResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var p Policy
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if p, err = LoadPolicy(ctx, tx, req.SiteId); err != nil {
			return err
		}
		red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role)
		return err
	}); err != nil {
		return nil, err
	}
	tag := etag.Of(p.Version)
	return api.GetDiscoveryPolicy200JSONResponse{Body: p.toAPI(red), Headers: api.GetDiscoveryPolicy200ResponseHeaders{ETag: &tag}}, nil
}

// validatePolicy turns the request into a policy, naming each bad field.
func validatePolicy(in api.DiscoveryPolicyInput) (Policy, error) {
	// Empty, never nil: an empty list is a real policy (deny all), and the
	// columns are NOT NULL.
	p := Policy{CIDRs: []netip.Prefix{}, Methods: []string{}, Allowlist: []Rule{}}
	var fields []problem.Field
	for i, s := range in.AllowedCidrs {
		pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			fields = append(fields, problem.Field{Pointer: fmt.Sprintf("#/allowed_cidrs/%d", i), Detail: "not a CIDR, such as 192.0.2.0/24 or 2001:db8::/64"})
			continue
		}
		p.CIDRs = append(p.CIDRs, pfx.Masked())
	}
	for _, m := range in.AllowedMethods {
		if !slices.Contains(p.Methods, string(m)) {
			p.Methods = append(p.Methods, string(m))
		}
	}
	// The same agent listed twice is listed once.
	p.Collectors = slices.Compact(slices.SortedFunc(slices.Values(in.CollectorAgentIds), func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }))
	p.RetentionDays = in.ObservationRetentionDays
	for i, r := range in.Allowlist {
		rule := Rule{Type: string(r.Type), Value: strings.ToLower(strings.TrimSpace(r.Value))}
		if r.Description != nil {
			rule.Description = *r.Description
		}
		ptr := fmt.Sprintf("#/allowlist/%d/value", i)
		switch rule.Type {
		case "mac":
			mac, ok := assets.NormalizeMAC(rule.Value)
			if !ok {
				fields = append(fields, problem.Field{Pointer: ptr, Detail: "not a MAC address, such as 02:00:5e:10:00:01"})
			}
			rule.Value = mac
		case "oui":
			mac, ok := assets.NormalizeMAC(rule.Value + ":00:00:00")
			if !ok {
				fields = append(fields, problem.Field{Pointer: ptr, Detail: "not an OUI prefix, such as 00:1b:63"})
			}
			rule.Value = oui(mac)
		case "cidr":
			pfx, err := netip.ParsePrefix(rule.Value)
			if err != nil {
				fields = append(fields, problem.Field{Pointer: ptr, Detail: "not a CIDR"})
			}
			rule.Value = pfx.Masked().String()
		}
		p.Allowlist = append(p.Allowlist, rule)
	}
	if p.Allowlist == nil {
		p.Allowlist = []Rule{}
	}
	if len(fields) > 0 {
		return p, problem.Invalid("the policy has invalid entries", fields...)
	}
	return p, nil
}

// PutDiscoveryPolicy implements PUT /api/v1/discovery/policies/{site_id}.
func (a *API) PutDiscoveryPolicy(ctx context.Context, req api.PutDiscoveryPolicyRequestObject) (api.PutDiscoveryPolicyResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	next, err := validatePolicy(*req.Body)
	if err != nil {
		return nil, err
	}
	var p Policy
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		var version int
		err := tx.QueryRow(ctx, `SELECT version FROM discovery_policies WHERE site_id = $1 FOR UPDATE`, req.SiteId).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return problem.NotFound("site")
		}
		if err != nil {
			return err
		}
		if err := etag.Check(req.Params.IfMatch, version); err != nil {
			return err
		}
		if len(next.Collectors) > 0 {
			// Only the site's own agents observe for it. A revoked one is
			// accepted (it never reports again), so a policy that names it
			// can still be edited.
			rows, err := tx.Query(ctx, `SELECT id FROM agents WHERE id = ANY($1) AND site_id = $2`, db.UUIDs(next.Collectors), req.SiteId)
			if err != nil {
				return err
			}
			ours, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			if err != nil {
				return err
			}
			var fields []problem.Field
			for i, id := range req.Body.CollectorAgentIds { // pointers into the body as sent
				if !slices.Contains(ours, id) {
					fields = append(fields, problem.Field{Pointer: fmt.Sprintf("#/collector_agent_ids/%d", i), Detail: "not an agent of this site: " + id.String()})
				}
			}
			if len(fields) > 0 {
				return problem.Invalid("collectors must be agents of the site", fields...)
			}
		}
		if _, err := tx.Exec(ctx, `
			UPDATE discovery_policies SET version = version + 1, allowed_cidrs = $2, allowed_methods = $3, collector_agent_ids = $4,
			       observation_retention_days = $5, allowlist = $6, updated_at = now(), updated_by = $7
			 WHERE site_id = $1`,
			req.SiteId, next.CIDRs, next.Methods, db.UUIDs(next.Collectors), next.RetentionDays, next.Allowlist, c.PrincipalID); err != nil {
			return err
		}
		if p, err = LoadPolicy(ctx, tx, req.SiteId); err != nil {
			return err
		}
		return audit.Record(ctx, tx, c.TenantID, audit.Entry{Action: "discovery_policy.updated", TargetType: "site", TargetID: req.SiteId.String(),
			Details: map[string]any{"version": p.Version, "allowed_cidrs": p.toAPI(nil).AllowedCidrs, "allowed_methods": p.Methods, "allowlist_rules": len(p.Allowlist)}})
	})
	if err != nil {
		return nil, err
	}
	tag := etag.Of(p.Version)
	return api.PutDiscoveryPolicy200JSONResponse{Body: p.toAPI(nil), Headers: api.PutDiscoveryPolicy200ResponseHeaders{ETag: &tag}}, nil
}

// --- authorization decisions ---

// Decide applies a policy to a request to run method on target.
func Decide(p Policy, method, target string) (decision, rule, reason string) {
	if slices.Contains(ActiveMethods, method) {
		return "denied", "active_methods_disabled", fmt.Sprintf("active discovery (%s) is not enabled on this control plane; only passive_neighbor runs", method)
	}
	if !slices.Contains(p.Methods, method) {
		return "denied", "method_not_allowed", fmt.Sprintf("site %s's policy (version %d) does not allow %s", p.SiteName, p.Version, method)
	}
	var tp netip.Prefix
	if pfx, err := netip.ParsePrefix(target); err == nil {
		tp = pfx.Masked()
	} else if ip, err := netip.ParseAddr(target); err == nil {
		tp = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
	} else {
		return "denied", "invalid_target", "the target is neither an IP address nor a CIDR"
	}
	for _, c := range p.CIDRs {
		if c.Bits() <= tp.Bits() && c.Contains(tp.Addr()) {
			return "granted", "allowed_cidr:" + c.String(), fmt.Sprintf("%s lies inside %s, allowed for %s by site %s's policy (version %d)", target, c, method, p.SiteName, p.Version)
		}
	}
	return "denied", "target_outside_allowed_cidrs", fmt.Sprintf("%s is outside every CIDR site %s's policy (version %d) allows", target, p.SiteName, p.Version)
}

type authorization struct {
	ID            uuid.UUID
	SiteID        uuid.UUID
	Method        string
	Target        string
	Decision      string
	Rule          string
	Reason        string
	PolicyVersion int
	PrincipalID   uuid.UUID
	DecidedAt     time.Time
}

// toAPI is the REST form of a decision. With a Redactor (a reader who does
// not see identifiers) the target, and the reason that may quote it, have
// their addresses masked.
func (x authorization) toAPI(red *redact.Redactor) api.DiscoveryAuthorization {
	out := api.DiscoveryAuthorization{Id: x.ID, SiteId: x.SiteID, Method: api.DiscoveryMethod(x.Method), Target: x.Target,
		Decision: api.AuthorizationOutcome(x.Decision), Rule: x.Rule, Reason: x.Reason, PolicyVersion: x.PolicyVersion,
		PrincipalId: x.PrincipalID, DecidedAt: x.DecidedAt.UTC()}
	if red != nil {
		out.Target, out.Reason = red.Text(x.Target), red.Text(x.Reason)
	}
	return out
}

// RequestDiscoveryAuthorization implements POST /api/v1/discovery/authorizations.
func (a *API) RequestDiscoveryAuthorization(ctx context.Context, req api.RequestDiscoveryAuthorizationRequestObject) (api.RequestDiscoveryAuthorizationResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	target := strings.TrimSpace(req.Body.Target)
	if _, err1 := netip.ParseAddr(target); err1 != nil {
		if _, err2 := netip.ParsePrefix(target); err2 != nil {
			return nil, problem.Invalid("invalid target", problem.Field{Pointer: "#/target", Detail: "an IP address or a CIDR"})
		}
	}
	x := authorization{ID: uuid.Must(uuid.NewV7()), SiteID: req.Body.SiteId, Method: string(req.Body.Method), Target: target, PrincipalID: c.PrincipalID}
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		p, err := LoadPolicy(ctx, tx, x.SiteID)
		if err != nil {
			return err
		}
		x.Decision, x.Rule, x.Reason = Decide(p, x.Method, x.Target)
		x.PolicyVersion = p.Version
		if err := tx.QueryRow(ctx, `
			INSERT INTO discovery_authorizations (tenant_id, id, site_id, method, target, decision, rule, reason, policy_version, principal_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING decided_at`,
			c.TenantID, x.ID, x.SiteID, x.Method, x.Target, x.Decision, x.Rule, x.Reason, x.PolicyVersion, x.PrincipalID).Scan(&x.DecidedAt); err != nil {
			return err
		}
		outcome := audit.OutcomeSuccess
		if x.Decision == "denied" {
			outcome = audit.OutcomeDenied
		}
		return audit.Record(ctx, tx, c.TenantID, audit.Entry{Action: "discovery.authorization_decided", TargetType: "site", TargetID: x.SiteID.String(),
			Outcome: outcome, Details: map[string]any{"decision_id": x.ID.String(), "method": x.Method, "target": redact.Masked(x.Target), "decision": x.Decision, "rule": x.Rule}})
	})
	if err != nil {
		return nil, err
	}
	// The caller sent the target: it gets its own decision unmasked.
	return api.RequestDiscoveryAuthorization201JSONResponse(x.toAPI(nil)), nil
}

type idCursor struct {
	ID uuid.UUID `json:"i"`
}

// ListDiscoveryAuthorizations implements GET /api/v1/discovery/authorizations.
func (a *API) ListDiscoveryAuthorizations(ctx context.Context, req api.ListDiscoveryAuthorizationsRequestObject) (api.ListDiscoveryAuthorizationsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	q := `SELECT id, site_id, method, target, decision, rule, reason, policy_version, principal_id, decided_at FROM discovery_authorizations WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if req.Params.Decision != nil {
		q += " AND decision = " + arg(string(*req.Params.Decision))
	}
	var cur idCursor
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		q += " AND id < " + arg(cur.ID)
	}
	q += " ORDER BY id DESC LIMIT " + arg(limit+1)
	var list []authorization
	var red *redact.Redactor
	err = db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (authorization, error) {
			var x authorization
			return x, r.Scan(&x.ID, &x.SiteID, &x.Method, &x.Target, &x.Decision, &x.Rule, &x.Reason, &x.PolicyVersion, &x.PrincipalID, &x.DecidedAt)
		})
		if err != nil {
			return err
		}
		red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role)
		return err
	})
	if err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListDiscoveryAuthorizations200JSONResponse{Items: make([]api.DiscoveryAuthorization, 0, len(list))}
	for _, x := range list {
		out.Items = append(out.Items, x.toAPI(red))
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].ID})
	}
	return out, nil
}
