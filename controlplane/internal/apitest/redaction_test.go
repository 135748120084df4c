package apitest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/app"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhooktest"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// The device the test makes known, and the agent host that sees it.
const (
	deviceMAC = "02:de:ad:be:ef:42"
	deviceIP  = "198.51.100.142"
	collector = "m-lab-collector"
)

// rawIdentifiers are the ways the identifiers may be written (the agent
// host's interface is apitest.Facts'). None of them may reach an auditor.
var rawIdentifiers = []string{deviceMAC, "02-de-ad-be-ef-42", "be:ef:42", "be-ef-42", "02dead.beef42", deviceIP,
	apitest.MACFor(collector), "192.0.2.10"}

// TestAuditorsSeeNoRawIdentifierInAnyRead makes a device known in every way
// that puts its MAC and address into records (an agent's observation, the
// alert it raises, triage notes, a ticket, comments and links, an
// authorization, an allowlist rule, a scan request, an agent's command
// result, a not-applicable justification, and a webhook receiver that
// echoes what it was sent), then calls every operation the spec allows the
// auditor to read, following each list to the detail operations of its
// items. No answer may hold the raw identifiers. The operations come from
// the spec's x-edgeward-roles, so a new auditor-readable operation is
// covered (or fails the test until it is) without changing it.
func TestAuditorsSeeNoRawIdentifierInAnyRead(t *testing.T) {
	rcv := webhooktest.New(t)
	rcv.Respond("/echo", webhooktest.Response{Status: http.StatusOK, Echo: true})
	rcv.Respond("/echo-fails", webhooktest.Response{Status: http.StatusInternalServerError, Body: "cannot take ", Echo: true})
	env := apitest.StartWith(t, func(c *app.ServeConfig) {
		c.Deliveries = app.DeliverySettings{AllowHosts: []string{"127.0.0.1"}, CAFile: rcv.CAFile(t), Timeout: 2 * time.Second,
			Schedule: []time.Duration{0, 100 * time.Millisecond}, SweepInterval: time.Second}
	})
	admin := env.Client(t, env.AdminToken)
	analyst := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst").Secret)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)

	idOf := func(r *apitest.Response, status int) string {
		t.Helper()
		require.Equal(t, status, r.Status, "%s", r.Body)
		var v struct {
			ID          string `json:"id"`
			Destination struct {
				ID string `json:"id"`
			} `json:"destination"`
		}
		r.JSON(t, &v)
		if v.ID == "" {
			return v.Destination.ID
		}
		return v.ID
	}
	var secrets []string
	for _, path := range []string{"/echo", "/echo-fails"} {
		r := admin.Do("POST", "/api/v1/delivery-destinations", map[string]any{"name": "echo " + path, "url": rcv.URL() + path,
			"event_types": []string{"alert.raised", "alert.updated", "alert.resolved", "ticket.created", "ticket.updated", "asset.authorized", "agent.revoked"}})
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		var c struct {
			Secret string `json:"secret"`
		}
		r.JSON(t, &c)
		secrets = append(secrets, c.Secret)
	}
	rcv.SetSecrets(secrets...)

	site := idOf(admin.Do("POST", "/api/v1/sites", map[string]any{"name": "lab"}), http.StatusCreated)
	policy := func(version int, allowlist ...any) {
		t.Helper()
		r := admin.Do("PUT", "/api/v1/discovery/policies/"+site, map[string]any{
			"allowed_cidrs": []string{"198.51.100.0/24"}, "allowed_methods": []string{"passive_neighbor"}, "collector_agent_ids": []string{},
			"observation_retention_days": 30, "allowlist": append([]any{}, allowlist...),
		}, apitest.Header("If-Match", fmt.Sprintf(`"v%d"`, version)))
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	}
	policy(1)
	_, token := env.EnrollmentToken(t, map[string]any{"name": "lab", "site_id": site})
	agent, err := env.Enroll(t, token, collector, "lab-collector")
	require.NoError(t, err)
	heartbeat := func(rep *agentv1.Report) *agentv1.HeartbeatResponse {
		t.Helper()
		resp, err := agent.RPC(t).Heartbeat(context.Background(), connect.NewRequest(&agentv1.HeartbeatRequest{Reports: []*agentv1.Report{rep}}))
		require.NoError(t, err)
		return resp.Msg
	}

	// The agent sees the device: an unauthorized-device alert.
	rep := agent.Report()
	rep.Observations = []*agentv1.NeighborObservation{{Mac: deviceMAC, Ip: deviceIP, Interface: "eth0", State: "reachable", LastSeenAt: timestamppb.Now()}}
	heartbeat(rep)
	var alerts struct {
		Items []struct {
			ID      string `json:"id"`
			AssetID string `json:"asset_id"`
		} `json:"items"`
	}
	analyst.Do("GET", "/api/v1/alerts", nil).JSON(t, &alerts)
	require.Len(t, alerts.Items, 1)
	alert, asset := alerts.Items[0].ID, alerts.Items[0].AssetID

	// People write about it.
	about := "the box " + deviceMAC + " at " + deviceIP
	require.Equal(t, http.StatusOK, analyst.Do("POST", "/api/v1/alerts/"+alert+"/acknowledge", map[string]any{"note": "looking at " + about}).Status)
	ticket := idOf(analyst.Do("POST", "/api/v1/alerts/"+alert+"/tickets", map[string]any{}), http.StatusCreated)
	require.Equal(t, http.StatusOK, analyst.Do("PATCH", "/api/v1/tickets/"+ticket, map[string]any{"description": "found " + about},
		apitest.Header("If-Match", `"v1"`)).Status)
	require.Equal(t, http.StatusCreated, analyst.Do("POST", "/api/v1/tickets/"+ticket+"/comments", map[string]any{"body": "ping " + deviceIP + " answers; MAC " + strings.ToUpper(deviceMAC)}).Status)
	require.Equal(t, http.StatusCreated, analyst.Do("POST", "/api/v1/tickets/"+ticket+"/links", map[string]any{"type": "url", "url": "https://" + deviceIP + "/status"}).Status)
	require.Equal(t, http.StatusOK, analyst.Do("POST", "/api/v1/assets/"+asset+"/authorize", map[string]any{"reason": "lab printer " + deviceMAC}).Status)
	require.Equal(t, http.StatusOK, analyst.Do("POST", "/api/v1/alerts/"+alert+"/resolve", map[string]any{"resolution": "authorized", "note": "authorized " + about}).Status)
	policy(2, map[string]any{"type": "mac", "value": deviceMAC, "description": "printer at " + deviceIP})
	require.Equal(t, http.StatusCreated, admin.Do("POST", "/api/v1/discovery/authorizations", map[string]any{"site_id": site, "method": "nmap", "target": deviceIP}).Status)
	idOf(admin.Do("POST", "/api/v1/compliance/policies/agent-certificate-lifetime/fork", map[string]any{}), http.StatusCreated)
	require.Equal(t, http.StatusOK, admin.Do("POST", "/api/v1/compliance/controls/cis-v8:1.1/not-applicable", map[string]any{"justification": "only " + about + " is there"}).Status)

	// The agent reports a command result that quotes the device.
	idOf(admin.Do("POST", "/api/v1/agents/"+agent.AgentID+"/commands", map[string]any{"type": "run_discovery"}), http.StatusCreated)
	cmds := heartbeat(agent.Report()).GetCommands()
	require.Len(t, cmds, 1)
	rep = agent.Report()
	rep.CommandResults = []*agentv1.CommandResult{{CommandId: cmds[0].GetId(), Succeeded: false, Summary: "reading the neighbour tables failed at " + about, CompletedAt: timestamppb.Now()}}
	heartbeat(rep)
	require.Equal(t, http.StatusOK, admin.Do("POST", "/api/v1/agents/"+agent.AgentID+"/revoke", map[string]any{"reason": "moved next to " + about}).Status)

	// The receivers echo the webhooks back: every delivery settles.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ds struct {
			Items []struct {
				Status string `json:"status"`
			} `json:"items"`
		}
		admin.Do("GET", "/api/v1/deliveries?limit=200", nil).JSON(t, &ds)
		pending := 0
		for _, d := range ds.Items {
			if d.Status != "succeeded" && d.Status != "failed" {
				pending++
			}
		}
		if len(ds.Items) > 0 && pending == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "deliveries still pending: %+v", ds.Items)
		time.Sleep(50 * time.Millisecond)
	}

	// The identifiers are there for roles that see them: the seeding worked.
	var deliveries struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	admin.Do("GET", "/api/v1/deliveries?limit=200&event_type=alert.raised", nil).JSON(t, &deliveries)
	for _, path := range []string{"/api/v1/alerts/" + alert, "/api/v1/tickets/" + ticket + "/comments", "/api/v1/discovery/policies/" + site,
		"/api/v1/agents/" + agent.AgentID + "/commands", "/api/v1/compliance/controls/cis-v8:1.1", "/api/v1/deliveries/" + deliveries.Items[0].ID + "/attempts"} {
		body := strings.ToLower(string(analyst.Do("GET", path, nil).Body))
		require.Contains(t, body, deviceMAC, path)
		require.Contains(t, body, deviceIP, path)
	}
	for _, path := range []string{"/api/v1/tickets/" + ticket + "/links", "/api/v1/discovery/authorizations"} {
		require.Contains(t, string(analyst.Do("GET", path, nil).Body), deviceIP, path)
	}

	// The auditor reads the same records, masked; of a receiver's answer
	// it gets the outcome, not the body.
	var attempts struct {
		Items []struct {
			StatusCode   *int    `json:"status_code"`
			ErrorClass   *string `json:"error_class"`
			ResponseBody *string `json:"response_body"`
			Redacted     bool    `json:"redacted"`
		} `json:"items"`
	}
	admin.Do("GET", "/api/v1/deliveries?limit=200", nil).JSON(t, &deliveries)
	for _, d := range deliveries.Items {
		auditor.Do("GET", "/api/v1/deliveries/"+d.ID+"/attempts", nil).JSON(t, &attempts)
		require.NotEmpty(t, attempts.Items)
		for _, at := range attempts.Items {
			require.True(t, at.Redacted)
			require.Nil(t, at.ResponseBody)
			require.NotNil(t, at.StatusCode, "the outcome is the auditor's")
		}
	}
	for path, masked := range map[string]string{
		"/api/v1/alerts/" + alert:                       "02:de:ad:xx:xx:xx at 198.51.100.x",
		"/api/v1/agents/" + agent.AgentID + "/commands": "02:de:ad:xx:xx:xx at 198.51.100.x",
		"/api/v1/compliance/controls/cis-v8:1.1":        "02:de:ad:xx:xx:xx at 198.51.100.x",
		"/api/v1/audit/events?action=agent.revoked":     "02:de:ad:xx:xx:xx at 198.51.100.x",
		"/api/v1/discovery/policies/" + site:            `"value":"02:de:ad:xx:xx:xx"`,
		"/api/v1/discovery/authorizations":              `"target":"198.51.100.x"`,
		"/api/v1/tickets/" + ticket + "/links":          `"url":"https://198.51.100.x/status"`,
	} {
		require.Contains(t, string(auditor.Do("GET", path, nil).Body), masked, path)
	}

	// The auditor reads everything it may read.
	leaks, calls := sweep(t, env, auditor)
	for _, l := range leaks {
		t.Error(l)
	}
	for _, op := range env.Index.Operations() {
		if op.Method == http.MethodGet && op.Allows(caller.RoleAuditor) && calls[op.ID] == 0 {
			t.Errorf("%s (%s) was never called with real ids: seed what it lists, or teach the sweep where its ids come from", op.ID, op.Path)
		}
	}
}

