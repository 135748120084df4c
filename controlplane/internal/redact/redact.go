// Package redact is how identifiers are shown to readers who may not see
// them (auditors, service accounts): MACs reduced to their vendor prefix,
// addresses masked, free text removed, and a stable keyed hash per tenant
// so the reader can still tell that two records name the same device.
package redact

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/caller"
)

// SeesIdentifiers reports whether a role may see MACs and addresses in
// full; every other role gets the redacted projection.
func SeesIdentifiers(role string) bool {
	return role == caller.RoleTenantAdmin || role == caller.RoleAnalyst
}

// Redactor masks identifiers and gives them a stable keyed hash, so a reader
// who may not see a MAC can still tell two entries are the same device.
type Redactor struct{ key []byte }

// TenantRedactor loads the tenant's redaction key; with create it makes one
// when missing (only write paths may).
func ForTenant(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, create bool) (Redactor, error) {
	var key []byte
	err := tx.QueryRow(ctx, `SELECT redaction_key FROM tenant_keys WHERE tenant_id = $1`, tenantID).Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) && create {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
		if _, err := tx.Exec(ctx, `INSERT INTO tenant_keys (tenant_id, redaction_key) VALUES ($1, $2) ON CONFLICT DO NOTHING`, tenantID, key); err != nil {
			return Redactor{}, err
		}
		err = tx.QueryRow(ctx, `SELECT redaction_key FROM tenant_keys WHERE tenant_id = $1`, tenantID).Scan(&key)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		// Nothing was ever observed in this tenant, so nothing needs a hash
		// that must match a later one.
		return Redactor{key: make([]byte, 32)}, nil
	}
	return Redactor{key: key}, err
}

// Hash is the keyed hash of an identifier.
func (r Redactor) Hash(value string) string {
	m := hmac.New(sha256.New, r.key)
	m.Write([]byte(strings.ToLower(value)))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// MAC keeps the vendor prefix only.
func (Redactor) MAC(mac string) string {
	if len(mac) < 8 {
		return "xx:xx:xx:xx:xx:xx"
	}
	return mac[:8] + ":xx:xx:xx"
}

// IP keeps the network part only: 192.0.2.x, 2001:db8:0:1::x.
func (Redactor) IP(s string) string {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return "x"
	}
	if ip.Is4() || ip.Is4In6() {
		b := ip.Unmap().As4()
		return fmt.Sprintf("%d.%d.%d.x", b[0], b[1], b[2])
	}
	b := ip.As16()
	return fmt.Sprintf("%x:%x:%x:%x::x", uint16(b[0])<<8|uint16(b[1]), uint16(b[2])<<8|uint16(b[3]), uint16(b[4])<<8|uint16(b[5]), uint16(b[6])<<8|uint16(b[7]))
}

// Content redacts a record's content for the auditor projection: MACs to
// their vendor prefix plus a keyed hash, IP addresses masked, host names and
// free text removed. Keys it does not know are kept: evidence content is
// written by this code base, which names sensitive fields as below.
func (r Redactor) Content(content map[string]any) map[string]any {
	out := make(map[string]any, len(content))
	for k, v := range content {
		s, isString := v.(string)
		switch {
		case k == "mac" && isString:
			out[k] = r.MAC(s)
			out["mac_hash"] = r.Hash(s)
		case (k == "ip" || k == "address") && isString:
			out[k] = r.IP(s)
		case k == "hostname" || k == "name" || k == "note" || k == "reason" || k == "description" || k == "comment":
			if v != nil && v != "" {
				out[k] = "[redacted]"
			} else {
				out[k] = v
			}
		case k == "addresses" || k == "macs":
			out[k] = "[redacted]"
		default:
			if m, ok := v.(map[string]any); ok {
				out[k] = r.Content(m)
			} else {
				out[k] = v
			}
		}
	}
	return out
}
