package collect

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// netlinkMsg builds one netlink message of type typ and sequence seq around
// body, padded to netlink's alignment.
func netlinkMsg(typ uint16, seq uint32, body []byte) []byte {
	ne := binary.NativeEndian
	b := make([]byte, unix.SizeofNlMsghdr, nlmAlign(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint32(b[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], unix.NLM_F_MULTI)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[12:], 0)
	b = append(b, body...)
	return append(b, make([]byte, cap(b)-len(b))...)
}

// newNeighMsg builds an RTM_NEWNEIGH message as the kernel sends it in a
// neighbour dump: struct ndmsg, then NDA_DST and (when mac is not "")
// NDA_LLADDR, then an NDA_CACHEINFO the parser must skip.
func newNeighMsg(t *testing.T, seq uint32, ifindex int32, state uint16, ip, mac string) []byte {
	t.Helper()
	ne := binary.NativeEndian
	addr := netip.MustParseAddr(ip)
	family := uint8(unix.AF_INET6)
	if addr.Is4() {
		family = unix.AF_INET
	}
	body := make([]byte, unix.SizeofNdMsg)
	body[0] = family
	ne.PutUint32(body[4:], uint32(ifindex))
	ne.PutUint16(body[8:], state)
	body[10] = 0    // ndm_flags
	body[11] = 0x01 // ndm_type RTN_UNICAST
	attr := func(typ uint16, data []byte) {
		a := make([]byte, unix.SizeofRtAttr, nlmAlign(unix.SizeofRtAttr+len(data)))
		ne.PutUint16(a[0:], uint16(unix.SizeofRtAttr+len(data)))
		ne.PutUint16(a[2:], typ)
		a = append(a, data...)
		body = append(body, append(a, make([]byte, cap(a)-len(a))...)...)
	}
	attr(unix.NDA_DST, addr.AsSlice())
	if mac != "" {
		attr(unix.NDA_LLADDR, mustMAC(t, mac))
	}
	attr(unix.NDA_CACHEINFO, make([]byte, 16))
	attr(unix.NDA_PROBES, []byte{1, 0, 0, 0})
	return netlinkMsg(unix.RTM_NEWNEIGH, seq, body)
}

func netlinkDone(seq uint32, errno int32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, uint32(-errno))
	return netlinkMsg(unix.NLMSG_DONE, seq, b)
}

func TestParseNeighborDump(t *testing.T) {
	const seq = 7
	eth0 := &net.Interface{Index: 2, Name: "eth0", Flags: net.FlagUp}
	lookup := func(i int) (*net.Interface, error) {
		if i == eth0.Index {
			return eth0, nil
		}
		return nil, errors.New("no such interface")
	}

	tests := []struct {
		name  string
		msg   func(t *testing.T) []byte
		wantN []Neighbor // after tidying
	}{{
		name: "IPv4 reachable",
		msg: func(t *testing.T) []byte {
			return newNeighMsg(t, seq, 2, unix.NUD_REACHABLE, "192.168.1.1", "00:11:22:33:44:55")
		},
		wantN: []Neighbor{{IP: netip.MustParseAddr("192.168.1.1"), MAC: mustMAC(t, "00:11:22:33:44:55"), Interface: "eth0", State: "reachable"}},
	}, {
		name: "IPv6 stale",
		msg: func(t *testing.T) []byte {
			return newNeighMsg(t, seq, 2, unix.NUD_STALE, "fe80::211:22ff:fe33:4455", "00:11:22:33:44:55")
		},
		wantN: []Neighbor{{IP: netip.MustParseAddr("fe80::211:22ff:fe33:4455"), MAC: mustMAC(t, "00:11:22:33:44:55"), Interface: "eth0", State: "stale"}},
	}, {
		name: "IPv4 permanent",
		msg: func(t *testing.T) []byte {
			return newNeighMsg(t, seq, 2, unix.NUD_PERMANENT, "192.168.1.9", "00:11:22:33:44:99")
		},
		wantN: []Neighbor{{IP: netip.MustParseAddr("192.168.1.9"), MAC: mustMAC(t, "00:11:22:33:44:99"), Interface: "eth0", State: "permanent"}},
	}, {
		name: "IPv4 incomplete without lladdr is skipped",
		msg: func(t *testing.T) []byte {
			return newNeighMsg(t, seq, 2, unix.NUD_INCOMPLETE, "192.168.1.2", "")
		},
	}, {
		name: "IPv6 failed without lladdr is skipped",
		msg: func(t *testing.T) []byte {
			return newNeighMsg(t, seq, 2, unix.NUD_FAILED, "fd00::1", "")
		},
	}, {
		name: "IPv4 multicast MAC is skipped",
		msg: func(t *testing.T) []byte {
			return newNeighMsg(t, seq, 2, unix.NUD_NOARP, "224.0.0.251", "01:00:5e:00:00:fb")
		},
	}, {
		name: "IPv6 multicast MAC is skipped",
		msg: func(t *testing.T) []byte {
			return newNeighMsg(t, seq, 2, unix.NUD_NOARP, "ff02::1:ff33:4455", "33:33:ff:33:44:55")
		},
	}, {
		name: "another dump's sequence number is ignored",
		msg: func(t *testing.T) []byte {
			return newNeighMsg(t, seq+1, 2, unix.NUD_REACHABLE, "192.168.1.3", "00:11:22:33:44:33")
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, done, err := parseNeighborDump(tt.msg(t), seq)
			require.NoError(t, err)
			assert.False(t, done)
			got := tidyNeighbors(entries, lookup)
			if tt.wantN == nil {
				assert.Empty(t, got)
				return
			}
			assert.Equal(t, tt.wantN, got)
		})
	}
}

