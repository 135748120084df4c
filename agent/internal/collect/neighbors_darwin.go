//go:build darwin

package collect

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/route"
)

// readNeighbors reads the ARP (IPv4) and NDP (IPv6) entries of the routing
// table, as `arp -an` and `ndp -an` do: on macOS, as on the BSDs, a
// neighbour is a host route flagged RTF_LLINFO whose gateway is the
// neighbour's link-layer address (sysctl NET_RT_FLAGS). The kernel keeps no
// reachability state there; a static entry reads as "permanent", others as
// "".
func readNeighbors(_ context.Context) ([]Neighbor, error) {
	var entries []neighborEntry
	for _, af := range []int{syscall.AF_INET, syscall.AF_INET6} {
		rib, err := route.FetchRIB(af, route.RIBType(syscall.NET_RT_FLAGS), syscall.RTF_LLINFO)
		if err != nil {
			return nil, fmt.Errorf("neighbors: read the routing table: %w", err)
		}
		msgs, err := route.ParseRIB(route.RIBType(syscall.NET_RT_FLAGS), rib)
		if err != nil {
			return nil, fmt.Errorf("neighbors: parse the routing table: %w", err)
		}
		for _, m := range msgs {
			if e, ok := neighborFromRoute(m); ok {
				entries = append(entries, e)
			}
		}
	}
	return tidyNeighbors(entries, net.InterfaceByIndex), nil
}

// neighborFromRoute reads one RTF_LLINFO route: its destination is the
// neighbour's address, its gateway a link-layer address with the interface.
func neighborFromRoute(m route.Message) (neighborEntry, bool) {
	rm, ok := m.(*route.RouteMessage)
	if !ok || rm.Flags&syscall.RTF_LLINFO == 0 || len(rm.Addrs) <= syscall.RTAX_GATEWAY {
		return neighborEntry{}, false
	}
	var ip netip.Addr
	switch a := rm.Addrs[syscall.RTAX_DST].(type) {
	case *route.Inet4Addr:
		ip = netip.AddrFrom4(a.IP)
	case *route.Inet6Addr:
		ip = netip.AddrFrom16(a.IP) // the zone is the interface, named below
	default:
		return neighborEntry{}, false
	}
	link, ok := rm.Addrs[syscall.RTAX_GATEWAY].(*route.LinkAddr)
	if !ok || len(link.Addr) == 0 {
		return neighborEntry{}, false // still being resolved
	}
	e := neighborEntry{Neighbor: Neighbor{IP: ip, MAC: net.HardwareAddr(append([]byte(nil), link.Addr...))}}
	if rm.Flags&syscall.RTF_STATIC != 0 {
		e.State = "permanent"
	}
	switch {
	case link.Index != 0:
		e.ifindex = link.Index
	case rm.Index != 0:
		e.ifindex = rm.Index
	default:
		e.Interface = link.Name
	}
	return e, e.ifindex != 0 || e.Interface != ""
}
