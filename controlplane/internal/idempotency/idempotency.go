// Package idempotency keeps the records behind the Idempotency-Key request
// header: which request a principal sent with a key, whether it is still
// running, and the response it got. A retry with the same key is then
// answered with that response instead of doing the work twice.
//
// The HTTP gate (package httpx) decides when a key applies and calls Begin
// before the handler runs, then Complete or Release after it. This package
// owns the idempotency_keys table (migration 00005). Every function runs in
// the caller's tenant transaction (db.InTenant), so row-level security keeps
// each tenant's keys to itself.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// TTL is how long a key is remembered after its first use. A retry later
// than that runs as a new request.
const TTL = 24 * time.Hour

// TakeoverAfter is how long an attempt may hold a key before a retry with
// the same key assumes it died (its replica crashed, or it was cut off) and
// runs the request again. It matches the server's write timeout: past it,
// the first attempt could no longer answer its client anyway.
const TakeoverAfter = 60 * time.Second

// expireOnInsert bounds the expired keys a new key deletes in passing, so
// that a busy tenant's table stays near one TTL of keys without the
// retention sweep, at a small, fixed cost per new key.
const expireOnInsert = 10

// Request identifies one use of a key.
type Request struct {
	TenantID    uuid.UUID
	PrincipalID uuid.UUID
	Key         string
	OperationID string
	// Hash is the SHA-256 of the request (see Hash): the same key sent with
	// a different request is refused.
	Hash [sha256.Size]byte
}

// Response is what is kept of a response: status, the headers StoredHeaders
// names, and the body as sent.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// StoredHeaders are the response headers a replay repeats. The rest (request
// id, dates, connection headers) belong to the request that carries them.
var StoredHeaders = []string{"Content-Type", "Cache-Control", "ETag"}

// Outcome says what Begin found.
type Outcome int

const (
	// Proceed: the key is the caller's (new, expired, or taken over from a
	// dead attempt). Run the request, then Complete or Release the attempt.
	Proceed Outcome = iota + 1
	// Replay: the key's request completed; Claim.Response is its response.
	Replay
	// InProgress: another attempt holds the key and may still finish.
	InProgress
	// Mismatch: the key was used for a different request (another
	// operation, path or body).
	Mismatch
)

