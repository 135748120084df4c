package collect

import (
	"cmp"
	"context"
	"net"
	"slices"

	gnet "github.com/shirou/gopsutil/v4/net"

	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// interfaces returns the host's own network interfaces, or nil when they
// cannot be listed.
func interfaces(ctx context.Context) []*agentv1.NetworkInterface {
	list, err := gnet.InterfacesWithContext(ctx)
	if err != nil {
		return nil
	}
	return hardwareInterfaces(list)
}

// hardwareInterfaces keeps the interfaces that have a hardware address and
// are not loopback, sorted by name with their addresses sorted, so that the
// same host always gives the same list.
func hardwareInterfaces(list gnet.InterfaceStatList) []*agentv1.NetworkInterface {
	out := make([]*agentv1.NetworkInterface, 0, len(list))
	for _, ifc := range list {
		if slices.Contains(ifc.Flags, "loopback") {
			continue
		}
		mac := normalMAC(ifc.HardwareAddr)
		if mac == "" {
			continue
		}
		addrs := make([]string, 0, len(ifc.Addrs))
		for _, a := range ifc.Addrs {
			if a.Addr != "" {
				addrs = append(addrs, a.Addr)
			}
		}
		slices.Sort(addrs)
		out = append(out, &agentv1.NetworkInterface{Name: ifc.Name, Mac: mac, Addresses: addrs})
	}
	slices.SortFunc(out, func(a, b *agentv1.NetworkInterface) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Mac, b.Mac))
	})
	return out
}

// normalMAC returns s in lowercase colon form, or "" when s is not a
// hardware address or is all zeros (as tunnels and some virtual devices
// report).
func normalMAC(s string) string {
	if s == "" {
		return ""
	}
	hw, err := net.ParseMAC(s)
	if err != nil {
		return ""
	}
	for _, b := range hw {
		if b != 0 {
			return hw.String()
		}
	}
	return ""
}
