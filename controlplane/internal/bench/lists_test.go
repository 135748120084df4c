package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/db"
)

// The list benchmark's data set: one tenant with this many assets, each with
// one unauthorized_device alert, spread over listSites sites.
const (
	listRows  = 100_000
	listSites = 12
	// listDeep is how far in the deep-page cases start, reached by walking
	// next_cursor through the API.
	listDeep = 50_000
	// Each case is timed listSamples times per measurement, or, when it is
	// slow, at least listMinSamples times and for listCaseBudget.
	listSamples    = 300
	listMinSamples = 100
	listCaseBudget = 10 * time.Second
	listPage       = 100
)

// listSiteWeights is the share of assets at each site, in percent: a large
// headquarters and a tail of small branches.
var listSiteWeights = [listSites]int{30, 18, 12, 9, 7, 6, 5, 4, 3, 2, 2, 2}

var listSiteNames = [listSites]string{
	"Headquarters", "Plant Lyon", "Warehouse Rotterdam", "Office Berlin", "Office Madrid", "Lab Eindhoven",
	"Office Milan", "Branch Porto", "Branch Gdansk", "Branch Ghent", "Branch Aarhus", "Branch Graz",
}

// Vendor prefixes of discovered devices (printers, phones, cameras, IoT).
var listOUIs = []string{"00:1b:a9", "3c:2a:f4", "00:04:f2", "80:5e:c0", "ac:cc:8e", "b8:27:eb", "f4:f5:d8", "00:0e:58", "18:e8:29", "d8:eb:46"}

// listCase is one timed request.
type listCase struct{ name, path string }

// listData is what the cases need from the seeded data set.
type listData struct {
	cases   []listCase
	seeding time.Duration
}

var (
	listOnce sync.Once
	listSet  *listData
)

// listDataSet seeds the tenant and prepares the cases, once per run.
func listDataSet(b *testing.B, env *apitest.Env, hc *http.Client) *listData {
	listOnce.Do(func() {
		start := time.Now()
		probe := seedLists(b, env)
		seeding := time.Since(start)
		start = time.Now()
		deepAssets := walkCursor(b, env, hc, "/api/v1/assets", listDeep)
		deepAlerts := walkCursor(b, env, hc, "/api/v1/alerts", listDeep)
		b.Logf("walked %d rows of assets and of alerts by next_cursor in %s", listDeep, time.Since(start).Round(time.Millisecond))
		lim := fmt.Sprintf("limit=%d", listPage)
		listSet = &listData{seeding: seeding, cases: []listCase{
			{"assets: first page", "/api/v1/assets?" + lim},
			{"assets: unauthorized+discovery+site", fmt.Sprintf("/api/v1/assets?%s&authorization=unauthorized&source=discovery&site_id=%s", lim, probe.site)},
			{fmt.Sprintf("assets: page %dk rows deep", listDeep/1000), "/api/v1/assets?" + lim + "&cursor=" + url.QueryEscape(deepAssets)},
			{"assets: q= name fragment (~5% match)", "/api/v1/assets?" + lim + "&q=srv-"},
			{"assets: q= one MAC (1 match)", "/api/v1/assets?" + lim + "&q=" + url.QueryEscape(probe.mac)},
			{"alerts: first page", "/api/v1/alerts?" + lim},
			{"alerts: open+critical+unauthorized_device", "/api/v1/alerts?" + lim + "&status=open&severity=critical&type=unauthorized_device"},
			{"alerts: asset_id", fmt.Sprintf("/api/v1/alerts?%s&asset_id=%s", lim, probe.asset)},
			{fmt.Sprintf("alerts: page %dk rows deep", listDeep/1000), "/api/v1/alerts?" + lim + "&cursor=" + url.QueryEscape(deepAlerts)},
		}}
	})
	if listSet == nil {
		b.Fatal("list data set: seeding failed in an earlier benchmark")
	}
	return listSet
}