func (o Outcome) String() string {
	switch o {
	case Proceed:
		return "proceed"
	case Replay:
		return "replay"
	case InProgress:
		return "in_progress"
	case Mismatch:
		return "mismatch"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Claim is the result of Begin.
type Claim struct {
	Outcome Outcome
	// Attempt identifies the caller's attempt when Outcome is Proceed.
	Attempt uuid.UUID
	// TakenOver is set when Proceed took the key over from a dead attempt.
	TakenOver bool
	// Response is the stored response when Outcome is Replay.
	Response Response
	// TakeoverIn is how soon a retry would take the key over from the
	// attempt holding it, when Outcome is InProgress.
	TakeoverIn time.Duration
}

// Hash is the fingerprint of a request that a key is bound to: method, path,
// query and the canonical form of the body, so that a retry which encodes the
// same JSON differently (key order, spacing) still matches.
func Hash(method, escapedPath, rawQuery string, canonicalBody []byte) [sha256.Size]byte {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(method), []byte(escapedPath), []byte(rawQuery)} {
		h.Write(part)
		h.Write([]byte{0})
	}
	h.Write(canonicalBody)
	var out [sha256.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

// Begin claims req's key for a new attempt, or reports why it cannot: the
// key's request completed (replay it), is still running, or was a different
// request. tx must be a tenant transaction of req.TenantID; commit it before
// running the request, so other attempts see the claim.
func Begin(ctx context.Context, tx pgx.Tx, req Request) (Claim, error) {
	attempt, err := uuid.NewV7()
	if err != nil {
		return Claim{}, fmt.Errorf("idempotency key: %w", err)
	}
	// The row can vanish between the INSERT that found it and the SELECT
	// that locks it (its attempt failed and released it, or it expired):
	// then the INSERT is tried again.
	for range 3 {
		tag, err := tx.Exec(ctx, `
			INSERT INTO idempotency_keys (tenant_id, principal_id, key, operation_id, request_hash, status, attempt_id)
			VALUES ($1, $2, $3, $4, $5, 'in_progress', $6)
			ON CONFLICT (tenant_id, principal_id, key) DO NOTHING`,
			req.TenantID, req.PrincipalID, req.Key, req.OperationID, req.Hash[:], attempt)
		if err != nil {
			return Claim{}, fmt.Errorf("idempotency key: claim: %w", err)
		}
		if tag.RowsAffected() == 1 {
			if err := expireSome(ctx, tx, req.TenantID); err != nil {
				return Claim{}, err
			}
			return Claim{Outcome: Proceed, Attempt: attempt}, nil
		}
		c, found, err := existing(ctx, tx, req, attempt)
		if err != nil || found {
			return c, err
		}
	}
	return Claim{}, errors.New("idempotency key: the key changed hands repeatedly; try again")
}

// existing decides about a key that is already in use, locking its row.
func existing(ctx context.Context, tx pgx.Tx, req Request, attempt uuid.UUID) (Claim, bool, error) {
	var (
		opID               string
		hash               []byte
		status             string
		respStatus         *int32
		respHeader         http.Header
		respBody           []byte
		expired, abandoned bool
		secondsToTakeover  float64
	)
	err := tx.QueryRow(ctx, `
		SELECT operation_id, request_hash, status, response_status, response_headers, response_body,
		       created_at < now() - make_interval(secs => $4),
		       attempt_started_at < now() - make_interval(secs => $5),
		       extract(epoch FROM attempt_started_at + make_interval(secs => $5) - now())::float8
		  FROM idempotency_keys
		 WHERE tenant_id = $1 AND principal_id = $2 AND key = $3
		   FOR UPDATE`,
		req.TenantID, req.PrincipalID, req.Key, TTL.Seconds(), TakeoverAfter.Seconds()).
		Scan(&opID, &hash, &status, &respStatus, &respHeader, &respBody, &expired, &abandoned, &secondsToTakeover)
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, false, nil
	}
	if err != nil {
		return Claim{}, false, fmt.Errorf("idempotency key: read: %w", err)
	}
	if expired {
		// Forgotten: the key starts over, bound to this request.
		_, err := tx.Exec(ctx, `
			UPDATE idempotency_keys
			   SET operation_id = $4, request_hash = $5, status = 'in_progress', attempt_id = $6,
			       attempt_started_at = now(), created_at = now(), completed_at = NULL,
			       response_status = NULL, response_headers = NULL, response_body = NULL
			 WHERE tenant_id = $1 AND principal_id = $2 AND key = $3`,
			req.TenantID, req.PrincipalID, req.Key, req.OperationID, req.Hash[:], attempt)
		if err != nil {
			return Claim{}, false, fmt.Errorf("idempotency key: renew expired key: %w", err)
		}
		return Claim{Outcome: Proceed, Attempt: attempt}, true, nil
	}
	if opID != req.OperationID || !bytes.Equal(hash, req.Hash[:]) {
		return Claim{Outcome: Mismatch}, true, nil
	}
	if status == "completed" {
		if respStatus == nil {
			return Claim{}, false, errors.New("idempotency key: completed key without a response")
		}
		return Claim{Outcome: Replay, Response: Response{Status: int(*respStatus), Header: respHeader, Body: respBody}}, true, nil
	}
	if !abandoned {
		wait := time.Duration(math.Ceil(secondsToTakeover)) * time.Second
		return Claim{Outcome: InProgress, TakeoverIn: max(wait, time.Second)}, true, nil
	}
	_, err = tx.Exec(ctx, `
		UPDATE idempotency_keys SET attempt_id = $4, attempt_started_at = now()
		 WHERE tenant_id = $1 AND principal_id = $2 AND key = $3`,
		req.TenantID, req.PrincipalID, req.Key, attempt)
	if err != nil {
		return Claim{}, false, fmt.Errorf("idempotency key: take over: %w", err)
	}
	return Claim{Outcome: Proceed, Attempt: attempt, TakenOver: true}, true, nil
}

// Complete stores the final response of attempt (a status below 500). It
// reports false when the attempt no longer holds the key: it was taken over
// after TakeoverAfter, and the newer attempt's response is the one kept.
func Complete(ctx context.Context, tx pgx.Tx, req Request, attempt uuid.UUID, resp Response) (bool, error) {
	if resp.Status < 100 || resp.Status >= 500 {
		return false, fmt.Errorf("idempotency key: status %d is not final; release the key instead", resp.Status)
	}
	header := http.Header{}
	for _, name := range StoredHeaders {
		if v := resp.Header.Values(name); len(v) > 0 {
			header[http.CanonicalHeaderKey(name)] = v
		}
	}
	body := resp.Body
	if body == nil {
		body = []byte{}
	}
	tag, err := tx.Exec(ctx, `
		UPDATE idempotency_keys
		   SET status = 'completed', response_status = $5, response_headers = $6, response_body = $7, completed_at = now()
		 WHERE tenant_id = $1 AND principal_id = $2 AND key = $3 AND attempt_id = $4 AND status = 'in_progress'`,
		req.TenantID, req.PrincipalID, req.Key, attempt, resp.Status, header, body)
	if err != nil {
		return false, fmt.Errorf("idempotency key: store response: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Release forgets attempt's claim, so that a retry runs the request again:
// for a server error, or a request that never got a response.
func Release(ctx context.Context, tx pgx.Tx, req Request, attempt uuid.UUID) error {
	_, err := tx.Exec(ctx, `
		DELETE FROM idempotency_keys
		 WHERE tenant_id = $1 AND principal_id = $2 AND key = $3 AND attempt_id = $4 AND status = 'in_progress'`,
		req.TenantID, req.PrincipalID, req.Key, attempt)
	if err != nil {
		return fmt.Errorf("idempotency key: release: %w", err)
	}
	return nil
}

// Expire deletes the tenant's keys older than TTL and returns how many. tx
// is a tenant transaction; the retention sweep calls it for every tenant.
func Expire(ctx context.Context, tx pgx.Tx) (int64, error) {
	tag, err := tx.Exec(ctx, `
		DELETE FROM idempotency_keys
		 WHERE tenant_id = app_current_tenant() AND created_at < now() - make_interval(secs => $1)`,
		TTL.Seconds())
	if err != nil {
		return 0, fmt.Errorf("expire idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// expireSome deletes a few of the tenant's expired keys, skipping any that
// another transaction holds.
func expireSome(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) error {
	_, err := tx.Exec(ctx, `
		DELETE FROM idempotency_keys
		 WHERE (tenant_id, principal_id, key) IN (
		       SELECT tenant_id, principal_id, key FROM idempotency_keys
		        WHERE tenant_id = $1 AND created_at < now() - make_interval(secs => $2)
		        ORDER BY created_at
		        LIMIT $3
		          FOR UPDATE SKIP LOCKED)`,
		tenantID, TTL.Seconds(), expireOnInsert)
	if err != nil {
		return fmt.Errorf("idempotency key: expire: %w", err)
	}
	return nil
}
