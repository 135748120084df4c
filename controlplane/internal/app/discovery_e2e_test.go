package app_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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

	"github.com/edgeward/edgeward/controlplane/internal/audit"
)

// lab is three network namespaces' worth of network for one test: the
// agent's namespace joined by a veth pair to a "rogue" device's namespace
// (10.200.0.0/24, fd00:200::/64), and by another to this namespace, where
// the control plane listens (10.201.0.1).
type lab struct {
	t                   *testing.T
	agentNS, rogueNS    string
	rogueMAC, rogueIPv6 string
	controlPlaneIP      string
}

// newLab builds the namespaces, or skips the test where it cannot (not
// root, no iproute2, no namespace support).
func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2's ip command is not installed")
	}
	id := os.Getpid()
	l := &lab{t: t, agentNS: fmt.Sprintf("ew-agent-%d", id), rogueNS: fmt.Sprintf("ew-rogue-%d", id), controlPlaneIP: "10.201.0.1"}
	vethA, vethB := fmt.Sprintf("ewa%d", id), fmt.Sprintf("ewb%d", id)
	vethHost, vethUp := fmt.Sprintf("ewh%d", id), fmt.Sprintf("ewu%d", id)
	t.Cleanup(func() {
		for _, args := range [][]string{{"link", "del", vethA}, {"link", "del", vethHost}, {"netns", "del", l.agentNS}, {"netns", "del", l.rogueNS}} {
			_ = exec.Command("ip", args...).Run()
		}
	})
	if _, err := l.ip("netns", "add", l.agentNS); err != nil {
		t.Skipf("cannot create network namespaces here: %v", err)
	}
	l.mustIP("netns", "add", l.rogueNS)
	// Agent <-> rogue: the network the agent watches.
	l.mustIP("link", "add", vethA, "type", "veth", "peer", "name", vethB)
	l.mustIP("link", "set", vethA, "netns", l.agentNS)
	l.mustIP("link", "set", vethB, "netns", l.rogueNS)
	l.mustIP("-n", l.agentNS, "addr", "add", "10.200.0.1/24", "dev", vethA)
	l.mustIP("-n", l.rogueNS, "addr", "add", "10.200.0.2/24", "dev", vethB)
	_, errA := l.ip("-n", l.agentNS, "addr", "add", "fd00:200::1/64", "dev", vethA, "nodad")
	_, errB := l.ip("-n", l.rogueNS, "addr", "add", "fd00:200::2/64", "dev", vethB, "nodad")
	if errA == nil && errB == nil {
		l.rogueIPv6 = "fd00:200::2"
	} else {
		t.Logf("without IPv6: %v %v", errA, errB)
	}
	// Agent <-> this namespace: the way to the control plane.
	l.mustIP("link", "add", vethHost, "type", "veth", "peer", "name", vethUp)
	l.mustIP("link", "set", vethUp, "netns", l.agentNS)
	l.mustIP("addr", "add", l.controlPlaneIP+"/30", "dev", vethHost)
	l.mustIP("-n", l.agentNS, "addr", "add", "10.201.0.2/30", "dev", vethUp)
	for _, up := range [][]string{{"-n", l.agentNS, "link", "set", vethA, "up"}, {"-n", l.rogueNS, "link", "set", vethB, "up"},
		{"link", "set", vethHost, "up"}, {"-n", l.agentNS, "link", "set", vethUp, "up"}, {"-n", l.agentNS, "link", "set", "lo", "up"}} {
		l.mustIP(up...)
	}
	m := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(l.mustIP("-n", l.rogueNS, "-o", "link", "show", "dev", vethB))
	require.NotNil(t, m, "no MAC on the rogue interface")
	l.rogueMAC = m[1]
	return l
}

func (l *lab) ip(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func (l *lab) mustIP(args ...string) string {
	l.t.Helper()
	out, err := l.ip(args...)
	require.NoError(l.t, err)
	return out
}

// chatter has the rogue device and the agent's host exchange a datagram
// each way (no listener needed: resolving the link-layer address is the
// point), so each appears in the other's neighbour table, over IPv4 and
// IPv6. The agent only reads its table; the traffic is the network's.
func (l *lab) chatter() {
	send := func(ns, host string) {
		script := fmt.Sprintf("echo edgeward > /dev/udp/%s/9", host)
		_ = exec.Command("ip", "netns", "exec", ns, "bash", "-c", script).Run()
	}
	send(l.rogueNS, "10.200.0.1")
	send(l.agentNS, "10.200.0.2")
	if l.rogueIPv6 != "" {
		send(l.rogueNS, "fd00:200::1")
		send(l.agentNS, l.rogueIPv6)
	}
}

// jsonOf decodes b into v.
func jsonOf[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(b, &v), "%s", b)
	return v
}