func TestParseNeighborDumpOfManyMessages(t *testing.T) {
	const seq = 3
	var b []byte
	b = append(b, newNeighMsg(t, seq, 2, unix.NUD_DELAY, "10.1.0.1", "02:00:00:00:00:01")...)
	b = append(b, newNeighMsg(t, seq, 4, unix.NUD_PROBE, "2001:db8::1", "02:00:00:00:00:02")...)
	b = append(b, netlinkDone(seq, 0)...)
	b = append(b, newNeighMsg(t, seq, 2, unix.NUD_REACHABLE, "10.1.0.9", "02:00:00:00:00:09")...) // after the end

	entries, done, err := parseNeighborDump(b, seq)
	require.NoError(t, err)
	assert.True(t, done)
	require.Len(t, entries, 2)
	assert.Equal(t, neighborEntry{
		Neighbor: Neighbor{IP: netip.MustParseAddr("10.1.0.1"), MAC: mustMAC(t, "02:00:00:00:00:01"), State: "delay"},
		ifindex:  2,
	}, entries[0])
	assert.Equal(t, neighborEntry{
		Neighbor: Neighbor{IP: netip.MustParseAddr("2001:db8::1"), MAC: mustMAC(t, "02:00:00:00:00:02"), State: "probe"},
		ifindex:  4,
	}, entries[1])
}

func TestParseNeighborDumpErrors(t *testing.T) {
	const seq = 5
	errMsg := func(errno int32) []byte {
		body := make([]byte, 4+unix.SizeofNlMsghdr) // error code, then the request's header
		binary.NativeEndian.PutUint32(body, uint32(-errno))
		return netlinkMsg(unix.NLMSG_ERROR, seq, body)
	}

	_, _, err := parseNeighborDump(errMsg(int32(unix.EPERM)), seq)
	assert.ErrorIs(t, err, unix.EPERM)

	_, _, err = parseNeighborDump(netlinkDone(seq, int32(unix.EBUSY)), seq)
	assert.ErrorIs(t, err, unix.EBUSY)

	msg := newNeighMsg(t, seq, 2, unix.NUD_REACHABLE, "10.1.0.1", "02:00:00:00:00:01")
	_, _, err = parseNeighborDump(msg[:len(msg)-4], seq)
	assert.Error(t, err, "a message longer than the datagram")

	bad := slices.Clone(msg)
	binary.NativeEndian.PutUint16(bad[unix.SizeofNlMsghdr+unix.SizeofNdMsg:], 200) // NDA_DST's length
	_, _, err = parseNeighborDump(bad, seq)
	assert.Error(t, err, "an attribute longer than its message")
}

func TestNudStateNames(t *testing.T) {
	for state, want := range map[uint16]string{
		0x00: "none", 0x01: "incomplete", 0x02: "reachable", 0x04: "stale", 0x08: "delay",
		0x10: "probe", 0x20: "failed", 0x40: "noarp", 0x80: "permanent", 0x06: "0x06",
	} {
		assert.Equal(t, want, nudStateName(state), "state %#x", state)
	}
}

