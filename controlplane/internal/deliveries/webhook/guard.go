package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxURLLen bounds destination URLs; longer ones are almost always a mistake
// or an attempt to smuggle data through the attempt log.
const maxURLLen = 2048

// resolveTimeout bounds the DNS check in CheckURL so an API request never
// hangs on a slow resolver.
const resolveTimeout = 3 * time.Second

// blockedPrefixes are the ranges no webhook may reach unless an operator
// allows them: they lead into the control plane's own host, its private
// network or its cloud provider's metadata service, or are not unicast at all.
// Loopback, RFC 1918, fc00::/7, link-local, multicast and unspecified
// addresses are caught by netip's predicates in blockedAddr.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT; also Alibaba's metadata at 100.100.100.200
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, including broadcast 255.255.255.255
	netip.MustParsePrefix("fec0::/10"),     // deprecated site-local, private in practice
}

var (
	nat64Prefix  = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64: IPv4 in the last 32 bits
	sixToFourNet = netip.MustParsePrefix("2002::/16")    // 6to4: IPv4 in bits 16..47
)

// Guard decides which destination addresses may be contacted. Everything that
// is loopback, private (RFC 1918, fc00::/7), link-local (169.254.0.0/16 with
// the 169.254.169.254 cloud metadata service, fe80::/10), unspecified,
// multicast, broadcast, CGNAT 100.64.0.0/10 (covering 100.100.100.200),
// 0.0.0.0/8, 192.0.0.0/24, 198.18.0.0/15 or 240.0.0.0/4 is blocked, as are
// NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses whose embedded IPv4
// address is blocked. IPv4-mapped IPv6 addresses are unmapped first. Hosts
// named "localhost" or "*.localhost" are refused by name in CheckURL (Send
// refuses them by the loopback addresses they resolve to).
//
// The zero Guard allows nothing private; operators widen it for on-premises
// receivers and tests.
type Guard struct {
	// AllowHosts are exact host names (lower-case) an operator allows
	// regardless of the addresses they resolve to.
	AllowHosts []string
	// AllowNets are address ranges an operator allows.
	AllowNets []netip.Prefix
}

// ParseAllow builds a Guard from configuration entries. Each entry is an IP
// address (allowed as a /32 or /128), a CIDR prefix, or a host name. An empty
// or malformed entry is an error, so a typo in configuration fails start-up
// instead of silently allowing nothing (or too much).
func ParseAllow(entries []string) (Guard, error) {
	var g Guard
	for i, raw := range entries {
		e := strings.TrimSpace(raw)
		if e == "" {
			return Guard{}, fmt.Errorf("webhook allow list entry %d: empty", i+1)
		}
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return Guard{}, fmt.Errorf("webhook allow list entry %d %q: not a valid CIDR prefix", i+1, e)
			}
			g.AllowNets = append(g.AllowNets, unmapPrefix(p.Masked()))
			continue
		}
		if ip, err := netip.ParseAddr(e); err == nil {
			if ip.Zone() != "" {
				return Guard{}, fmt.Errorf("webhook allow list entry %d %q: an IPv6 zone is not allowed", i+1, e)
			}
			ip = ip.Unmap()
			g.AllowNets = append(g.AllowNets, netip.PrefixFrom(ip, ip.BitLen()))
			continue
		}
		host := strings.TrimSuffix(strings.ToLower(e), ".")
		if !validHostName(host) {
			return Guard{}, fmt.Errorf("webhook allow list entry %d %q: not an IP address, CIDR prefix or host name", i+1, e)
		}
		g.AllowHosts = append(g.AllowHosts, host)
	}
	return g, nil
}

// unmapPrefix turns an IPv4-mapped IPv6 prefix into the IPv4 prefix it means,
// because Allowed compares unmapped addresses.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// Allowed reports whether ip may be contacted.
func (g Guard) Allowed(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	// Zones only matter to link-local addresses, which are blocked; dropping
	// the zone lets AllowNets match (Prefix.Contains never matches a zone).
	ip = ip.Unmap().WithZone("")
	for _, p := range g.AllowNets {
		if p.Contains(ip) {
			return true
		}
	}
	if blockedAddr(ip) {
		return false
	}
	// Translation prefixes reach the IPv4 address they embed, so they are
	// exactly as allowed as that address.
	if nat64Prefix.Contains(ip) {
		b := ip.As16()
		return g.Allowed(netip.AddrFrom4([4]byte(b[12:16])))
	}
	if sixToFourNet.Contains(ip) {
		b := ip.As16()
		return g.Allowed(netip.AddrFrom4([4]byte(b[2:6])))
	}
	return true
}

