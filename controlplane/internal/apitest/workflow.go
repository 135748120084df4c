package apitest

import (
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// Sighting is what UnauthorizedDevice set up and raised, through the real
// workflow of the first tenant: a site whose policy lets its agents observe
// passively, an agent enrolled into it, and its neighbour report of a device
// nobody authorized.
type Sighting struct {
	SiteID  string
	Agent   *Agent
	AlertID string
	AssetID string
}

// UnauthorizedDevice raises an unauthorized-device alert for mac at ip
// (which must be inside 198.51.100.0/24) and returns what it made.
func (e *Env) UnauthorizedDevice(t testing.TB, mac, ip string) Sighting {
	t.Helper()
	admin := e.Client(t, e.AdminToken)
	var site struct {
		ID string `json:"id"`
	}
	admin.Do("POST", "/api/v1/sites", map[string]any{"name": "site " + mac}).JSON(t, &site)
	r := admin.Do("GET", "/api/v1/discovery/policies/"+site.ID, nil)
	r = admin.Do("PUT", "/api/v1/discovery/policies/"+site.ID, map[string]any{
		"allowed_cidrs": []string{"198.51.100.0/24"}, "allowed_methods": []string{"passive_neighbor"},
		"collector_agent_ids": []string{}, "observation_retention_days": 30, "allowlist": []any{},
	}, Header("If-Match", r.Header.Get("ETag")))
	if r.Status != http.StatusOK {
		t.Fatalf("open the discovery policy: %d %s", r.Status, r.Body)
	}
	_, token := e.EnrollmentToken(t, map[string]any{"name": "collector", "site_id": site.ID})
	a, err := e.Enroll(t, token, "collector-"+mac, "collector")
	if err != nil {
		t.Fatalf("enroll the collector: %v", err)
	}
	// The first heartbeat learns the policy; the second carries the sighting.
	for _, obs := range [][]*agentv1.NeighborObservation{nil, {{Mac: mac, Ip: ip, Interface: "eth0", State: "reachable", LastSeenAt: timestamppb.Now()}}} {
		rep := a.Report()
		rep.Observations = obs
		if _, err := a.RPC(t).Heartbeat(t.Context(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{rep}})); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	s := Sighting{SiteID: site.ID, Agent: a}
	deadline := time.Now().Add(30 * time.Second)
	for s.AlertID == "" {
		var alerts struct {
			Items []struct {
				ID      string `json:"id"`
				AssetID string `json:"asset_id"`
				Title   string `json:"title"`
			} `json:"items"`
		}
		admin.Do("GET", "/api/v1/alerts?status=open&limit=200", nil).JSON(t, &alerts)
		for _, al := range alerts.Items {
			var asset struct {
				MACs []string `json:"macs"`
			}
			admin.Do("GET", "/api/v1/assets/"+al.AssetID, nil).JSON(t, &asset)
			for _, m := range asset.MACs {
				if m == mac {
					s.AlertID, s.AssetID = al.ID, al.AssetID
				}
			}
		}
		if s.AlertID == "" {
			if time.Now().After(deadline) {
				t.Fatalf("no unauthorized-device alert for %s", mac)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return s
}
