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
	"net"
	"net/netip"
	"regexp"
	"slices"
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

// ForTenant loads the tenant's redaction key; with create it makes one
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

// ForReader is the Redactor a reader with role needs inside tx, or nil when
// the role sees identifiers in full (and nothing is redacted for it).
func ForReader(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, role string) (*Redactor, error) {
	if SeesIdentifiers(role) {
		return nil, nil
	}
	r, err := ForTenant(ctx, tx, tenantID, false)
	if err != nil {
		return nil, err
	}
	return &r, nil
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

// IP keeps the network part only: 192.0.2.x, 2001:db8:0:1::x. An address
// with a prefix length keeps it (192.0.2.x/24); anything else is "x".
func (r Redactor) IP(s string) string {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		if p, perr := netip.ParsePrefix(s); perr == nil {
			return fmt.Sprintf("%s/%d", r.IP(p.Addr().String()), p.Bits())
		}
		return "x"
	}
	if ip.Is4() || ip.Is4In6() {
		b := ip.Unmap().As4()
		return fmt.Sprintf("%d.%d.%d.x", b[0], b[1], b[2])
	}
	b := ip.As16()
	return fmt.Sprintf("%x:%x:%x:%x::x", uint16(b[0])<<8|uint16(b[1]), uint16(b[2])<<8|uint16(b[3]), uint16(b[4])<<8|uint16(b[5]), uint16(b[6])<<8|uint16(b[7]))
}

// Text masks every MAC and IP address in free text (titles, summaries,
// notes, reasons) by the rules of MAC and IP: "Unauthorized device
// de:ad:be:ef:00:01 at 192.0.2.66" becomes "Unauthorized device
// de:ad:be:xx:xx:xx at 192.0.2.x". An address with a port or a prefix
// length keeps them (192.0.2.x:8080, 192.0.2.x/24). Masked text is left as
// it is, so Text can run twice. It errs towards masking: anything that
// parses as an address is masked, a version string such as 1.2.3.4 too.
func (r Redactor) Text(s string) string {
	if !strings.ContainsAny(s, ":.-") {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range addressRun.FindAllStringIndex(s, -1) {
		run := s[m[0]:m[1]]
		if m[1] < len(s) && s[m[1]] == 'x' && strings.HasSuffix(run, ":") {
			continue // masked already: 2001:db8:0:1::x
		}
		b.WriteString(s[last:m[0]])
		b.WriteString(r.maskAddress(run))
		last = m[1]
	}
	b.WriteString(s[last:])
	return r.maskMACs(b.String())
}

// Masked is s with its MACs and IP addresses masked as Text masks them,
// for every reader alike. It is for records that cannot be redacted per
// reader: audit events, whose hash chain anyone reading them must be able
// to recompute, so the free text they keep (a revocation reason, a
// justification, a ticket's title) is masked before it is stored. Masking
// needs no key.
func Masked(s string) string {
	return Redactor{}.Text(s)
}

// maskMACs masks every MAC in s that stands on its own (not inside a
// longer word such as a hash).
func (r Redactor) maskMACs(s string) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		m := macText.FindStringSubmatchIndex(s[i:])
		if m == nil {
			break
		}
		start, end := i+m[2], i+m[3]
		mac := strings.ToLower(s[start:end])
		if hw, err := net.ParseMAC(mac); err == nil {
			mac = hw.String()
		}
		b.WriteString(s[last:start])
		b.WriteString(r.MAC(mac))
		last, i = end, end
	}
	b.WriteString(s[last:])
	return b.String()
}

var (
	// addressRun is a run of the characters an IP address is written with.
	addressRun = regexp.MustCompile(`[0-9A-Fa-f:.]*[0-9][0-9A-Fa-f:.]*`)
	// macText is a MAC written with colons or hyphens (six or eight
	// octets), or in dotted groups of four (Cisco). Colon forms of eight
	// octets parse as IPv6 and are masked as addresses first.
	macText = regexp.MustCompile(`(?i)(?:^|[^0-9a-z])([0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}(?:(?:[:-][0-9a-f]{2}){2})?|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})(?:$|[^0-9a-z])`)
)

