package webhook

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGuardBlocksInternalAddresses(t *testing.T) {
	blocked := []string{
		"127.0.0.1", "127.8.9.10", "::1",
		"10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
		"169.254.169.254", "fe80::1", "fe80::1%eth0",
		"fd00:ec2::254", "fc00::1",
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
		"100.100.100.200", "100.64.0.1",
		"0.0.0.0", "0.1.2.3", "::",
		"192.0.0.170", "198.18.0.1", "198.19.255.255",
		"240.0.0.1", "255.255.255.255",
		"224.0.0.1", "239.255.255.250", "ff02::1", "ff05::c",
		"64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", // NAT64 of 127.0.0.1, 169.254.169.254
		"2002:7f00:1::1", "2002:a00:1::", // 6to4 of 127.0.0.1, 10.0.0.1
		"fec0::1",
	}
	allowed := []string{
		"93.184.216.34", "2606:4700::1111", "8.8.8.8", "1.1.1.1",
		"172.32.0.1", "100.128.0.1", "::ffff:93.184.216.34",
		"64:ff9b::5db8:d822", "2002:5db8:d822::1", // NAT64 and 6to4 of 93.184.216.34
	}
	var g Guard
	for _, s := range blocked {
		assert.False(t, g.Allowed(netip.MustParseAddr(s)), "%s must be blocked", s)
	}
	for _, s := range allowed {
		assert.True(t, g.Allowed(netip.MustParseAddr(s)), "%s must be allowed", s)
	}
	assert.False(t, g.Allowed(netip.Addr{}), "the zero address")
}

func TestGuardAllowNetsOverride(t *testing.T) {
	g := Guard{AllowNets: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("fd00::/8"),
	}}

	assert.True(t, g.Allowed(netip.MustParseAddr("10.1.2.3")))
	assert.True(t, g.Allowed(netip.MustParseAddr("::ffff:10.1.2.3")), "mapped addresses are unmapped first")
	assert.True(t, g.Allowed(netip.MustParseAddr("64:ff9b::a01:203")), "NAT64 of an allowed address")
	assert.True(t, g.Allowed(netip.MustParseAddr("fd00:ec2::254")))
	assert.False(t, g.Allowed(netip.MustParseAddr("192.168.1.1")))
	assert.False(t, g.Allowed(netip.MustParseAddr("127.0.0.1")))
}

func TestParseAllow(t *testing.T) {
	g, err := ParseAllow([]string{"10.0.0.0/8", "192.168.1.5", "::1", " Receiver.Corp.example. ", "::ffff:172.16.0.0/108", "10.9.9.9/8"})

	require.NoError(t, err)
	assert.Equal(t, []string{"receiver.corp.example"}, g.AllowHosts)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.1.5/32"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("10.0.0.0/8"),
	}, g.AllowNets)
	assert.True(t, g.Allowed(netip.MustParseAddr("172.20.0.1")))
	assert.False(t, g.Allowed(netip.MustParseAddr("192.168.1.6")))
}

func TestParseAllowRefusesMalformedEntries(t *testing.T) {
	for _, e := range []string{"", "  ", "10.0.0.0/33", "10.0.0/8", "not a host", "fe80::1%eth0", "host:8080", "https://x.example", "-bad.example"} {
		_, err := ParseAllow([]string{"10.0.0.0/8", e})
		assert.Error(t, err, "%q", e)
	}
}

// noDNS is a resolver that cannot reach any server: every name is
// unresolvable, without touching the network.
func noDNS() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in tests")
	}}
}

