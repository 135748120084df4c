// Package discovery is passive network discovery under an authorization
// policy: sites and their discovery policies (deny by default), the
// decisions the control plane gives scanners, the observations agents send
// from their neighbour tables, discovered assets and their authorization,
// and collector health.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// Methods of discovery. Only passive_neighbor runs today; active methods
// can be listed in a policy but are always denied.
const (
	MethodPassiveNeighbor = "passive_neighbor"
	MethodNmap            = "nmap"
	MethodSNMP            = "snmp"
	MethodWMI             = "wmi"
)

// ActiveMethods are denied whatever a policy says.
var ActiveMethods = []string{MethodNmap, MethodSNMP, MethodWMI}

// Rule is an allowlist rule: devices that match are authorized.
type Rule struct {
	Type        string `json:"type"` // mac, oui, cidr
	Value       string `json:"value"`
	Description string `json:"description,omitempty"`
}

// Policy is a site's discovery policy.
type Policy struct {
	SiteID        uuid.UUID
	SiteName      string
	Version       int
	CIDRs         []netip.Prefix
	Methods       []string
	Collectors    []uuid.UUID
	RetentionDays int
	Allowlist     []Rule
	UpdatedAt     time.Time
	UpdatedBy     *uuid.UUID
}

// Allows reports whether the policy lets agent observe with method.
func (p *Policy) Allows(method string, agentID uuid.UUID) bool {
	if slices.Contains(ActiveMethods, method) || !slices.Contains(p.Methods, method) {
		return false
	}
	return len(p.Collectors) == 0 || slices.Contains(p.Collectors, agentID)
}

// Covers reports whether ip lies in one of the allowed CIDRs, and which.
func (p *Policy) Covers(ip netip.Addr) (netip.Prefix, bool) {
	ip = ip.Unmap()
	for _, c := range p.CIDRs {
		if c.Contains(ip) {
			return c, true
		}
	}
	return netip.Prefix{}, false
}

// Match finds the allowlist rule a device matches.
func (p *Policy) Match(mac string, ip netip.Addr) (Rule, bool) {
	mac = strings.ToLower(mac)
	for _, r := range p.Allowlist {
		switch r.Type {
		case "mac":
			if strings.EqualFold(r.Value, mac) {
				return r, true
			}
		case "oui":
			if strings.HasPrefix(mac, strings.ToLower(r.Value)) {
				return r, true
			}
		case "cidr":
			if pfx, err := netip.ParsePrefix(r.Value); err == nil && ip.IsValid() && pfx.Contains(ip.Unmap()) {
				return r, true
			}
		}
	}
	return Rule{}, false
}

// RuleName is how a matched rule is named in reasons and evidence.
func (r Rule) RuleName() string { return "allowlist " + r.Type + ":" + r.Value }

const policyColumns = `p.site_id, s.name, p.version, p.allowed_cidrs, p.allowed_methods, p.collector_agent_ids,
	p.observation_retention_days, p.allowlist, p.updated_at, p.updated_by`

const policyFrom = ` FROM discovery_policies p JOIN sites s ON s.tenant_id = p.tenant_id AND s.id = p.site_id`

func scanPolicy(row pgx.Row) (Policy, error) {
	var p Policy
	err := row.Scan(&p.SiteID, &p.SiteName, &p.Version, &p.CIDRs, &p.Methods, &p.Collectors, &p.RetentionDays, &p.Allowlist, &p.UpdatedAt, &p.UpdatedBy)
	p.UpdatedAt = p.UpdatedAt.UTC()
	if p.Allowlist == nil {
		p.Allowlist = []Rule{}
	}
	return p, err
}

// LoadPolicy reads a site's policy, or a 404 problem.
func LoadPolicy(ctx context.Context, tx pgx.Tx, siteID uuid.UUID) (Policy, error) {
	p, err := scanPolicy(tx.QueryRow(ctx, `SELECT `+policyColumns+policyFrom+` WHERE p.site_id = $1`, siteID))
	if errors.Is(err, pgx.ErrNoRows) {
		return p, problem.NotFound("site")
	}
	if err != nil {
		return p, fmt.Errorf("load discovery policy: %w", err)
	}
	return p, nil
}

// oui is the vendor prefix of a MAC (its first three octets).
func oui(mac string) string {
	if len(mac) >= 8 {
		return mac[:8]
	}
	return mac
}