// sweep calls every GET operation the auditor may call: operations without
// path parameters first, then those whose parameters can be filled from the
// items of lists already read (the list at the path's prefix, or a list of
// the same kind elsewhere, as /agents/{id}/commands for /commands/{id}). It
// follows every list's cursors. It returns the answers that hold a raw
// identifier and how often each operation answered 200.
func sweep(t *testing.T, env *apitest.Env, c *apitest.Client) (leaks []string, calls map[string]int) {
	t.Helper()
	s := &sweeper{items: map[string][]map[string]any{}, mentions: map[string]int{}}
	calls = map[string]int{}
	done := map[string]bool{}
	var ops []string
	for _, op := range env.Index.Operations() {
		if op.Method == http.MethodGet && op.Allows(caller.RoleAuditor) {
			ops = append(ops, op.ID)
		}
	}
	get := func(opID, path string) {
		next := ""
		for {
			full := path
			if next != "" {
				full += "?cursor=" + url.QueryEscape(next)
			}
			r := c.Do(http.MethodGet, full, nil)
			leaks = append(leaks, leaksIn(opID, full, r.Body)...)
			if r.Status != http.StatusOK {
				// A baseline policy has no versions, for one; each
				// operation must answer 200 somewhere (see the caller).
				require.Equal(t, http.StatusNotFound, r.Status, "GET %s: %s", full, r.Body)
				return
			}
			calls[opID]++
			var doc any
			if json.Unmarshal(r.Body, &doc) != nil {
				return // /metrics, in the text format
			}
			s.mention(doc)
			var list struct {
				Items      []map[string]any `json:"items"`
				NextCursor *string          `json:"next_cursor"`
			}
			if json.Unmarshal(r.Body, &list) != nil || list.Items == nil {
				return
			}
			s.items[path] = append(s.items[path], list.Items...)
			if s.items[path] == nil {
				s.items[path] = []map[string]any{} // listed, and empty
			}
			if list.NextCursor == nil {
				return
			}
			next = *list.NextCursor
		}
	}
	// Lists of the same kind elsewhere stand in for a collection only once
	// everything that can be listed has been.
	for _, fallback := range []bool{false, true} {
		for progress := true; progress; {
			progress = false
			for _, id := range ops {
				for _, path := range s.concrete(env.Index.Operation(id).Path, fallback) {
					if !done[path] {
						done[path] = true
						progress = true
						get(id, path)
					}
				}
			}
		}
	}
	return leaks, calls
}

