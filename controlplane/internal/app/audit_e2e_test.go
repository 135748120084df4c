package app_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
)

// TestBinaryAuditVerifyExpectHead: `audit verify` prints the head as
// SEQ:HASH, and --expect-head checks the chain against a head kept
// elsewhere: the one it printed (still there, chain verified beyond it), a
// wrong hash, and a chain whose tail was removed and head moved back, which
// verifies on its own.
func TestBinaryAuditVerifyExpectHead(t *testing.T) {
	t.Parallel() // its own database
	d := dbtest.New(t)
	admin := []string{"EDGEWARD_ADMIN_DATABASE_URL=" + d.OwnerURL}

	out, errOut, code := run(t, admin, "bootstrap", "--tenant", "initech", "--json")
	require.Equal(t, 0, code, errOut)
	var boot struct {
		TenantID string `json:"tenant_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &boot))
	tenant := boot.TenantID

	type result struct {
		Verified    bool   `json:"verified"`
		EventCount  int64  `json:"event_count"`
		HeadSeq     int64  `json:"head_seq"`
		HeadHash    string `json:"head_hash"`
		Head        string `json:"head"`
		FirstBroken *struct {
			Seq     int64  `json:"seq"`
			EventID string `json:"event_id"`
			Reason  string `json:"reason"`
		} `json:"first_broken"`
	}
	verifyJSON := func(args ...string) (result, int) {
		t.Helper()
		out, errOut, code := run(t, admin, append([]string{"audit", "verify", "--tenant", tenant, "--json"}, args...)...)
		var rs []result
		require.NoError(t, json.Unmarshal([]byte(out), &rs), out+errOut)
		require.Len(t, rs, 1)
		return rs[0], code
	}

	first, code := verifyJSON()
	require.Equal(t, 0, code)
	require.True(t, first.Verified)
	assert.Equal(t, first.Head, strings.Join([]string{itoa(first.HeadSeq), first.HeadHash}, ":"))
	out, _, code = run(t, admin, "audit", "verify", "--tenant", tenant)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "; head "+first.Head, "the text output prints the head to record")

	// More events; the recorded head is still in the chain.
	for _, name := range []string{"one", "two"} {
		_, errOut, code = run(t, admin, "token", "create", "--tenant", tenant, "--role", "auditor", "--name", name)
		require.Equal(t, 0, code, errOut)
	}
	out, errOut, code = run(t, admin, "audit", "verify", "--tenant", tenant, "--expect-head", first.Head)
	require.Equal(t, 0, code, out+errOut)
	assert.Contains(t, out, "the expected head "+first.Head+" is in the chain")
	later, code := verifyJSON("--expect-head", first.Head)
	require.Equal(t, 0, code)
	assert.Greater(t, later.HeadSeq, first.HeadSeq)

	// A wrong hash at that seq.
	wrong := itoa(first.HeadSeq) + ":" + strings.Repeat("ab", 32)
	r, code := verifyJSON("--expect-head", wrong)
	assert.Equal(t, 1, code)
	require.NotNil(t, r.FirstBroken)
	assert.Equal(t, first.HeadSeq, r.FirstBroken.Seq)
	assert.Contains(t, r.FirstBroken.Reason, "the expected head says")

	// Rewind as the owner: remove the tail and move the head back. The
	// chain verifies on its own; the later head shows the removal.
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, d.Owner, uuidOf(t, tenant), func(tx pgx.Tx) error {
		for _, stmt := range []string{
			"ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete",
			"DELETE FROM audit_events WHERE seq > " + itoa(first.HeadSeq),
			"ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete",
			"UPDATE audit_chain_heads SET (seq, hash) = (SELECT seq, hash FROM audit_events WHERE seq = " + itoa(first.HeadSeq) + ")",
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	}))
	_, code = verifyJSON()
	assert.Equal(t, 0, code, "a rewound chain verifies on its own")
	out, _, code = run(t, admin, "audit", "verify", "--tenant", tenant, "--expect-head", later.Head)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "BROKEN at seq "+itoa(later.HeadSeq)+" (event missing)")
	assert.Contains(t, out, "the stored chain ends at seq "+itoa(first.HeadSeq))

	// Usage errors.
	_, errOut, code = run(t, admin, "audit", "verify", "--expect-head", first.Head)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--expect-head needs --tenant")
	_, errOut, code = run(t, admin, "audit", "verify", "--tenant", tenant, "--expect-head", "12")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "SEQ:HASH")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
