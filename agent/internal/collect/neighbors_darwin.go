//go:build darwin

package collect

import (
	"context"
	"fmt"
)

// readNeighbors would read the ARP and NDP entries from the routing table
// (sysctl NET_RT_FLAGS with RTF_LLINFO) through golang.org/x/net/route,
// which the agent module does not require yet; until it does, macOS agents
// report no neighbours rather than parse routing messages by hand.
func readNeighbors(_ context.Context) ([]Neighbor, error) {
	return nil, fmt.Errorf("%w on darwin in this build (unavailable without golang.org/x/net/route)", ErrNeighborsUnsupported)
}
