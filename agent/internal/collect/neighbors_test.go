package collect

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	require.NoError(t, err)
	return mac
}

func TestTidyNeighborsKeepsOnlyUnicastDevices(t *testing.T) {
	ifaces := map[int]*net.Interface{
		1: {Index: 1, Name: "lo", Flags: net.FlagLoopback | net.FlagUp},
		2: {Index: 2, Name: "eth0", Flags: net.FlagUp},
		3: {Index: 3, Name: "br0", Flags: net.FlagUp},
	}
	var lookups []int
	lookup := func(i int) (*net.Interface, error) {
		lookups = append(lookups, i)
		if ifc, ok := ifaces[i]; ok {
			return ifc, nil
		}
		return nil, errors.New("no such interface")
	}
	entry := func(ifindex int, ip, mac, state string) neighborEntry {
		e := neighborEntry{ifindex: ifindex}
		e.IP = netip.MustParseAddr(ip)
		if mac != "" {
			e.MAC = mustMAC(t, mac)
		}
		e.State = state
		return e
	}

	got := tidyNeighbors([]neighborEntry{
		entry(3, "192.168.7.20", "52:54:00:aa:bb:02", "stale"),
		entry(2, "fe80::1", "52:54:00:aa:bb:01", "reachable"),
		entry(2, "10.0.0.9", "52:54:00:aa:bb:09", "reachable"),
		entry(2, "10.0.0.1", "52:54:00:aa:bb:01", "permanent"),
		entry(2, "10.0.0.2", "", "incomplete"),                       // no link-layer address yet
		entry(2, "10.0.0.3", "00:00:00:00:00:00", "stale"),           // all zeros
		entry(2, "10.0.0.4", "52:54:00:aa:bb:04", "failed"),          // stopped answering
		entry(2, "10.0.0.255", "ff:ff:ff:ff:ff:ff", "permanent"),     // broadcast MAC
		entry(2, "224.0.0.251", "01:00:5e:00:00:fb", "noarp"),        // multicast group
		entry(2, "ff02::fb", "33:33:00:00:00:fb", "noarp"),           // multicast group
		entry(2, "10.0.0.5", "02:00:5e:10:00:00:00:01", "reachable"), // EUI-64 is fine
		entry(1, "127.0.0.1", "52:54:00:aa:bb:05", "noarp"),          // loopback interface
		entry(7, "10.0.0.6", "52:54:00:aa:bb:06", "reachable"),       // interface went away
		entry(2, "10.0.0.7", "52:54:00:aa:bb:07", "reachable"),
		{Neighbor: Neighbor{IP: netip.MustParseAddr("10.0.0.8"), MAC: mustMAC(t, "52:54:00:aa:bb:08"), Interface: "eth1"}},
	}, lookup)

	want := []Neighbor{
		{IP: netip.MustParseAddr("192.168.7.20"), MAC: mustMAC(t, "52:54:00:aa:bb:02"), Interface: "br0", State: "stale"},
		{IP: netip.MustParseAddr("10.0.0.1"), MAC: mustMAC(t, "52:54:00:aa:bb:01"), Interface: "eth0", State: "permanent"},
		{IP: netip.MustParseAddr("10.0.0.5"), MAC: mustMAC(t, "02:00:5e:10:00:00:00:01"), Interface: "eth0", State: "reachable"},
		{IP: netip.MustParseAddr("10.0.0.7"), MAC: mustMAC(t, "52:54:00:aa:bb:07"), Interface: "eth0", State: "reachable"},
		{IP: netip.MustParseAddr("10.0.0.9"), MAC: mustMAC(t, "52:54:00:aa:bb:09"), Interface: "eth0", State: "reachable"},
		{IP: netip.MustParseAddr("fe80::1"), MAC: mustMAC(t, "52:54:00:aa:bb:01"), Interface: "eth0", State: "reachable"},
		{IP: netip.MustParseAddr("10.0.0.8"), MAC: mustMAC(t, "52:54:00:aa:bb:08"), Interface: "eth1"},
	}
	assert.Equal(t, want, got)
	assert.ElementsMatch(t, []int{1, 2, 3, 7}, lookups, "each interface index is looked up once")
}

func TestNeighborsRefuseADoneContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Neighbors(ctx)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestNeighborTrackerRemembersFirstAndLastSeen(t *testing.T) {
	const forget = 10 * time.Minute
	gw := Neighbor{IP: netip.MustParseAddr("10.0.0.1"), MAC: mustMAC(t, "52:54:00:00:00:01"), Interface: "eth0", State: "reachable"}
	printer := Neighbor{IP: netip.MustParseAddr("10.0.0.50"), MAC: mustMAC(t, "52:54:00:00:00:50"), Interface: "eth0", State: "stale"}
	// The same IP answering from another MAC is another device.
	impostor := gw
	impostor.MAC = mustMAC(t, "52:54:00:00:00:99")

	tr := NewNeighborTracker(forget)
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

	got := tr.Observe(t0, []Neighbor{gw, printer})
	assert.Equal(t, []Sighting{
		{Neighbor: gw, FirstSeen: t0, LastSeen: t0},
		{Neighbor: printer, FirstSeen: t0, LastSeen: t0},
	}, got)

	// The printer's entry expired from the table; the gateway is still there.
	t1 := t0.Add(time.Minute)
	got = tr.Observe(t1, []Neighbor{gw})
	assert.Equal(t, []Sighting{{Neighbor: gw, FirstSeen: t0, LastSeen: t1}}, got)

	// Back before forget has passed: still the same sighting since t0.
	t2 := t0.Add(forget - time.Second)
	got = tr.Observe(t2, []Neighbor{printer, gw, impostor})
	assert.Equal(t, []Sighting{
		{Neighbor: printer, FirstSeen: t0, LastSeen: t2},
		{Neighbor: gw, FirstSeen: t0, LastSeen: t2},
		{Neighbor: impostor, FirstSeen: t2, LastSeen: t2},
	}, got)

	// Gone for the forget duration: forgotten, and new when it comes back.
	t3 := t2.Add(forget)
	got = tr.Observe(t3, nil)
	assert.Empty(t, got)
	assert.Empty(t, tr.seen, "a tracker keeps nothing it has forgotten")

	t4 := t3.Add(time.Second)
	got = tr.Observe(t4, []Neighbor{gw})
	assert.Equal(t, []Sighting{{Neighbor: gw, FirstSeen: t4, LastSeen: t4}}, got)
}

// ipNetRow is one MIB_IPNET_ROW2 to lay out in a test table.
type ipNetRow struct {
	family  uint16
	ip      netip.Addr
	ifindex uint32
	mac     string
	state   uint32
}

// buildIPNetTable2 lays rows out as GetIpNetTable2 does on 64-bit Windows,
// filling the fields Neighbors does not read with junk so that a wrong
// offset shows.
func buildIPNetTable2(t *testing.T, rows ...ipNetRow) []byte {
	t.Helper()
	le := binary.LittleEndian
	b := make([]byte, 8+len(rows)*88)
	le.PutUint32(b[0:], uint32(len(rows)))
	le.PutUint32(b[4:], 0xdeadbeef) // padding
	for i, r := range rows {
		row := b[8+i*88:][:88]
		for j := range row {
			row[j] = 0xa5
		}
		le.PutUint16(row[0:], r.family)
		le.PutUint16(row[2:], 0) // port
		if r.ip.Is4() {
			a := r.ip.As4()
			copy(row[4:8], a[:])
		} else {
			le.PutUint32(row[4:], 0) // sin6_flowinfo
			a := r.ip.As16()
			copy(row[8:24], a[:])
			le.PutUint32(row[24:], 5) // sin6_scope_id
		}
		le.PutUint32(row[28:], r.ifindex)
		le.PutUint64(row[32:], 0x0006000000000000|uint64(r.ifindex)) // InterfaceLuid
		var mac net.HardwareAddr
		if r.mac != "" {
			mac = mustMAC(t, r.mac)
		}
		n := copy(row[40:72], mac)
		le.PutUint32(row[72:], uint32(n))
		le.PutUint32(row[76:], r.state)
		row[80] = 0                    // Flags
		le.PutUint32(row[84:], 123456) // ReachabilityTime
	}
	return b
}