func TestCheckURLRefuses(t *testing.T) {
	tests := map[string]string{
		"plain http":      "http://93.184.216.34/hook",
		"other scheme":    "ftp://93.184.216.34/hook",
		"relative":        "/hook",
		"no host":         "https:///hook",
		"opaque":          "https:93.184.216.34",
		"user info":       "https://user:pw@93.184.216.34/hook",
		"user only":       "https://user@93.184.216.34/hook",
		"fragment":        "https://93.184.216.34/hook#part",
		"empty fragment":  "https://93.184.216.34/hook#",
		"too long":        "https://93.184.216.34/" + strings.Repeat("a", 2048),
		"private literal": "https://10.0.0.1/hook",
		"loopback v6":     "https://[::1]/hook",
		"metadata":        "https://169.254.169.254/latest/meta-data",
		"mapped loopback": "https://[::ffff:127.0.0.1]/hook",
		"localhost":       "https://localhost/hook",
		"localhost port":  "https://LOCALHOST.:8443/hook",
		"sub localhost":   "https://api.localhost/hook",
		"decimal ip":      "https://2130706433/hook",
		"short ip":        "https://127.1/hook",
		"hex ip":          "https://0x7f.0.0.1/hook",
		"leading zero ip": "https://127.0.0.01/hook",
		"zone":            "https://[fe80::1%25eth0]/hook",
		"port zero":       "https://93.184.216.34:0/hook",
		"bad host chars":  "https://exa_mple!.com/hook",
		"unicode host":    "https://bücher.example/hook",
		"unparseable":     "https://93.184.216.34:port/hook",
	}
	var g Guard
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			err := g.CheckURL(context.Background(), raw+"?token=SUPERSECRET", noDNS())
			var ue *URLError
			require.ErrorAs(t, err, &ue)
			assert.NotEmpty(t, ue.Reason)
			assert.NotContains(t, ue.Reason, "SUPERSECRET")
			assert.NotContains(t, ue.Reason, "/hook")
			assert.NotContains(t, ue.Reason, "pw")
		})
	}
}

func TestCheckURLAccepts(t *testing.T) {
	var g Guard
	for _, raw := range []string{
		"https://93.184.216.34/hook",
		"https://93.184.216.34:8443/hook?token=abc",
		"https://[2606:4700::1111]/hook",
		"https://receiver.example.invalid/hook", // does not resolve: attempts will say dns
		"https://HOOKS.example.invalid./x",
	} {
		assert.NoError(t, g.CheckURL(context.Background(), raw, noDNS()), raw)
	}
}

func TestCheckURLOperatorAllowances(t *testing.T) {
	g, err := ParseAllow([]string{"10.0.0.0/8", "localhost"})
	require.NoError(t, err)
	ctx := context.Background()

	assert.NoError(t, g.CheckURL(ctx, "https://10.0.0.1/hook", noDNS()))
	assert.NoError(t, g.CheckURL(ctx, "https://localhost:8443/hook", noDNS()))
	assert.Error(t, g.CheckURL(ctx, "https://192.168.0.1/hook", noDNS()))
	assert.Error(t, g.CheckURL(ctx, "http://localhost/hook", noDNS()), "allowances never permit http")
}

func TestCheckURLChecksEveryResolvedAddress(t *testing.T) {
	var g Guard
	dns := fakeDNS(t, map[string][]netip.Addr{
		"public.test.":  {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("2606:4700::1111")},
		"mixed.test.":   {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("10.0.0.7")},
		"private.test.": {netip.MustParseAddr("fd00::7")},
	})
	ctx := context.Background()

	assert.NoError(t, g.CheckURL(ctx, "https://public.test/hook", dns))
	for _, host := range []string{"mixed.test", "private.test"} {
		err := g.CheckURL(ctx, "https://"+host+"/hook", dns)
		var ue *URLError
		require.ErrorAs(t, err, &ue, host)
		assert.Contains(t, ue.Reason, host)
		assert.NotContains(t, ue.Reason, "10.0.0.7", "internal DNS answers are not disclosed")
		assert.NotContains(t, ue.Reason, "fd00::7")
	}
}

func TestCheckURLReturnsCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var g Guard

	err := g.CheckURL(ctx, "https://receiver.example.invalid/hook", noDNS())

	assert.ErrorIs(t, err, context.Canceled)
}