// leaksIn names each place in body that shows a raw identifier.
func leaksIn(opID, path string, body []byte) []string {
	var out []string
	lower := strings.ToLower(string(body))
	shown := make([]bool, len(lower)) // parts of a leak already named
	for _, raw := range rawIdentifiers {
		for from := 0; ; {
			i := strings.Index(lower[from:], raw)
			if i < 0 {
				break
			}
			i += from
			if !shown[i] {
				out = append(out, fmt.Sprintf("%s: GET %s shows %q: …%s…", opID, path, raw, excerpt(string(body), i, len(raw))))
			}
			for j := i; j < i+len(raw); j++ {
				shown[j] = true
			}
			from = i + len(raw)
		}
	}
	return out
}

func excerpt(s string, at, n int) string {
	from, to := max(0, at-60), min(len(s), at+n+60)
	return s[from:to]
}

// sweeper remembers what the sweep has read.
type sweeper struct {
	// items maps a concrete collection path to the items it listed.
	items map[string][]map[string]any
	// mentions counts each string value across every answer.
	mentions map[string]int
}

func (s *sweeper) mention(v any) {
	switch x := v.(type) {
	case string:
		s.mentions[x]++
	case map[string]any:
		for _, e := range x {
			s.mention(e)
		}
	case []any:
		for _, e := range x {
			s.mention(e)
		}
	}
}

