package httpx

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSourceIPBelievesOnlyTrustedProxies(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	cases := []struct {
		name, remote, xff, want string
	}{
		{"direct", "203.0.113.5:4000", "", "203.0.113.5"},
		{"untrusted peer's header ignored", "203.0.113.5:4000", "198.51.100.1", "203.0.113.5"},
		{"through a trusted proxy", "10.1.2.3:4000", "198.51.100.1", "198.51.100.1"},
		{"spoofed hop before the client", "10.1.2.3:4000", "6.6.6.6, 198.51.100.1, 10.9.9.9", "198.51.100.1"},
		{"garbage header", "10.1.2.3:4000", "not-an-ip", "10.1.2.3"},
		{"ipv6 peer", "[2001:db8::1]:443", "", "2001:db8::1"},
	}
	for _, tc := range cases {
		r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		assert.Equal(t, tc.want, sourceIP(r, trusted), tc.name)
	}
}
