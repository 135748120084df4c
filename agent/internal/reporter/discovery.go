package reporter

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/agent/internal/collect"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// discovery is what the agent's site policy lets it observe, as the last
// heartbeat response said. Until one says otherwise the agent observes
// nothing: discovery is denied by default.
type discovery struct {
	passive bool
	cidrs   []netip.Prefix
	version int64
	tracker *collect.NeighborTracker
	// unsupported is set once the platform says it cannot read neighbour
	// tables, so the agent stops asking.
	unsupported bool
}

// update applies the policy from a heartbeat response.
func (d *discovery) update(p *agentv1.DiscoveryPolicy) {
	if p == nil {
		d.passive, d.cidrs = false, nil
		return
	}
	d.passive, d.version = p.GetPassiveNeighbor(), p.GetVersion()
	d.cidrs = d.cidrs[:0]
	for _, c := range p.GetAllowedCidrs() {
		if pfx, err := netip.ParsePrefix(c); err == nil {
			d.cidrs = append(d.cidrs, pfx)
		}
	}
}

func (d *discovery) covers(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, c := range d.cidrs {
		if c.Contains(ip) {
			return true
		}
	}
	return false
}

// observe reads the neighbour tables when the policy allows it, and
// returns the entries it covers and how many it dropped.
func (d *discovery) observe(ctx context.Context, now time.Time) ([]*agentv1.NeighborObservation, uint64, error) {
	if !d.passive || d.unsupported {
		return nil, 0, nil
	}
	ns, err := collect.Neighbors(ctx)
	if errors.Is(err, collect.ErrNeighborsUnsupported) {
		d.unsupported = true
		return nil, 0, err
	}
	if err != nil {
		return nil, 0, err
	}
	if d.tracker == nil {
		d.tracker = collect.NewNeighborTracker(24 * time.Hour)
	}
	var out []*agentv1.NeighborObservation
	var dropped uint64
	for _, s := range d.tracker.Observe(now, ns) {
		if !d.covers(s.IP) {
			dropped++
			continue
		}
		out = append(out, &agentv1.NeighborObservation{
			Mac: strings.ToLower(s.MAC.String()), Ip: s.IP.String(), Interface: s.Interface, State: s.State,
			FirstSeenAt: timestamppb.New(s.FirstSeen), LastSeenAt: timestamppb.New(s.LastSeen),
		})
	}
	return out, dropped, nil
}

// runCommands carries out the commands of a heartbeat response. Results go
// into the next report; a rotation reports when it is done.
// Each command and its outcome is logged by id and name: commands carry
// nothing else, so the log holds no secret.
func (r *Reporter) runCommands(cmds []*agentv1.Command) {
	for _, c := range cmds {
		id := c.GetId()
		switch c.GetType() {
		case agentv1.CommandType_COMMAND_TYPE_REFRESH_FACTS:
			r.log.Info("command received", "command_id", id, "command", cmdRefreshFacts)
			r.collectNow = true
			r.result(id, cmdRefreshFacts, true, "host facts collected and queued")
		case agentv1.CommandType_COMMAND_TYPE_RUN_DISCOVERY:
			r.log.Info("command received", "command_id", id, "command", cmdRunDiscovery)
			if !r.disc.passive {
				r.result(id, cmdRunDiscovery, false, "the site's discovery policy does not allow passive_neighbor for this agent")
				continue
			}
			if r.disc.unsupported {
				r.result(id, cmdRunDiscovery, false, "neighbour tables cannot be read on this platform")
				continue
			}
			r.collectNow = true
			r.discoveryCommand = id
		case agentv1.CommandType_COMMAND_TYPE_ROTATE_CERTIFICATE:
			r.log.Info("command received", "command_id", id, "command", cmdRotateCertificate)
			r.rotateAt = time.Time{}
			r.rotateCommand = id
		default:
			name := fmt.Sprintf("unknown (%d)", int32(c.GetType()))
			r.log.Warn("command received", "command_id", id, "command", name)
			r.result(id, name, false, fmt.Sprintf("unknown command type %v", c.GetType()))
		}
	}
}

// result records a command's outcome for the next report, and logs it.
func (r *Reporter) result(id, name string, ok bool, summary string) {
	if ok {
		r.log.Info("command succeeded", "command_id", id, "command", name, "summary", summary)
	} else {
		r.log.Warn("command failed", "command_id", id, "command", name, "summary", summary)
	}
	r.results = append(r.results, &agentv1.CommandResult{CommandId: id, Succeeded: ok, Summary: summary, CompletedAt: timestamppb.Now()})
}