func TestParseProcNetARP(t *testing.T) {
	const sample = `IP address       HW type     Flags       HW address            Mask     Device
192.168.1.1      0x1         0x2         00:11:22:33:44:55     *        eth0
192.168.1.23     0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.5         0x1         0x6         52:54:00:12:34:56     *        br0
172.16.0.9       0x1         0x2         52:54:00:ab:cd:ef     *        wlan0
10.0.0.200       0x1         0x2         ff:ff:ff:ff:ff:ff     *        br0
`
	entries, err := parseProcNetARP(strings.NewReader(sample))
	require.NoError(t, err)

	noLookup := func(int) (*net.Interface, error) {
		t.Fatal("entries of /proc/net/arp are named already")
		return nil, nil
	}
	assert.Equal(t, []Neighbor{
		{IP: netip.MustParseAddr("10.0.0.5"), MAC: mustMAC(t, "52:54:00:12:34:56"), Interface: "br0", State: "permanent"},
		{IP: netip.MustParseAddr("192.168.1.1"), MAC: mustMAC(t, "00:11:22:33:44:55"), Interface: "eth0"},
		{IP: netip.MustParseAddr("172.16.0.9"), MAC: mustMAC(t, "52:54:00:ab:cd:ef"), Interface: "wlan0"},
	}, tidyNeighbors(entries, noLookup))

	_, err = parseProcNetARP(strings.NewReader("header\n192.168.1.1 0x1 0x2\n"))
	assert.Error(t, err, "a short line")
	_, err = parseProcNetARP(strings.NewReader("header\nnot-an-ip 0x1 0x2 00:11:22:33:44:55 * eth0\n"))
	assert.Error(t, err, "a bad address")
}

func TestNeighborsOnThisHost(t *testing.T) {
	ns, err := Neighbors(t.Context())
	require.NoError(t, err)
	for i, n := range ns {
		assert.True(t, usableNeighbor(n), "entry %d: %+v", i, n)
		assert.NotEmpty(t, n.Interface, "entry %d", i)
		if i > 0 {
			prev := ns[i-1]
			assert.True(t, prev.Interface < n.Interface || prev.Interface == n.Interface && prev.IP.Compare(n.IP) <= 0,
				"entries %d and %d out of order", i-1, i)
		}
	}
}

// Live test of Neighbors against a real kernel: two network namespaces
// joined by a veth pair. The test binary runs itself again inside
// namespace A (the only way into a namespace that holds for the whole
// process), and that child prints what Neighbors saw as JSON.
const (
	neighborsChildEnv = "EDGEWARD_NEIGHBORS_CHILD"
	neighborsPeersEnv = "EDGEWARD_NEIGHBORS_PEERS"
	neighborsJSONMark = "NEIGHBORS_JSON "
)

type neighborJSON struct {
	IP        string `json:"ip"`
	MAC       string `json:"mac"`
	Interface string `json:"interface"`
	State     string `json:"state"`
}