type items[T any] struct {
	Items []T `json:"items"`
}

// TestUnauthorizedDeviceEndToEnd is the product's core promise, with the
// real binaries on real networks: a device that should not be on the
// network is seen by an agent under policy, raised, evidenced, worked and
// closed, and an auditor can prove it happened without seeing the device's
// identifiers.
func TestUnauthorizedDeviceEndToEnd(t *testing.T) {
	l := newLab(t)
	ln, err := net.Listen("tcp", l.controlPlaneIP+":0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	cp := newControlPlaneOn(t, addr, "--agent-heartbeat-interval", "1s", "--public-host", l.controlPlaneIP)

	tokenFor := func(role string) (token, principal string) {
		out, errOut, code := run(t, []string{"EDGEWARD_ADMIN_DATABASE_URL=" + cp.db.OwnerURL}, "token", "create", "--tenant", cp.tenant, "--role", role, "--name", role, "--json")
		require.Equal(t, 0, code, errOut)
		v := jsonOf[struct {
			Token       string `json:"token"`
			PrincipalID string `json:"principal_id"`
		}](t, []byte(out))
		return v.Token, v.PrincipalID
	}
	analyst, analystID := tokenFor("analyst")
	auditor, _ := tokenFor("auditor")
	scanner, _ := tokenFor("service_account")
	as := func(token, method, path string, body any) (int, []byte) {
		t.Helper()
		status, _, b := cp.call(token, method, path, body, nil)
		return status, b
	}

	// A site, and an agent in the lab bound to it.
	status, body := cp.api("POST", "/api/v1/sites", map[string]any{"name": "lab"})
	require.Equal(t, http.StatusCreated, status, "%s", body)
	site := jsonOf[struct {
		ID string `json:"id"`
	}](t, body).ID
	_, token := cp.enrollmentToken(map[string]any{"name": "lab", "site_id": site})
	dir := agentDir(t)
	out, errOut, code := runProgram(t, "ip", nil, "netns", "exec", l.agentNS, agentBinary, "enroll", "--server", cp.url(), "--token", token, "--state-dir", dir)
	require.Equal(t, 0, code, "%s%s", out, errOut)
	cfg := jsonOf[struct {
		AgentID string `json:"agent_id"`
	}](t, must(os.ReadFile(dir+"/config.json")))
	ag := startProgram(t, "ip", nil, "netns", "exec", l.agentNS, agentBinary, "run", "--state-dir", dir)
	defer ag.stop(t)
	eventually(t, 30*time.Second, "the agent's first heartbeats", func() bool { return cp.agent(cfg.AgentID).ReportsApplied >= 2 })

	waitHeartbeats := func(n int64) {
		t.Helper()
		target := cp.agent(cfg.AgentID).LastSeq + n
		eventually(t, 30*time.Second, "heartbeats", func() bool { l.chatter(); return cp.agent(cfg.AgentID).LastSeq >= target })
	}
	observations := func(token string) items[map[string]any] {
		t.Helper()
		status, b := as(token, "GET", "/api/v1/discovery/observations?site_id="+site, nil)
		require.Equal(t, http.StatusOK, status, "%s", b)
		return jsonOf[items[map[string]any]](t, b)
	}
	putPolicy := func(cidrs ...string) {
		t.Helper()
		_, hdr, b := cp.call(cp.admin, "GET", "/api/v1/discovery/policies/"+site, nil, nil)
		status, _, b := cp.call(cp.admin, "PUT", "/api/v1/discovery/policies/"+site, map[string]any{
			"allowed_cidrs": cidrs, "allowed_methods": []string{"passive_neighbor", "nmap"}, "collector_agent_ids": []string{},
			"observation_retention_days": 30, "allowlist": []any{},
		}, http.Header{"If-Match": {hdr.Get("ETag")}})
		require.Equal(t, http.StatusOK, status, "%s", b)
	}

	// Deny by default: the network chatters, the agent reports, nothing is
	// observed.
	waitHeartbeats(3)
	assert.Empty(t, observations(cp.admin).Items, "no policy, no observations")

	// A policy for another network: the agent observes but keeps nothing
	// and counts what it dropped.
	putPolicy("10.99.0.0/24")
	type collector struct {
		ID                 string `json:"id"`
		Observing          bool   `json:"observing"`
		DroppedByAgent     int64  `json:"dropped_outside_policy_by_agent"`
		ObservationsPerHur int64  `json:"observations_last_hour"`
	}
	eventually(t, 30*time.Second, "the agent to drop out-of-policy neighbours", func() bool {
		l.chatter()
		_, b := cp.api("GET", "/api/v1/collectors", nil)
		cs := jsonOf[items[collector]](t, b).Items
		return len(cs) == 1 && cs[0].Observing && cs[0].DroppedByAgent > 0
	})
	assert.Empty(t, observations(cp.admin).Items, "a policy that does not cover the network observes nothing")

	// Active methods are denied whatever the policy lists, with the rule
	// named; passive observation outside the CIDRs too.
	type decision struct {
		Decision string `json:"decision"`
		Rule     string `json:"rule"`
	}
	status, body = as(scanner, "POST", "/api/v1/discovery/authorizations", map[string]any{"site_id": site, "method": "nmap", "target": "10.200.0.2"})
	require.Equal(t, http.StatusCreated, status, "%s", body)
	assert.Equal(t, decision{"denied", "active_methods_disabled"}, jsonOf[decision](t, body))
	status, body = as(scanner, "POST", "/api/v1/discovery/authorizations", map[string]any{"site_id": site, "method": "passive_neighbor", "target": "10.200.0.2"})
	require.Equal(t, http.StatusCreated, status, "%s", body)
	assert.Equal(t, decision{"denied", "target_outside_allowed_cidrs"}, jsonOf[decision](t, body))

	// The policy covers the lab network: the rogue device is observed.
	cidrs := []string{"10.200.0.0/24"}
	if l.rogueIPv6 != "" {
		cidrs = append(cidrs, "fd00:200::/64")
	}
	putPolicy(cidrs...)
	status, body = as(scanner, "POST", "/api/v1/discovery/authorizations", map[string]any{"site_id": site, "method": "passive_neighbor", "target": "10.200.0.2"})
	require.Equal(t, http.StatusCreated, status, "%s", body)
	assert.Equal(t, decision{"granted", "allowed_cidr:10.200.0.0/24"}, jsonOf[decision](t, body))
	wantIPs := []string{"10.200.0.2"}
	if l.rogueIPv6 != "" {
		wantIPs = append(wantIPs, l.rogueIPv6)
	}
	eventually(t, 60*time.Second, "observations of the rogue device over ARP and NDP", func() bool {
		l.chatter()
		var ips []string
		for _, o := range observations(cp.admin).Items {
			if o["mac"] == l.rogueMAC {
				ips = append(ips, o["ip"].(string))
			}
		}
		return !slices.ContainsFunc(wantIPs, func(ip string) bool { return !slices.Contains(ips, ip) })
	})
	for _, o := range observations(cp.admin).Items {
		ip := netip.MustParseAddr(o["ip"].(string))
		assert.True(t, slices.ContainsFunc(cidrs, func(c string) bool { return netip.MustParsePrefix(c).Contains(ip) }),
			"only addresses the policy covers are kept: %v", o)
	}
	status, body = as(auditor, "GET", "/api/v1/discovery/observations?site_id="+site, nil)
	require.Equal(t, http.StatusOK, status)
	assert.NotContains(t, string(body), l.rogueMAC, "auditors see observations redacted")
	assert.Contains(t, string(body), l.rogueMAC[:8], "… down to the vendor prefix")

	// One unauthorized asset and one open alert for it, with evidence and a
	// timeline.
	type asset struct {
		ID            string   `json:"id"`
		Source        string   `json:"source"`
		Macs          []string `json:"macs"`
		Addresses     []string `json:"addresses"`
		Authorization struct {
			State string `json:"state"`
		} `json:"authorization"`
	}
	_, body = cp.api("GET", "/api/v1/assets?source=discovery", nil)
	discovered := jsonOf[items[asset]](t, body).Items
	require.Len(t, discovered, 1, "one device, however many addresses: %s", body)
	rogue := discovered[0]
	assert.Equal(t, []string{l.rogueMAC}, rogue.Macs)
	assert.Equal(t, "unauthorized", rogue.Authorization.State)
	type alert struct {
		ID        string   `json:"id"`
		Type      string   `json:"type"`
		Status    string   `json:"status"`
		AssetID   string   `json:"asset_id"`
		TicketIDs []string `json:"ticket_ids"`
	}
	_, body = cp.api("GET", "/api/v1/alerts?status=open", nil)
	open := jsonOf[items[alert]](t, body).Items
	require.Len(t, open, 1, "%s", body)
	raised := open[0]
	assert.Equal(t, "unauthorized_device", raised.Type)
	assert.Equal(t, rogue.ID, raised.AssetID)
	_, body = cp.api("GET", "/api/v1/alerts/"+raised.ID+"/evidence", nil)
	assert.Contains(t, string(body), `"kind":"observation"`)
	assert.Contains(t, string(body), l.rogueMAC)
	// The host's own interfaces belong to its agent's asset, never to a
	// discovered one, and the way to the control plane is outside policy.
	_, body = cp.api("GET", "/api/v1/assets?source=agent", nil)
	assert.Len(t, jsonOf[items[asset]](t, body).Items, 1)

	// The analyst works it: acknowledge, open a ticket from it, resolve it
	// as authorized.
	status, body = as(analyst, "POST", "/api/v1/alerts/"+raised.ID+"/acknowledge", map[string]any{"note": "checking with the lab owner"})
	require.Equal(t, http.StatusOK, status, "%s", body)
	status, body = as(analyst, "POST", "/api/v1/alerts/"+raised.ID+"/tickets", map[string]any{"priority": "high", "assignee_id": analystID})
	require.Equal(t, http.StatusCreated, status, "%s", body)
	ticket := jsonOf[struct {
		ID string `json:"id"`
	}](t, body).ID
	status, body = as(analyst, "POST", "/api/v1/alerts/"+raised.ID+"/resolve", map[string]any{"resolution": "authorized", "note": "the lab's test rig"})
	require.Equal(t, http.StatusOK, status, "%s", body)
	resolved := jsonOf[alert](t, body)
	assert.Equal(t, "resolved", resolved.Status)
	assert.Equal(t, []string{ticket}, resolved.TicketIDs)
	status, body = as(analyst, "POST", "/api/v1/alerts/"+raised.ID+"/acknowledge", nil)
	assert.Equal(t, http.StatusConflict, status, "%s", body)

	_, body = cp.api("GET", "/api/v1/assets/"+rogue.ID, nil)
	assert.Equal(t, "authorized", jsonOf[asset](t, body).Authorization.State)
	_, body = cp.api("GET", "/api/v1/tickets/"+ticket+"/links", nil)
	type link struct {
		Type     string `json:"type"`
		TargetID string `json:"target_id"`
	}
	links := jsonOf[items[link]](t, body).Items
	assert.Contains(t, links, link{"alert", raised.ID}, "the ticket links back to the alert")

	_, body = cp.api("GET", "/api/v1/alerts/"+raised.ID+"/timeline", nil)
	var kinds []string
	for _, e := range jsonOf[items[struct {
		Kind string `json:"kind"`
	}]](t, body).Items {
		kinds = append(kinds, e.Kind)
	}
	assert.Equal(t, "raised", kinds[0])
	for _, k := range []string{"acknowledged", "ticket_linked", "resolved"} {
		assert.Contains(t, kinds, k)
	}

	// Every step is in the audit log, and every evidence record's hash is
	// the hash of its content.
	var actions []string
	for _, target := range []string{raised.ID, rogue.ID, ticket} {
		_, body = cp.api("GET", "/api/v1/audit/events?target_id="+target, nil)
		for _, e := range jsonOf[items[struct {
			Action string `json:"action"`
		}]](t, body).Items {
			actions = append(actions, e.Action)
		}
	}
	for _, a := range []string{"alert.raised", "alert.acknowledged", "alert.resolved", "asset.authorized", "ticket.created"} {
		assert.Contains(t, actions, a)
	}
	status, _, body = cp.call(analyst, "GET", "/api/v1/evidence?alert_id="+raised.ID, nil, nil)
	require.Equal(t, http.StatusOK, status)
	type evidence struct {
		ID      string          `json:"id"`
		Kind    string          `json:"kind"`
		Content json.RawMessage `json:"content"`
		SHA256  string          `json:"content_sha256"`
	}
	full := jsonOf[items[evidence]](t, body).Items
	var evKinds []string
	for _, e := range full {
		evKinds = append(evKinds, e.Kind)
		canon, err := audit.CanonicalJSON(e.Content)
		require.NoError(t, err)
		sum := sha256.Sum256(canon)
		assert.Equal(t, hex.EncodeToString(sum[:]), e.SHA256, "evidence %s", e.ID)
	}
	assert.Contains(t, evKinds, "observation")
	assert.Contains(t, evKinds, "triage")
	assert.Contains(t, evKinds, "authorization")

	// The auditor reads the same evidence redacted, same ids and hashes,
	// and every mutation is refused.
	status, body = as(auditor, "GET", "/api/v1/auditor/evidence?alert_id="+raised.ID, nil)
	require.Equal(t, http.StatusOK, status, "%s", body)
	assert.NotContains(t, string(body), l.rogueMAC)
	redacted := jsonOf[items[evidence]](t, body).Items
	require.Len(t, redacted, len(full))
	for i := range full {
		assert.Equal(t, full[i].ID, redacted[i].ID)
		assert.Equal(t, full[i].SHA256, redacted[i].SHA256)
	}
	status, _ = as(auditor, "GET", "/api/v1/evidence?alert_id="+raised.ID, nil)
	assert.Equal(t, http.StatusForbidden, status, "the full evidence is not for auditors")
	for _, m := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/alerts/" + raised.ID + "/acknowledge", nil},
		{"POST", "/api/v1/alerts/" + raised.ID + "/assign", map[string]any{"assignee": analystID}},
		{"POST", "/api/v1/alerts/" + raised.ID + "/resolve", map[string]any{"resolution": "removed"}},
		{"POST", "/api/v1/alerts/" + raised.ID + "/tickets", map[string]any{}},
		{"POST", "/api/v1/assets/" + rogue.ID + "/unauthorize", map[string]any{"reason": "audit"}},
		{"POST", "/api/v1/assets/" + rogue.ID + "/authorize", map[string]any{"reason": "audit"}},
		{"PATCH", "/api/v1/tickets/" + ticket, map[string]any{"status": "closed"}},
		{"POST", "/api/v1/tickets/" + ticket + "/comments", map[string]any{"body": "x"}},
		{"POST", "/api/v1/tickets/" + ticket + "/links", map[string]any{"type": "url", "url": "https://example.com"}},
		{"PUT", "/api/v1/discovery/policies/" + site, map[string]any{}},
		{"POST", "/api/v1/agents/" + cfg.AgentID + "/commands", map[string]any{"type": "run_discovery"}},
	} {
		status, body := as(auditor, m.method, m.path, m.body)
		assert.Equal(t, http.StatusForbidden, status, "%s %s: %s", m.method, m.path, body)
	}
	_, body = cp.api("GET", "/api/v1/alerts/"+raised.ID, nil)
	assert.Equal(t, "resolved", jsonOf[alert](t, body).Status, "nothing the auditor tried changed anything")

	// Authorized now: however often the device is seen, no new alert.
	waitHeartbeats(3)
	_, body = cp.api("GET", "/api/v1/alerts?status=open", nil)
	assert.Empty(t, jsonOf[items[alert]](t, body).Items)

	// The status page sums it up.
	_, body = cp.api("GET", "/api/v1/discovery/status", nil)
	type siteStatus struct {
		SiteID           string `json:"site_id"`
		ActiveCollectors int    `json:"active_collectors"`
		Discovered       int    `json:"discovered_assets"`
		Dropped          int64  `json:"dropped_outside_policy"`
	}
	st := jsonOf[struct {
		Sites []siteStatus `json:"sites"`
	}](t, body)
	i := slices.IndexFunc(st.Sites, func(s siteStatus) bool { return s.SiteID == site })
	require.GreaterOrEqual(t, i, 0, "%s", body)
	assert.Equal(t, 1, st.Sites[i].ActiveCollectors)
	assert.Equal(t, 1, st.Sites[i].Discovered)
	assert.Zero(t, st.Sites[i].Dropped, "the agent dropped what the policy does not cover; the server had nothing left to drop")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