// maskAddress masks the IP addresses (with or without a port) in a run of
// address characters. An address may stand between separators at the
// run's ends, as in "src:192.0.2.1" or "192.0.2.66."; the rest of the run
// is kept.
func (r Redactor) maskAddress(run string) string {
	var seps []int // the separators' positions, ascending
	for i := 0; i < len(run); i++ {
		if run[i] == ':' || run[i] == '.' {
			seps = append(seps, i)
		}
	}
	var out strings.Builder
	done := 0 // run[:done] is written to out
	// Each start (the run's, or after a separator) with each end (the
	// run's, or before a separator), longest first.
	for si := -1; si < len(seps); si++ {
		a := done
		if si >= 0 {
			a = seps[si] + 1
		}
		if a < done {
			continue
		}
		hi, _ := slices.BinarySearch(seps, a+maxAddressLen+1)
		for ei := hi; ei > si; ei-- {
			b := len(run)
			if ei < hi {
				b = seps[ei]
			} else if b-a > maxAddressLen {
				continue
			}
			if b-a < 2 {
				break
			}
			if masked, ok := r.address(run[a:b]); ok {
				out.WriteString(run[done:a])
				out.WriteString(masked)
				done = b
				break
			}
		}
	}
	out.WriteString(run[done:])
	return out.String()
}

// maxAddressLen bounds the text tried as an address: the longest IPv6
// address with an IPv4 tail, a zone and a port is shorter.
const maxAddressLen = 64

// address masks s when it is an IP address, or one with a port.
func (r Redactor) address(s string) (string, bool) {
	if !strings.ContainsAny(s, ":.") {
		return s, false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return r.IP(s), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return fmt.Sprintf("%s:%d", r.IP(ap.Addr().String()), ap.Port()), true
	}
	return s, false
}

// Details redacts a structured record (a timeline entry's details) for a
// reader who does not see identifiers: a "mac" to its vendor prefix plus
// "mac_hash", the tenant's keyed hash; an "ip" or "address" masked; every
// other string, at any depth and in lists, through Text. Names, notes and
// other keys are kept; only the identifiers in them are masked.
func (r Redactor) Details(details map[string]any) map[string]any {
	return r.project(details, false)
}

// Content redacts a record's content for the auditor projection of
// evidence: what Details does, and further host names and free text
// removed and address lists withheld. Keys it does not know are kept (with
// the identifiers in their text masked): evidence content is written by
// this code base, which names sensitive fields as below.
func (r Redactor) Content(content map[string]any) map[string]any {
	return r.project(content, true)
}

// removed are the keys whose values Content replaces by "[redacted]".
var removed = map[string]bool{"hostname": true, "name": true, "note": true, "reason": true, "description": true, "comment": true}

func (r Redactor) project(m map[string]any, strict bool) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		s, isString := v.(string)
		switch {
		case k == "mac" && isString:
			out[k] = r.MAC(s)
			out["mac_hash"] = r.Hash(s)
		case (k == "ip" || k == "address") && isString:
			out[k] = r.IP(s)
		case strict && removed[k]:
			if v != nil && v != "" {
				out[k] = "[redacted]"
			} else {
				out[k] = v
			}
		case strict && (k == "addresses" || k == "macs"):
			out[k] = "[redacted]"
		default:
			out[k] = r.value(v, strict)
		}
	}
	return out
}

func (r Redactor) value(v any, strict bool) any {
	switch x := v.(type) {
	case string:
		return r.Text(x)
	case map[string]any:
		return r.project(x, strict)
	case []string:
		out := make([]string, len(x))
		for i, s := range x {
			out[i] = r.Text(s)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.value(e, strict)
		}
		return out
	}
	return v
}
