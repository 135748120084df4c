package collect

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// ErrNeighborsUnsupported is returned by Neighbors on platforms, or in
// builds, that cannot read the host's neighbour table. Retrying does not
// help, so a caller that sees it can stop asking.
var ErrNeighborsUnsupported = errors.New("neighbour discovery is not supported")

// Neighbor is one entry of the host's neighbour table.
type Neighbor struct {
	// IP is the neighbour's address, without a zone: Interface says which
	// link a link-local address belongs to.
	IP netip.Addr
	// MAC is the neighbour's link-layer address. It is never nil or all
	// zeros in the entries Neighbors returns.
	MAC net.HardwareAddr
	// Interface is the name of the local interface the neighbour was seen on.
	Interface string
	// State is the kernel's state of the entry in lowercase (reachable,
	// stale, delay, probe, permanent, noarp, ...), or "" when the
	// operating system does not say.
	State string
}

// Neighbors reads the host's IPv4 ARP and IPv6 NDP tables: the devices this
// host has recently exchanged packets with on its links. It only reads what
// the kernel already knows; it sends nothing on the network.
//
// Entries without a link-layer address (still being resolved, or failed),
// entries whose address is a multicast or broadcast MAC (multicast groups,
// the broadcast address), entries whose link-layer address is not an
// EUI-48 or EUI-64 (the IPv4 address a GRE or IPIP tunnel uses in its
// place does not name a device) and loopback entries are left out. The
// result is sorted by interface, then IP, so the same table always gives
// the same list.
//
// On Linux it asks the kernel over rtnetlink and, where netlink is not
// allowed (some sandboxes), falls back to /proc/net/arp, which has no IPv6
// entries and no entry states. On Windows it calls GetIpNetTable2. On
// macOS it reads the routing table's RTF_LLINFO entries (no states but
// "permanent"). On other platforms the error wraps ErrNeighborsUnsupported.
func Neighbors(ctx context.Context) ([]Neighbor, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("neighbors: %w", err)
	}
	return readNeighbors(ctx)
}

// neighborEntry is a table entry as read from the operating system, before
// its interface index is named and unwanted entries are left out.
type neighborEntry struct {
	Neighbor
	// ifindex is the interface's index when the table gives one instead of
	// a name; 0 when Interface is already set.
	ifindex int
}

// tidyNeighbors names the interfaces of entries, leaves out the entries
// Neighbors promises not to return, and sorts the rest. lookup is asked
// once per interface index; an entry whose interface it cannot find is
// left out, since the kernel drops the neighbours of an interface that
// goes away.
func tidyNeighbors(entries []neighborEntry, lookup func(index int) (*net.Interface, error)) []Neighbor {
	type found struct {
		ifc *net.Interface
		ok  bool
	}
	interfaces := make(map[int]found)
	out := make([]Neighbor, 0, len(entries))
	for _, e := range entries {
		if e.ifindex != 0 {
			f, seen := interfaces[e.ifindex]
			if !seen {
				ifc, err := lookup(e.ifindex)
				f = found{ifc: ifc, ok: err == nil && ifc != nil}
				interfaces[e.ifindex] = f
			}
			if !f.ok || f.ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			e.Interface = f.ifc.Name
		}
		if !usableNeighbor(e.Neighbor) {
			continue
		}
		out = append(out, e.Neighbor)
	}
	sortNeighbors(out)
	return out
}

// usableNeighbor reports whether n names a unicast device on a link.
func usableNeighbor(n Neighbor) bool {
	ip := n.IP
	if !ip.IsValid() || ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() {
		return false
	}
	if ip.Is4() && ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	switch n.State {
	case "incomplete", "failed", "unreachable":
		// Some systems keep the last address of an entry that stopped
		// answering; it is not a neighbour any more.
		return false
	}
	mac := n.MAC
	if len(mac) != 6 && len(mac) != 8 {
		return false
	}
	// The least significant bit of the first octet marks a group (multicast
	// or broadcast) address, which no single device owns.
	if mac[0]&1 != 0 {
		return false
	}
	return !allZero(mac)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func sortNeighbors(ns []Neighbor) {
	slices.SortFunc(ns, func(a, b Neighbor) int {
		return cmp.Or(
			cmp.Compare(a.Interface, b.Interface),
			a.IP.Compare(b.IP),
			bytes.Compare(a.MAC, b.MAC),
		)
	})
}

// Sighting is a neighbour as seen by a NeighborTracker: when it was first
// seen, and when it was last seen (the time of the latest Observe that
// listed it).
type Sighting struct {
	Neighbor
	FirstSeen time.Time
	LastSeen  time.Time
}

// NeighborTracker remembers when each neighbour, told apart by interface,
// IP and MAC, was first and last seen across calls to Observe, so that
// reports can carry first_seen and last_seen although each read of the
// neighbour table is only a snapshot. A neighbour that drops out of the
// table for a while (its entry expired between reads) keeps its first
// sighting as long as it comes back within the forget duration.
//
// A NeighborTracker is not safe for concurrent use: it is meant to be owned
// by the one goroutine that reads the table periodically.
type NeighborTracker struct {
	forget time.Duration
	seen   map[neighborKey]sightingTimes
}

type neighborKey struct {
	iface string
	ip    netip.Addr
	mac   string
}

type sightingTimes struct {
	first, last time.Time
}

// NewNeighborTracker returns a tracker that forgets a neighbour once it has
// not been seen for the forget duration; a neighbour that comes back after
// that is reported as newly seen. With forget <= 0 it remembers only what
// the latest Observe listed.
func NewNeighborTracker(forget time.Duration) *NeighborTracker {
	return &NeighborTracker{forget: forget, seen: make(map[neighborKey]sightingTimes)}
}

// Observe records that the neighbours ns were seen at now, and returns one
// Sighting for each of them, in the order of ns. Neighbours last seen
// forget or longer before now are forgotten first, which also bounds the
// tracker's memory to what was seen within that duration.
func (t *NeighborTracker) Observe(now time.Time, ns []Neighbor) []Sighting {
	for k, s := range t.seen {
		if now.Sub(s.last) >= t.forget {
			delete(t.seen, k)
		}
	}
	out := make([]Sighting, 0, len(ns))
	for _, n := range ns {
		k := neighborKey{iface: n.Interface, ip: n.IP, mac: string(n.MAC)}
		s, ok := t.seen[k]
		if !ok {
			s.first = now
		}
		s.last = now
		t.seen[k] = s
		out = append(out, Sighting{Neighbor: n, FirstSeen: s.first, LastSeen: s.last})
	}
	return out
}
