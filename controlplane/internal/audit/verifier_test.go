package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
)

// docVerifier recomputes hashes from the API's events the way
// docs/api/audit.md tells an independent verifier to, without the audit
// package's encoder: its own string escaping, keys sorted, numbers as the
// API shows them, occurred_at reformatted with six digits.
type docVerifier struct {
	b bytes.Buffer
	// verbatimTime copies the API's occurred_at instead (the mistake the
	// doc warns about).
	verbatimTime bool
}

func (d *docVerifier) str(s string) {
	d.b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			d.b.WriteString(`\"`)
		case r == '\\':
			d.b.WriteString(`\\`)
		case r == '\b':
			d.b.WriteString(`\b`)
		case r == '\f':
			d.b.WriteString(`\f`)
		case r == '\n':
			d.b.WriteString(`\n`)
		case r == '\r':
			d.b.WriteString(`\r`)
		case r == '\t':
			d.b.WriteString(`\t`)
		case r < 0x20, r == 0x2028, r == 0x2029:
			fmt.Fprintf(&d.b, `\u%04x`, r)
		default:
			d.b.WriteRune(r)
		}
	}
	d.b.WriteByte('"')
}

func (d *docVerifier) optional(s *string) {
	if s == nil {
		d.b.WriteString("null")
		return
	}
	d.str(*s)
}

func (d *docVerifier) value(v any) {
	switch x := v.(type) {
	case nil:
		d.b.WriteString("null")
	case bool:
		d.b.WriteString(strconv.FormatBool(x))
	case json.Number:
		d.b.WriteString(x.String())
	case string:
		d.str(x)
	case []any:
		d.b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				d.b.WriteByte(',')
			}
			d.value(e)
		}
		d.b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys) // byte order
		d.b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				d.b.WriteByte(',')
			}
			d.str(k)
			d.b.WriteByte(':')
			d.value(x[k])
		}
		d.b.WriteByte('}')
	default:
		panic(fmt.Sprintf("unexpected JSON value %T", v))
	}
}

type apiEvent struct {
	ID         string         `json:"id"`
	Seq        int64          `json:"seq"`
	OccurredAt string         `json:"occurred_at"`
	Actor      apiActor       `json:"actor"`
	Action     string         `json:"action"`
	Target     apiTarget      `json:"target"`
	RequestID  *string        `json:"request_id"`
	SourceIP   *string        `json:"source_ip"`
	Outcome    string         `json:"outcome"`
	Details    map[string]any `json:"details"`
	PrevHash   string         `json:"prev_hash"`
	Hash       string         `json:"hash"`
}

type apiActor struct {
	Type string  `json:"type"`
	ID   *string `json:"id"`
	Name string  `json:"name"`
}

type apiTarget struct {
	Type string  `json:"type"`
	ID   *string `json:"id"`
}

func (d *docVerifier) hash(t *testing.T, tenant string, ev apiEvent) string {
	t.Helper()
	d.b.Reset()
	at := ev.OccurredAt
	if !d.verbatimTime {
		parsed, err := time.Parse(time.RFC3339Nano, ev.OccurredAt)
		require.NoError(t, err)
		at = parsed.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	fmt.Fprintf(&d.b, `{"v":1,"tenant_id":"%s","seq":%d,"id":"%s","occurred_at":"%s","actor":{"type":`, tenant, ev.Seq, ev.ID, at)
	d.str(ev.Actor.Type)
	d.b.WriteString(`,"id":`)
	d.optional(ev.Actor.ID)
	d.b.WriteString(`,"name":`)
	d.str(ev.Actor.Name)
	d.b.WriteString(`},"action":`)
	d.str(ev.Action)
	d.b.WriteString(`,"target":{"type":`)
	d.str(ev.Target.Type)
	d.b.WriteString(`,"id":`)
	d.optional(ev.Target.ID)
	d.b.WriteString(`},"request_id":`)
	d.optional(ev.RequestID)
	d.b.WriteString(`,"source_ip":`)
	d.optional(ev.SourceIP)
	d.b.WriteString(`,"outcome":`)
	d.str(ev.Outcome)
	d.b.WriteString(`,"details":`)
	d.value(ev.Details)
	d.b.WriteString(`}`)
	prev, err := hex.DecodeString(ev.PrevHash)
	require.NoError(t, err)
	h := sha256.Sum256(append(prev, d.b.Bytes()...))
	return hex.EncodeToString(h[:])
}

// TestIndependentVerifierFollowingTheDocs: a verifier written from
// docs/api/audit.md alone, fed the API's events, recomputes every hash the
// database wrote, tricky strings included; copying the API's occurred_at
// verbatim fails on an event whose fraction ends in zero, as the doc warns.
func TestIndependentVerifierFollowingTheDocs(t *testing.T) {
	env := apitest.Start(t)
	auditor := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAuditor, "auditor").Secret)
	ctx := context.Background()
	for _, s := range tricky {
		actx := audit.WithActor(ctx, audit.Actor{Type: audit.ActorPrincipal, ID: s, Name: s})
		actx = audit.WithRequest(actx, audit.Request{ID: s, SourceIP: s})
		require.NoError(t, db.InTenant(actx, env.DB.App, env.Tenant.ID, func(tx pgx.Tx) error {
			return audit.Record(actx, tx, env.Tenant.ID, audit.Entry{Action: "thing.changed", TargetType: "thing", TargetID: s,
				Details: map[string]any{"s": s, "list": []any{s, 7, 2.5, false, nil}, "n": map[string]any{"é": 1, "e": s}}})
		}))
	}
	require.NoError(t, db.InTenant(ctx, env.DB.App, env.Tenant.ID, func(tx pgx.Tx) error {
		_, err := appendDirect(ctx, tx, env.Tenant.ID, time.Date(2026, 11, 28, 10, 0, 0, 120000000, time.UTC), "thing.timed")
		return err
	}))

	r := auditor.Do(http.MethodGet, "/api/v1/audit/events?limit=200", nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var page struct {
		Items []apiEvent `json:"items"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&page))
	require.Greater(t, len(page.Items), len(tricky))

	good, naive := &docVerifier{}, &docVerifier{verbatimTime: true}
	for _, ev := range page.Items {
		assert.Equal(t, ev.Hash, good.hash(t, env.Tenant.ID.String(), ev), "seq %d (%s): %s", ev.Seq, ev.Action, good.b.String())
		if ev.Action == "thing.timed" {
			assert.Equal(t, "2026-11-28T10:00:00.12Z", ev.OccurredAt, "the API drops trailing zeros")
			assert.NotEqual(t, ev.Hash, naive.hash(t, env.Tenant.ID.String(), ev), "the API's occurred_at copied verbatim")
		}
	}
}