// BenchmarkListEndpoints times the REST list endpoints of a tenant holding
// 100,000 assets and 100,000 alerts: first pages, filtered pages, text
// search and a page 50,000 rows deep, each through the whole HTTP layer
// (TLS, token lookup, RLS transaction, query, JSON), one request at a time.
// One op is the whole measurement (listSamples of each case, interleaved).
func BenchmarkListEndpoints(b *testing.B) {
	env := benchEnv(b)
	tr := &http.Transport{TLSClientConfig: env.TLSConfig(), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	data := listDataSet(b, env, hc)

	// Each case once through the spec-validating client, which also warms up.
	c := env.Client(b, env.AdminToken)
	for _, lc := range data.cases {
		if r := c.Do(http.MethodGet, lc.path, nil); r.Status != http.StatusOK {
			b.Fatalf("%s: GET %s: status %d: %s", lc.name, lc.path, r.Status, r.Body)
		}
	}

	// Timed with a plain client on the same TLS configuration: the spec
	// validation of a 100-item page costs the test client milliseconds that
	// no real client pays.
	samples := make([][]time.Duration, len(data.cases))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := make([]int, len(data.cases))
		spent := make([]time.Duration, len(data.cases))
		for more := true; more; {
			more = false
			for ci, lc := range data.cases {
				if n[ci] >= listSamples || (n[ci] >= listMinSamples && spent[ci] >= listCaseBudget) {
					continue
				}
				more = true
				t0 := time.Now()
				items, _ := listGet(b, env, hc, lc.path)
				d := time.Since(t0)
				samples[ci] = append(samples[ci], d)
				n[ci]++
				spent[ci] += d
				if items == 0 {
					b.Fatalf("%s: GET %s: empty page", lc.name, lc.path)
				}
			}
		}
	}
	b.StopTimer()

	worst := 0.0
	for ci, lc := range data.cases {
		lat := samples[ci]
		slices.Sort(lat)
		pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		p50, p99 := pct(0.50), pct(0.99)
		worst = max(worst, p99)
		report(figure{name: "list " + lc.name, value: p99, unit: "ms p99", target: "<= 50 ms",
			against: fmt.Sprintf("p50 %.1f ms (%d samples)", p50, len(lat))})
	}
	b.ReportMetric(worst, "worst-p99-ms")
	b.ReportMetric(data.seeding.Seconds(), "seed-s")
	report(figure{name: "list data set: 100k assets + 100k alerts, one tenant", value: data.seeding.Seconds(), unit: "s to seed",
		target: "-", against: "COPY, then INSERT ... SELECT in the tenant's RLS transaction, VACUUM ANALYZE"})
}

// listGet fetches a page with the admin token and returns its item count
// and next cursor, failing b unless the answer is 200.
func listGet(b *testing.B, env *apitest.Env, hc *http.Client, path string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, env.Server.URL+path, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.AdminToken)
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatalf("GET %s: %v", path, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		b.Fatalf("GET %s: read body: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: status %d: %s", path, resp.StatusCode, body)
	}
	var pageOf struct {
		Items      []json.RawMessage `json:"items"`
		NextCursor *string           `json:"next_cursor"`
	}
	if err := json.Unmarshal(body, &pageOf); err != nil {
		b.Fatalf("GET %s: %v", path, err)
	}
	next := ""
	if pageOf.NextCursor != nil {
		next = *pageOf.NextCursor
	}
	return len(pageOf.Items), next
}

// walkCursor follows next_cursor from the first page of path, 200 rows at a
// time, and returns the cursor that starts after row `rows`.
func walkCursor(b *testing.B, env *apitest.Env, hc *http.Client, path string, rows int) string {
	const step = 200
	cursor := ""
	for seen := 0; seen < rows; seen += step {
		p := fmt.Sprintf("%s?limit=%d", path, step)
		if cursor != "" {
			p += "&cursor=" + url.QueryEscape(cursor)
		}
		n, next := listGet(b, env, hc, p)
		if n != step || next == "" {
			b.Fatalf("walk %s: page at row %d has %d items, next cursor %q", path, seen, n, next)
		}
		cursor = next
	}
	return cursor
}

// listProbe names seeded rows the filtered cases ask for.
type listProbe struct {
	site  uuid.UUID // a mid-size site (9% of assets)
	mac   string    // one discovered device's MAC
	asset uuid.UUID // an asset (each has one alert)
}