func TestParseIPNetTable2(t *testing.T) {
	const (
		nlnsUnreachable = 0
		nlnsIncomplete  = 1
		nlnsStale       = 4
		nlnsReachable   = 5
		nlnsPermanent   = 6
	)
	b := buildIPNetTable2(t,
		ipNetRow{family: winAFInet, ip: netip.MustParseAddr("192.168.1.1"), ifindex: 12, mac: "00:11:22:33:44:55", state: nlnsReachable},
		ipNetRow{family: winAFInet6, ip: netip.MustParseAddr("fe80::211:22ff:fe33:4455"), ifindex: 12, mac: "00:11:22:33:44:55", state: nlnsStale},
		ipNetRow{family: winAFInet, ip: netip.MustParseAddr("192.168.1.77"), ifindex: 12, mac: "00:00:00:00:00:00", state: nlnsUnreachable},
		ipNetRow{family: winAFInet, ip: netip.MustParseAddr("192.168.1.78"), ifindex: 12, state: nlnsIncomplete},
		ipNetRow{family: winAFInet, ip: netip.MustParseAddr("239.255.255.250"), ifindex: 12, mac: "01:00:5e:7f:ff:fa", state: nlnsPermanent},
		ipNetRow{family: 0x1c, ip: netip.MustParseAddr("10.9.9.9"), ifindex: 12, mac: "00:11:22:33:44:66", state: nlnsReachable}, // not an IP family
		ipNetRow{family: winAFInet, ip: netip.MustParseAddr("127.0.0.1"), ifindex: 1, mac: "00:11:22:33:44:77", state: nlnsPermanent},
	)

	entries, err := parseIPNetTable2(b)
	require.NoError(t, err)
	require.Len(t, entries, 6)
	assert.Equal(t, neighborEntry{
		Neighbor: Neighbor{IP: netip.MustParseAddr("192.168.1.1"), MAC: mustMAC(t, "00:11:22:33:44:55"), State: "reachable"},
		ifindex:  12,
	}, entries[0])
	assert.Equal(t, "incomplete", entries[3].State)
	assert.Empty(t, entries[3].MAC)

	lookup := func(i int) (*net.Interface, error) {
		if i == 1 {
			return &net.Interface{Index: 1, Name: "Loopback Pseudo-Interface 1", Flags: net.FlagLoopback}, nil
		}
		return &net.Interface{Index: i, Name: "Ethernet"}, nil
	}
	assert.Equal(t, []Neighbor{
		{IP: netip.MustParseAddr("192.168.1.1"), MAC: mustMAC(t, "00:11:22:33:44:55"), Interface: "Ethernet", State: "reachable"},
		{IP: netip.MustParseAddr("fe80::211:22ff:fe33:4455"), MAC: mustMAC(t, "00:11:22:33:44:55"), Interface: "Ethernet", State: "stale"},
	}, tidyNeighbors(entries, lookup))

	// MACs are copies: Windows frees the table after parsing.
	for i := range b {
		b[i] = 0
	}
	assert.Equal(t, "00:11:22:33:44:55", entries[0].MAC.String())
}

func TestParseIPNetTable2RefusesATruncatedTable(t *testing.T) {
	b := buildIPNetTable2(t,
		ipNetRow{family: winAFInet, ip: netip.MustParseAddr("192.168.1.1"), ifindex: 12, mac: "00:11:22:33:44:55", state: 5},
		ipNetRow{family: winAFInet, ip: netip.MustParseAddr("192.168.1.2"), ifindex: 12, mac: "00:11:22:33:44:56", state: 5},
	)
	_, err := parseIPNetTable2(b[:len(b)-1])
	assert.Error(t, err)
	_, err = parseIPNetTable2(b[:3])
	assert.Error(t, err)

	empty, err := parseIPNetTable2(make([]byte, 8))
	require.NoError(t, err)
	assert.Empty(t, empty)
}
