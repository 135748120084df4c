package httpx_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/httpx"
	"github.com/edgeward/edgeward/controlplane/internal/idempotency"
)

type ticket struct {
	ID     string `json:"id"`
	Number int64  `json:"number"`
	Title  string `json:"title"`
}

func key(k string) apitest.Option { return apitest.Header(api.IdempotencyKeyHeader, k) }

// tickets lists the titles of the tenant's tickets, oldest first.
func tickets(t *testing.T, c *apitest.Client) []string {
	t.Helper()
	var list struct {
		Items []ticket `json:"items"`
	}
	r := c.Do("GET", "/api/v1/tickets?limit=200", nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	r.JSON(t, &list)
	titles := make([]string, 0, len(list.Items))
	for i := len(list.Items) - 1; i >= 0; i-- {
		titles = append(titles, list.Items[i].Title)
	}
	return titles
}

func createTicket(t *testing.T, c *apitest.Client, body any, opts ...apitest.Option) (*apitest.Response, ticket) {
	t.Helper()
	r := c.Do("POST", "/api/v1/tickets", body, opts...)
	var tk ticket
	if r.Status == http.StatusCreated {
		r.JSON(t, &tk)
	}
	return r, tk
}

// TestOnlyTheSpecsOperationsTakeIdempotencyKeys pins which operations take
// a key: the ones whose retry would do the work twice, and none whose
// response carries a secret (the server would have to store it).
func TestOnlyTheSpecsOperationsTakeIdempotencyKeys(t *testing.T) {
	ix, err := api.Spec()
	require.NoError(t, err)
	var got []string
	for _, op := range ix.Operations() {
		if op.Idempotent {
			got = append(got, op.ID)
		}
	}
	assert.ElementsMatch(t, []string{
		"addTicketComment", "addTicketLink", "createSite", "createTicket", "createTicketFromAlert",
		"queueAgentCommand", "requestDiscoveryAuthorization", "retryDelivery",
	}, got)
	for _, secret := range []string{"createApiToken", "createEnrollmentToken"} {
		assert.False(t, ix.Operation(secret).Idempotent, "%s returns a secret: it must take no Idempotency-Key", secret)
	}
}

func TestIdempotencyKeyReplaysTheFirstResponse(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)

	first, tk := createTicket(t, admin, map[string]any{"title": "printer on VLAN 7", "priority": "high"}, key("retry-1"))
	require.Equal(t, http.StatusCreated, first.Status, "%s", first.Body)
	assert.Empty(t, first.Header.Get(httpx.ReplayedHeader), "the first response is no replay")

	// The retry encodes the same body differently: same request all the same.
	again := admin.Do("POST", "/api/v1/tickets", apitest.Raw(`{ "priority" : "high",  "title":"printer on VLAN 7" }`), key("retry-1"))
	require.Equal(t, http.StatusCreated, again.Status, "%s", again.Body)
	assert.Equal(t, "true", again.Header.Get(httpx.ReplayedHeader))
	assert.Equal(t, string(first.Body), string(again.Body), "the replay is the first response")
	assert.Equal(t, first.Header.Get("ETag"), again.Header.Get("ETag"))
	assert.Equal(t, first.Header.Get("Content-Type"), again.Header.Get("Content-Type"))
	assert.NotEqual(t, first.Header.Get("X-Request-Id"), again.Header.Get("X-Request-Id"), "the request id is the retry's own")
	assert.Equal(t, []string{"printer on VLAN 7"}, tickets(t, admin), "one ticket, whatever the retries")
	assert.Contains(t, env.Logs.String(), `"idempotency":"replay"`, "the access log says a response was replayed")
	assert.NotContains(t, env.Logs.String(), "retry-1", "but never names the key")

	t.Run("same key, different body", func(t *testing.T) {
		r := admin.Do("POST", "/api/v1/tickets", map[string]any{"title": "something else"}, key("retry-1"))
		p := r.Problem(t, http.StatusUnprocessableEntity)
		assert.Equal(t, "idempotency_key_reused", p.Code)
		require.Len(t, p.Errors, 1)
		assert.Equal(t, "Idempotency-Key", p.Errors[0].Parameter)
		assert.Empty(t, r.Header.Get(httpx.ReplayedHeader))
		assert.Equal(t, []string{"printer on VLAN 7"}, tickets(t, admin), "nothing created")
	})

	t.Run("same key, other operation", func(t *testing.T) {
		p := admin.Do("POST", "/api/v1/tickets/"+tk.ID+"/comments", map[string]any{"body": "x"}, key("retry-1")).
			Problem(t, http.StatusUnprocessableEntity)
		assert.Equal(t, "idempotency_key_reused", p.Code)
	})

	t.Run("no key: every request runs", func(t *testing.T) {
		for range 2 {
			r, _ := createTicket(t, admin, map[string]any{"title": "no key"})
			require.Equal(t, http.StatusCreated, r.Status)
		}
		assert.Equal(t, []string{"printer on VLAN 7", "no key", "no key"}, tickets(t, admin))
	})

	t.Run("another principal's key is its own", func(t *testing.T) {
		analyst := env.Client(t, env.IssueToken(t, env.Tenant.ID, caller.RoleAnalyst, "analyst").Secret)
		r, other := createTicket(t, analyst, map[string]any{"title": "printer on VLAN 7", "priority": "high"}, key("retry-1"))
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		assert.Empty(t, r.Header.Get(httpx.ReplayedHeader))
		assert.NotEqual(t, tk.ID, other.ID)
		// Its own retry replays its own ticket.
		r, again := createTicket(t, analyst, map[string]any{"title": "printer on VLAN 7", "priority": "high"}, key("retry-1"))
		assert.Equal(t, "true", r.Header.Get(httpx.ReplayedHeader))
		assert.Equal(t, other.ID, again.ID)
		assert.Len(t, tickets(t, admin), 4)
	})

	t.Run("another tenant's key is its own", func(t *testing.T) {
		_, otherToken := env.NewTenant(t, "globex")
		other := env.Client(t, otherToken)
		r, tk2 := createTicket(t, other, map[string]any{"title": "printer on VLAN 7", "priority": "high"}, key("retry-1"))
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		assert.Empty(t, r.Header.Get(httpx.ReplayedHeader))
		assert.NotEqual(t, tk.ID, tk2.ID)
		assert.Equal(t, []string{"printer on VLAN 7"}, tickets(t, other))
		assert.Len(t, tickets(t, admin), 4, "the first tenant is untouched")
	})

	t.Run("a key on an operation that takes none is ignored", func(t *testing.T) {
		for range 2 {
			r := admin.Do("POST", "/api/v1/api-tokens", map[string]any{"name": "ci", "role": "analyst"}, key("token-1"))
			require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
			assert.Empty(t, r.Header.Get(httpx.ReplayedHeader))
		}
		var stored int
		ctx := context.Background()
		require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE key = 'token-1'`).Scan(&stored)
		}))
		assert.Zero(t, stored, "no response holding a secret is stored")
	})
}

func TestIdempotencyKeyReplaysClientErrors(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	path := "/api/v1/alerts/" + uuid.NewString() + "/tickets"

	first := admin.Do("POST", path, nil, key("from-alert"))
	p := first.Problem(t, http.StatusNotFound)
	assert.Equal(t, "not_found", p.Code)
	again := admin.Do("POST", path, nil, key("from-alert"))
	p2 := again.Problem(t, http.StatusNotFound)
	assert.Equal(t, "true", again.Header.Get(httpx.ReplayedHeader))
	assert.Equal(t, string(first.Body), string(again.Body), "a 4xx is final: replayed as it was")
	assert.Equal(t, p.RequestID, p2.RequestID, "the replayed problem names the request that ran")
	assert.Equal(t, "application/problem+json", again.Header.Get("Content-Type"))

	// The same key for another alert is another request.
	p = admin.Do("POST", "/api/v1/alerts/"+uuid.NewString()+"/tickets", nil, key("from-alert")).Problem(t, http.StatusUnprocessableEntity)
	assert.Equal(t, "idempotency_key_reused", p.Code)
	assert.Empty(t, tickets(t, admin))
}

func TestInvalidIdempotencyKeysAreRefused(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	body := map[string]any{"title": "refused"}
	cases := map[string]apitest.Option{
		"empty":        key(""),
		"too long":     key(strings.Repeat("k", 256)),
		"control":      key("a\tb"),
		"beyond ASCII": key("ключ"),
		"two of them": func(r *http.Request) {
			r.Header.Add(api.IdempotencyKeyHeader, "a")
			r.Header.Add(api.IdempotencyKeyHeader, "b")
		},
		"empty, no body": key(""),
	}
	for name, opt := range cases {
		t.Run(name, func(t *testing.T) {
			var r *apitest.Response
			if name == "empty, no body" {
				r = admin.Do("POST", "/api/v1/alerts/"+uuid.NewString()+"/tickets", nil, opt)
			} else {
				r = admin.Do("POST", "/api/v1/tickets", body, opt)
			}
			p := r.Problem(t, http.StatusBadRequest)
			assert.Equal(t, "invalid_parameter", p.Code)
			require.Len(t, p.Errors, 1, "%+v", p.Errors)
			assert.Equal(t, "Idempotency-Key", p.Errors[0].Parameter)
		})
	}
	// The longest key and every printable character are fine.
	r, _ := createTicket(t, admin, body, key(strings.Repeat("k", 255)))
	assert.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	r, _ = createTicket(t, admin, map[string]any{"title": "printable"}, key(` !"#$%&'()*+,-./09:;<=>?@AZ[\]^_`+"`"+`az{|}~`))
	assert.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	assert.Equal(t, []string{"refused", "printable"}, tickets(t, admin), "only the valid keys created tickets")
}

// copyKey stores a row for newKey that claims the same request as the
// completed oldKey, in progress since age ago, as a request still running
// (or one that died) would have left it.
func copyKey(t *testing.T, env *apitest.Env, oldKey, newKey string, age time.Duration) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO idempotency_keys (tenant_id, principal_id, key, operation_id, request_hash, status,
			                              attempt_id, attempt_started_at, created_at)
			SELECT tenant_id, principal_id, $2, operation_id, request_hash, 'in_progress',
			       $3, now() - make_interval(secs => $4), now() - make_interval(secs => $4)
			  FROM idempotency_keys WHERE key = $1`, oldKey, newKey, uuid.New(), age.Seconds())
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("copied %d rows", tag.RowsAffected())
		}
		return err
	}))
}