// seedLists writes the data set into the first tenant. COPY does not run on
// tables under row-level security, so the rows are copied into temporary
// tables and moved with INSERT ... SELECT inside the tenant transaction,
// where the policies check them.
func seedLists(b *testing.B, env *apitest.Env) listProbe {
	ctx := context.Background()
	start := time.Now()
	rng := rand.New(rand.NewPCG(20261128, 42))
	now := time.Now().UTC().Truncate(time.Microsecond)
	tenant := env.Tenant.ID
	ago := func(d time.Duration) time.Time { return now.Add(-time.Duration(rng.Int64N(int64(d)))) }
	between := func(from, to time.Time) time.Time {
		if !to.After(from) {
			return from
		}
		return from.Add(time.Duration(rng.Int64N(int64(to.Sub(from)))))
	}
	const day = 24 * time.Hour

	var sites [listSites]uuid.UUID
	for i := range sites {
		sites[i] = uuidV7At(now.Add(-400*day), rng)
	}
	var siteOf []int
	for s, w := range listSiteWeights {
		for range w {
			siteOf = append(siteOf, s)
		}
	}
	probe := listProbe{site: sites[3]}

	assetCols := []string{"tenant_id", "id", "name", "source", "machine_id", "os", "platform", "agent_id", "addresses", "macs",
		"first_seen_at", "last_seen_at", "created_at", "updated_at", "site_id", "vendor_oui",
		"authorization_state", "authorization_basis", "authorization_rule", "authorization_changed_at", "manually_authorized"}
	alertCols := []string{"tenant_id", "id", "type", "status", "severity", "title", "asset_id", "site_id", "first_seen_at", "last_seen_at",
		"seen_count", "assignee_id", "resolution", "resolution_note", "created_at", "updated_at", "acknowledged_at", "resolved_at"}
	assetRows := make([][]any, 0, listRows)
	alertRows := make([][]any, 0, listRows)

	var admin uuid.UUID
	var generated, inserted time.Time
	err := db.InTenant(ctx, env.DB.Owner, tenant, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT id FROM principals ORDER BY created_at LIMIT 1`).Scan(&admin); err != nil {
			return fmt.Errorf("admin principal: %w", err)
		}
		for i, id := range sites {
			if _, err := tx.Exec(ctx, `INSERT INTO sites (tenant_id, id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)`,
				tenant, id, listSiteNames[i], "benchmark site", now.Add(-400*day)); err != nil {
				return fmt.Errorf("site: %w", err)
			}
		}

		for i := 0; i < listRows; i++ {
			s := siteOf[rng.IntN(len(siteOf))]
			site := sites[s]
			// A unique MAC per device: a vendor prefix and a scrambled serial.
			oui := listOUIs[rng.IntN(len(listOUIs))]
			serial := uint32(i*2654435761) & 0xffffff
			mac := fmt.Sprintf("%s:%02x:%02x:%02x", oui, byte(serial>>16), byte(serial>>8), byte(serial))
			ip := fmt.Sprintf("10.%d.%d.%d", s+1, rng.IntN(64), 1+rng.IntN(254))

			var lastSeen time.Time
			agent := rng.IntN(100) < 30
			if agent && rng.IntN(100) < 85 {
				lastSeen = ago(15 * time.Minute) // heartbeating
			} else {
				lastSeen = ago(30 * day) // offline laptops, devices that come and go
			}
			firstSeen := lastSeen.Add(-time.Duration(rng.Int64N(int64(180 * day))))
			id := uuidV7At(firstSeen, rng)

			var name, source, state string
			var machineID, osName, platform, agentID, vendorOUI, basis, rule any
			addresses, macs := []string{ip}, []string{mac}
			manual := false
			changedAt := firstSeen
			if agent {
				kind := [...]string{"ws", "ws", "ws", "lt", "lt", "srv"}[rng.IntN(6)]
				name = fmt.Sprintf("%s-%s-%05d", kind, [...]string{"hq", "lyo", "rtm", "ber", "mad", "ein", "mil", "opo", "gdn", "ghe", "aar", "grz"}[s], i)
				source, state, basis = "agent", "authorized", "agent_host"
				machineID = fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
				switch rng.IntN(10) {
				case 0, 1, 2, 3, 4, 5:
					osName, platform = "windows", "Microsoft Windows 11 Enterprise"
				case 6, 7, 8:
					osName, platform = "linux", "debian"
				default:
					osName, platform = "darwin", "darwin"
				}
				agentID = uuidV7At(firstSeen, rng)
				addresses = append(addresses, fmt.Sprintf("fe80::%x:%x", rng.IntN(0xffff), rng.IntN(0xffff)))
			} else {
				name, source, vendorOUI = "device "+mac, "discovery", oui
				switch r := rng.IntN(100); {
				case r < 45:
					state, basis, rule = "authorized", "allowlist", fmt.Sprintf("oui %s", oui)
					changedAt = between(firstSeen, lastSeen)
				case r < 55:
					state, basis, rule, manual = "authorized", "manual", fmt.Sprintf("approved in change CHG-%05d", rng.IntN(100000)), true
					changedAt = between(firstSeen, lastSeen)
				default:
					state = "unauthorized"
					if probe.mac == "" && i > listRows/2 {
						probe.mac = mac
					}
				}
			}
			if i == listRows/3 {
				probe.asset = id
			}
			assetRows = append(assetRows, []any{tenant, id, name, source, machineID, osName, platform, agentID, addresses, macs,
				firstSeen, lastSeen, firstSeen, changedAt, site, vendorOUI, state, basis, rule, changedAt, manual})

			// Its alert, raised when the device was first seen.
			created := firstSeen.Add(time.Duration(rng.Int64N(int64(time.Minute))))
			status, alertLast := "open", lastSeen
			var resolution, note, assignee, ackAt, resolvedAt any
			updated := created
			if state == "authorized" {
				status, resolution = "resolved", "authorized"
			} else {
				switch r := rng.IntN(100); {
				case r < 55:
				case r < 85:
					status = "acknowledged"
				case r < 95:
					status, resolution = "resolved", "removed"
				default:
					status, resolution, note = "resolved", "false_positive", "known device on the guest network"
				}
			}
			if status != "open" && rng.IntN(100) < 70 {
				t := between(created, earlier(created.Add(day), now))
				ackAt, updated = t, t
				assignee = admin
			}
			if status == "resolved" {
				t := between(updated, lastSeen)
				resolvedAt, updated, alertLast = t, t, t
			}
			severity := "high"
			switch r := rng.IntN(100); {
			case r < 10:
				severity = "critical"
			case r < 25:
				severity = "low"
			case r < 50:
				severity = "medium"
			}
			alertRows = append(alertRows, []any{tenant, uuidV7At(created, rng), "unauthorized_device", status, severity,
				fmt.Sprintf("Unauthorized device %s at %s", mac, ip), id, site, firstSeen, later(alertLast, created),
				int64(1 + rng.IntN(5000)), assignee, resolution, note, created, updated, ackAt, resolvedAt})
		}

		generated = time.Now()
		for _, t := range []struct {
			table string
			cols  []string
			rows  [][]any
		}{{"assets", assetCols, assetRows}, {"alerts", alertCols, alertRows}} {
			tmp := "bench_seed_" + t.table
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TEMPORARY TABLE %s (LIKE %s INCLUDING DEFAULTS) ON COMMIT DROP`, tmp, t.table)); err != nil {
				return err
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{tmp}, t.cols, pgx.CopyFromRows(t.rows)); err != nil {
				return fmt.Errorf("copy %s: %w", t.table, err)
			}
			cols := strings.Join(t.cols, ", ")
			if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s`, t.table, cols, cols, tmp)); err != nil {
				return fmt.Errorf("insert %s: %w", t.table, err)
			}
		}
		// Each MAC's owner, as enrollment and discovery record it: a
		// search for a whole MAC looks here.
		if _, err := tx.Exec(ctx, `INSERT INTO asset_macs (tenant_id, mac, asset_id)
			SELECT tenant_id, m, id FROM bench_seed_assets, unnest(macs) m ON CONFLICT DO NOTHING`); err != nil {
			return fmt.Errorf("insert asset_macs: %w", err)
		}
		return nil
	})
	if err != nil {
		b.Fatalf("seed list data set: %v", err)
	}
	inserted = time.Now()
	if _, err := env.DB.Owner.Exec(ctx, `VACUUM (ANALYZE) sites, assets, asset_macs, alerts`); err != nil {
		b.Fatalf("vacuum analyze: %v", err)
	}
	b.Logf("seeded %d assets and %d alerts: rows made in %s, copied and inserted in %s, VACUUM ANALYZE in %s", listRows, listRows,
		generated.Sub(start).Round(time.Millisecond), inserted.Sub(generated).Round(time.Millisecond), time.Since(inserted).Round(time.Millisecond))
	return probe
}

// uuidV7At is a UUIDv7 for time t, as uuid.NewV7 would have made at t.
func uuidV7At(t time.Time, rng *rand.Rand) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[8:], rng.Uint64())
	binary.BigEndian.PutUint64(u[0:], uint64(t.UnixMilli())<<16|uint64(rng.Uint32()&0x0fff))
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
