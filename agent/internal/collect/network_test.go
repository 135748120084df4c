package collect

import (
	"testing"

	gnet "github.com/shirou/gopsutil/v4/net"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHardwareInterfacesKeepsOnlyHardwareInAFixedOrder(t *testing.T) {
	list := gnet.InterfaceStatList{
		{Name: "wlan0", HardwareAddr: "DC:A6:32:01:02:03", Flags: []string{"up", "broadcast", "multicast"},
			Addrs: gnet.InterfaceAddrList{{Addr: "fe80::dea6:32ff:fe01:203/64"}, {Addr: "192.168.1.20/24"}}},
		{Name: "lo", HardwareAddr: "", Flags: []string{"up", "loopback"},
			Addrs: gnet.InterfaceAddrList{{Addr: "127.0.0.1/8"}, {Addr: "::1/128"}}},
		{Name: "lo0", HardwareAddr: "00:00:00:00:00:01", Flags: []string{"up", "loopback"}},
		{Name: "wg0", HardwareAddr: "", Flags: []string{"up", "pointtopoint"},
			Addrs: gnet.InterfaceAddrList{{Addr: "10.8.0.2/32"}}},
		{Name: "sit0", HardwareAddr: "00:00:00:00", Flags: []string{}},
		{Name: "eth0", HardwareAddr: "02:42:ac:11:00:02", Flags: []string{"up"}},
		{Name: "bogus", HardwareAddr: "not-a-mac"},
	}

	got := hardwareInterfaces(list)

	require.Len(t, got, 2)
	assert.Equal(t, "eth0", got[0].GetName())
	assert.Equal(t, "02:42:ac:11:00:02", got[0].GetMac())
	assert.Empty(t, got[0].GetAddresses())
	assert.Equal(t, "wlan0", got[1].GetName())
	assert.Equal(t, "dc:a6:32:01:02:03", got[1].GetMac())
	assert.Equal(t, []string{"192.168.1.20/24", "fe80::dea6:32ff:fe01:203/64"}, got[1].GetAddresses())
}

func TestNormalMAC(t *testing.T) {
	tests := map[string]string{
		"AA:BB:CC:DD:EE:FF":       "aa:bb:cc:dd:ee:ff",
		"aa-bb-cc-dd-ee-ff":       "aa:bb:cc:dd:ee:ff",
		"aabb.ccdd.eeff":          "aa:bb:cc:dd:ee:ff",
		"00:00:00:00:00:00":       "",
		"":                        "",
		"zz:bb:cc:dd:ee:ff":       "",
		"02:00:5e:10:00:00:00:01": "02:00:5e:10:00:00:00:01",
	}
	for in, want := range tests {
		assert.Equal(t, want, normalMAC(in), "normalMAC(%q)", in)
	}
}