func TestIdempotencyKeyInProgress(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	body := map[string]any{"title": "in flight"}
	r, _ := createTicket(t, admin, body, key("done"))
	require.Equal(t, http.StatusCreated, r.Status)

	t.Run("a running attempt holds the key", func(t *testing.T) {
		copyKey(t, env, "done", "k-7f3-running", 5*time.Second)
		r := admin.Do("POST", "/api/v1/tickets", body, key("k-7f3-running"))
		p := r.Problem(t, http.StatusConflict)
		assert.Equal(t, "idempotency_key_in_progress", p.Code)
		assert.Equal(t, "1", r.Header.Get("Retry-After"))
		assert.Equal(t, []string{"in flight"}, tickets(t, admin), "nothing created")
		// A different request with the key is refused as such, running or not.
		p = admin.Do("POST", "/api/v1/tickets", map[string]any{"title": "other"}, key("k-7f3-running")).Problem(t, http.StatusUnprocessableEntity)
		assert.Equal(t, "idempotency_key_reused", p.Code)
	})

	t.Run("an attempt that died is taken over", func(t *testing.T) {
		copyKey(t, env, "done", "k-7f3-died", idempotency.TakeoverAfter+time.Minute)
		r, tk := createTicket(t, admin, body, key("k-7f3-died"))
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		assert.Empty(t, r.Header.Get(httpx.ReplayedHeader), "the request ran")
		r, again := createTicket(t, admin, body, key("k-7f3-died"))
		assert.Equal(t, "true", r.Header.Get(httpx.ReplayedHeader))
		assert.Equal(t, tk.ID, again.ID)
		assert.Equal(t, []string{"in flight", "in flight"}, tickets(t, admin))
		assert.Contains(t, env.Logs.String(), "idempotency key taken over")
	})

	t.Run("an expired key starts over", func(t *testing.T) {
		ctx := context.Background()
		require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'done'`)
			return err
		}))
		r, _ := createTicket(t, admin, map[string]any{"title": "after a day"}, key("done"))
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		assert.Empty(t, r.Header.Get(httpx.ReplayedHeader))
		assert.Equal(t, []string{"in flight", "in flight", "after a day"}, tickets(t, admin))
	})

	assert.NotContains(t, env.Logs.String(), "k-7f3", "keys are never logged")
}

// TestConcurrentRetriesRunOnce fires the same request with one key from
// many clients at once: exactly one runs; the others get its response or
// are told it is in progress.
func TestConcurrentRetriesRunOnce(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: env.TLSConfig(), ForceAttemptHTTP2: true}}
	t.Cleanup(client.CloseIdleConnections)
	body := []byte(`{"title":"stampede"}`)

	type result struct {
		status   int
		replayed bool
		code     string
		body     []byte
		err      error
	}
	const n = 10
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			req, err := http.NewRequest("POST", env.Server.URL+"/api/v1/tickets", bytes.NewReader(body))
			if err != nil {
				results[i].err = err
				return
			}
			req.Header.Set("Authorization", "Bearer "+env.AdminToken)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(api.IdempotencyKeyHeader, "stampede-1")
			resp, err := client.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			defer func() { _ = resp.Body.Close() }()
			got, err := io.ReadAll(resp.Body)
			if err == nil {
				_, err = apitest.Validate(req, body, resp.StatusCode, resp.Header, got)
			}
			results[i] = result{status: resp.StatusCode, replayed: resp.Header.Get(httpx.ReplayedHeader) == "true", body: got, err: err}
			if resp.StatusCode == http.StatusConflict {
				results[i].code = string(got)
			}
		})
	}
	close(start)
	wg.Wait()

	var created []byte
	ran, replayed, conflicts := 0, 0, 0
	for i, r := range results {
		require.NoError(t, r.err, "request %d", i)
		switch r.status {
		case http.StatusCreated:
			if r.replayed {
				replayed++
			} else {
				ran++
			}
			if created == nil {
				created = r.body
			}
			assert.Equal(t, string(created), string(r.body), "every 201 is the same ticket")
		case http.StatusConflict:
			conflicts++
			assert.Contains(t, r.code, `"code":"idempotency_key_in_progress"`)
		default:
			t.Errorf("request %d: status %d: %s", i, r.status, r.body)
		}
	}
	t.Logf("%d ran, %d replayed, %d in progress", ran, replayed, conflicts)
	assert.Equal(t, 1, ran, "exactly one request ran")
	assert.Equal(t, []string{"stampede"}, tickets(t, admin), "exactly one ticket")

	// Once it is done, a retry gets the ticket.
	r, _ := createTicket(t, admin, apitest.Raw(body), key("stampede-1"))
	require.Equal(t, http.StatusCreated, r.Status)
	assert.Equal(t, "true", r.Header.Get(httpx.ReplayedHeader))
}

// TestServerErrorsAreNotKept makes the database fail a ticket's creation:
// the 500 is not stored, so the retry with the same key runs again.
func TestServerErrorsAreNotKept(t *testing.T) {
	env := apitest.Start(t)
	admin := env.Client(t, env.AdminToken)
	ctx := context.Background()
	_, err := env.DB.Owner.Exec(ctx, `
		CREATE FUNCTION test_refuse_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'the disk is full'; END $$;
		CREATE TRIGGER test_refuse_ticket BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION test_refuse_ticket()`)
	require.NoError(t, err)

	body := map[string]any{"title": "after an outage"}
	p := admin.Do("POST", "/api/v1/tickets", body, key("k-outage")).Problem(t, http.StatusInternalServerError)
	assert.Equal(t, "internal", p.Code)
	var left int
	require.NoError(t, db.InTenant(ctx, env.DB.Owner, env.Tenant.ID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&left)
	}))
	assert.Zero(t, left, "a failed attempt leaves no key behind")

	_, err = env.DB.Owner.Exec(ctx, `DROP TRIGGER test_refuse_ticket ON tickets`)
	require.NoError(t, err)
	r, _ := createTicket(t, admin, body, key("k-outage"))
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	assert.Empty(t, r.Header.Get(httpx.ReplayedHeader), "the retry ran")
	assert.Equal(t, []string{"after an outage"}, tickets(t, admin))
}