var param = regexp.MustCompile(`^\{([^}]+)\}$`)

// maxPerParameter bounds the ids tried for one parameter (the compliance
// catalog lists hundreds of controls): the items that other answers refer
// to come first.
const maxPerParameter = 12

// concrete fills a path template's parameters with the ids of listed items,
// in every combination; it returns nothing while a parameter has none.
func (s *sweeper) concrete(tmpl string, fallback bool) []string {
	paths := []string{""}
	for _, seg := range strings.Split(strings.TrimPrefix(tmpl, "/"), "/") {
		m := param.FindStringSubmatch(seg)
		if m == nil {
			for i := range paths {
				paths[i] += "/" + seg
			}
			continue
		}
		var next []string
		for _, prefix := range paths {
			for _, v := range s.candidates(prefix, m[1], fallback) {
				next = append(next, prefix+"/"+url.PathEscape(v))
			}
		}
		paths = next
	}
	return paths
}

// candidates are the values of parameter name for the collection at
// prefix: each item's field of that name, or its id.
func (s *sweeper) candidates(prefix, name string, fallback bool) []string {
	lists, listed := s.items[prefix]
	if !listed && fallback {
		// A collection not listed at this path (/commands): the lists of
		// the same kind elsewhere.
		kind := prefix[strings.LastIndex(prefix, "/"):]
		var paths []string
		for p := range s.items {
			if strings.HasSuffix(p, kind) {
				paths = append(paths, p)
			}
		}
		sort.Strings(paths)
		for _, p := range paths {
			lists = append(lists, s.items[p]...)
		}
	}
	var vals []string
	for _, it := range lists {
		v, ok := it[name]
		if !ok {
			v = it["id"]
		}
		switch x := v.(type) {
		case string:
			vals = append(vals, x)
		case float64:
			vals = append(vals, fmt.Sprint(x))
		}
	}
	slices.Sort(vals)
	vals = slices.Compact(vals)
	if len(vals) > maxPerParameter {
		sort.SliceStable(vals, func(i, j int) bool { return s.mentions[vals[i]] > s.mentions[vals[j]] })
		vals = vals[:maxPerParameter]
	}
	return vals
}