// blockedAddr reports whether an unmapped address is in a blocked range.
func blockedAddr(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
		ip.IsLinkLocalUnicast() || ip.IsMulticast() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// allowsHost reports whether host (as it appears in a URL) is one the operator
// allows by name.
func (g Guard) allowsHost(host string) bool {
	return slices.Contains(g.AllowHosts, strings.TrimSuffix(strings.ToLower(host), "."))
}

// URLError says why a destination URL was refused. Reason is a sentence fit
// for an API error detail: it names at most the URL's host, never its path,
// query or credentials, and never an address the host resolved to (that
// would disclose internal DNS to the tenant).
type URLError struct{ Reason string }

func (e *URLError) Error() string { return e.Reason }

func urlErrorf(format string, args ...any) *URLError {
	return &URLError{Reason: fmt.Sprintf(format, args...)}
}

// CheckURL validates a destination URL when it is created or changed: it must
// be an absolute https URL of at most 2048 bytes with a host, without user
// info (credentials would show in reads) and without a fragment. A literal IP
// address must be allowed; a host name is resolved with r
// (net.DefaultResolver when nil) within 3 seconds and every address it
// resolves to must be allowed. A name that does not resolve is accepted: the
// attempts will fail with error class "dns" and be retried, and Send checks
// the dialled address anyway.
//
// Refusals are *URLError. When ctx itself is cancelled, its error is returned.
func (g Guard) CheckURL(ctx context.Context, raw string, r *net.Resolver) error {
	u, err := parseDestination(raw)
	if err != nil {
		return err
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if g.allowsHost(host) {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !g.Allowed(ip) {
			return urlErrorf("the URL's host %s is a loopback, private, link-local or reserved address and may not be contacted", host)
		}
		return nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return urlErrorf("the URL's host %s is a local name and may not be contacted", host)
	}
	if r == nil {
		r = net.DefaultResolver
	}
	lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := r.LookupNetIP(lctx, "ip", host)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	}
	for _, a := range addrs {
		if !g.Allowed(a) {
			return urlErrorf("the URL's host %s resolves to a loopback, private, link-local or reserved address and may not be contacted", host)
		}
	}
	return nil
}

// parseDestination applies the checks that need no network: they run when a
// URL is saved and again before every attempt.
func parseDestination(raw string) (*url.URL, error) {
	if len(raw) > maxURLLen {
		return nil, urlErrorf("the URL is longer than %d bytes", maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the whole URL, query string included.
		return nil, urlErrorf("the URL is not a valid absolute URL")
	}
	if u.Scheme != "https" {
		return nil, urlErrorf("the URL must use https")
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, urlErrorf("the URL must be absolute and name a host")
	}
	host := u.Hostname()
	if u.User != nil {
		return nil, urlErrorf("the URL for host %s must not contain user info: credentials in a URL would show whenever the destination is read; use the auth header instead", host)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, urlErrorf("the URL for host %s must not contain a fragment", host)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return nil, urlErrorf("the URL for host %s has an invalid port", host)
		}
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return nil, urlErrorf("the URL's host must not carry an IPv6 zone")
		}
		return u, nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if !validHostName(name) {
		return nil, urlErrorf("the URL's host is not a valid DNS name (use punycode for internationalized names)")
	}
	if numericLastLabel(name) {
		// "2130706433", "127.1" and "0x7f.0.0.1" are IPv4 addresses to some
		// resolvers (inet_aton) and names to others; no public name ends in
		// a numeric label, so refuse the ambiguity outright.
		return nil, urlErrorf("the URL's host %s looks like an IP address in a non-standard form", name)
	}
	return u, nil
}

// validHostName reports whether s is a syntactically valid ASCII DNS name
// (underscores tolerated, as some internal names carry them).
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// numericLastLabel reports whether the last label of a host name is a number
// (decimal, or hexadecimal with 0x), which makes it an IPv4 address to
// inet_aton-style resolvers.
func numericLastLabel(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	digits := last
	if h, ok := strings.CutPrefix(last, "0x"); ok {
		digits = h
		if digits == "" {
			return true
		}
		return strings.Trim(digits, "0123456789abcdef") == ""
	}
	return strings.Trim(digits, "0123456789") == ""
}

// blockedError is the dial-time refusal; Send classifies it as
// blocked_address.
type blockedError struct{ ip netip.Addr }

func (e *blockedError) Error() string {
	return fmt.Sprintf("address %s is loopback, private, link-local or reserved and may not be contacted", e.ip)
}

// isBlocked reports whether err carries a dial-time refusal.
func isBlocked(err error) (*blockedError, bool) {
	var b *blockedError
	ok := errors.As(err, &b)
	return b, ok
}