func TestNeighborsLive(t *testing.T) {
	if os.Getenv(neighborsChildEnv) == "1" {
		neighborsChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("creating network namespaces needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2's ip command is not installed")
	}

	id := os.Getpid()
	nsA, nsB := fmt.Sprintf("ewnbr-a-%d", id), fmt.Sprintf("ewnbr-b-%d", id)
	vethA, vethB := fmt.Sprintf("ewa%d", id), fmt.Sprintf("ewb%d", id)
	ip := func(args ...string) (string, error) {
		out, err := exec.CommandContext(t.Context(), "ip", args...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return string(out), nil
	}
	mustIP := func(args ...string) string {
		t.Helper()
		out, err := ip(args...)
		require.NoError(t, err)
		return out
	}

	t.Cleanup(func() {
		// Deleting a namespace destroys the veth end inside it; the link
		// is deleted by name too in case it never left this namespace.
		for _, args := range [][]string{{"link", "del", vethA}, {"netns", "del", nsA}, {"netns", "del", nsB}} {
			_ = exec.Command("ip", args...).Run()
		}
	})
	if _, err := ip("netns", "add", nsA); err != nil {
		t.Skipf("cannot create network namespaces here: %v", err)
	}
	mustIP("netns", "add", nsB)
	mustIP("link", "add", vethA, "type", "veth", "peer", "name", vethB)
	mustIP("link", "set", vethA, "netns", nsA)
	mustIP("link", "set", vethB, "netns", nsB)
	mustIP("-n", nsA, "addr", "add", "10.200.0.1/24", "dev", vethA)
	mustIP("-n", nsB, "addr", "add", "10.200.0.2/24", "dev", vethB)
	// IPv6 without duplicate address detection, so the addresses are
	// usable at once; a kernel without IPv6 only loses the NDP half.
	_, errA := ip("-n", nsA, "addr", "add", "fd00:200::1/64", "dev", vethA, "nodad")
	_, errB := ip("-n", nsB, "addr", "add", "fd00:200::2/64", "dev", vethB, "nodad")
	withIPv6 := errA == nil && errB == nil
	if !withIPv6 {
		t.Logf("not checking NDP: %v", errors.Join(errA, errB))
	}
	mustIP("-n", nsA, "link", "set", vethA, "up")
	mustIP("-n", nsB, "link", "set", vethB, "up")

	linkB := mustIP("-n", nsB, "-o", "link", "show", "dev", vethB)
	m := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(linkB)
	require.NotNil(t, m, "no MAC address in %q", linkB)
	macB := m[1]

	peers := []string{"10.200.0.2"}
	if withIPv6 {
		peers = append(peers, "fd00:200::2")
	}
	if _, err := exec.LookPath("ping"); err == nil {
		// The veth carrier comes up shortly after the link is set up.
		pingDeadline := time.Now().Add(10 * time.Second)
		for {
			_, err := ip("netns", "exec", nsA, "ping", "-c1", "-W1", "10.200.0.2")
			if err == nil {
				break
			}
			require.True(t, time.Now().Before(pingDeadline), "10.200.0.2 never answered a ping: %v", err)
			time.Sleep(100 * time.Millisecond)
		}
	} else {
		t.Log("no ping command: the child sends UDP datagrams to the peers to fill its neighbour table")
	}

	exe, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nsA, exe, "-test.run=^TestNeighborsLive$", "-test.count=1")
	cmd.Env = append(os.Environ(), neighborsChildEnv+"=1", neighborsPeersEnv+"="+strings.Join(peers, ","))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "child in %s: %s\n%s", nsA, out, stderr.Bytes())

	var got []neighborJSON
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(line, neighborsJSONMark); ok {
			require.NoError(t, json.Unmarshal([]byte(rest), &got))
		}
	}
	t.Logf("neighbours in %s: %+v", nsA, got)
	for _, peer := range peers {
		i := slices.IndexFunc(got, func(n neighborJSON) bool { return n.IP == peer })
		if assert.GreaterOrEqual(t, i, 0, "%s is not among the neighbours of %s", peer, nsA) {
			assert.Equal(t, macB, got[i].MAC, "MAC of %s", peer)
			assert.Equal(t, vethA, got[i].Interface, "interface of %s", peer)
			assert.Contains(t, []string{"reachable", "stale", "delay", "probe"}, got[i].State, "state of %s", peer)
		}
	}
	for _, n := range got {
		assert.False(t, strings.HasPrefix(n.IP, "127.") || n.IP == "::1", "loopback entry %+v", n)
	}
}

// neighborsChild runs inside namespace A: it sends a datagram to each peer
// (the kernel resolves its link-layer address first, which is all the test
// needs; nothing has to listen), waits for the peers to show up in
// Neighbors, and prints what Neighbors returned.
func neighborsChild(t *testing.T) {
	peers := strings.Split(os.Getenv(neighborsPeersEnv), ",")
	for _, p := range peers {
		if c, err := net.Dial("udp", net.JoinHostPort(p, "9")); err == nil {
			_, _ = c.Write([]byte("edgeward neighbour test"))
			_ = c.Close()
		}
	}
	var ns []Neighbor
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		ns, err = Neighbors(t.Context())
		require.NoError(t, err)
		all := true
		for _, p := range peers {
			all = all && slices.ContainsFunc(ns, func(n Neighbor) bool { return n.IP.String() == p })
		}
		if all || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := make([]neighborJSON, 0, len(ns))
	for _, n := range ns {
		out = append(out, neighborJSON{IP: n.IP.String(), MAC: n.MAC.String(), Interface: n.Interface, State: n.State})
	}
	b, err := json.Marshal(out)
	require.NoError(t, err)
	fmt.Println(neighborsJSONMark + string(b))
}
