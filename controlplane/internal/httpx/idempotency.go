package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/idempotency"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// ReplayedHeader marks a response that repeats the stored first response to
// a request with the same Idempotency-Key.
const ReplayedHeader = "Idempotent-Replayed"

// maxIdempotencyKey is the longest key accepted, in bytes.
const maxIdempotencyKey = 255

// retryInProgress is the Retry-After of a request whose key another attempt
// holds. Most attempts finish in milliseconds, so the client is asked back
// soon rather than at the takeover age.
const retryInProgress = 1

// storeTimeout bounds storing or releasing a key after the handler ran. It
// does not follow the request's context: a client that gave up is exactly
// the one that will retry, so its response must be kept.
const storeTimeout = 10 * time.Second

// idempotencyKey returns the request's Idempotency-Key, whether it sent one,
// and a 400 problem when the header is unusable.
func idempotencyKey(r *http.Request) (string, bool, *problem.Problem) {
	values := r.Header.Values(api.IdempotencyKeyHeader)
	if len(values) == 0 {
		return "", false, nil
	}
	bad := func(detail string) *problem.Problem {
		p := problem.New(http.StatusBadRequest, problem.CodeInvalidParameter, "the Idempotency-Key header is invalid")
		p.Errors = []problem.Field{{Parameter: api.IdempotencyKeyHeader, Detail: detail}}
		return p
	}
	if len(values) > 1 {
		return "", true, bad("send one Idempotency-Key header")
	}
	key := values[0]
	if key == "" || len(key) > maxIdempotencyKey {
		return "", true, bad(fmt.Sprintf("must be 1 to %d characters long", maxIdempotencyKey))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return "", true, bad("must be printable ASCII: no control characters, no characters beyond ASCII")
		}
	}
	return key, true, nil
}

// serveIdempotent runs an operation that takes an Idempotency-Key for a
// request that sent one. The first request with a key runs, and its final
// response (any status below 500) is stored; a retry with the same key and
// the same request gets that response again, marked Idempotent-Replayed. A
// server error stores nothing, so that a retry runs again.
func (cfg Config) serveIdempotent(w *recorder, r *http.Request, op *api.Operation, key string, body []byte, next http.Handler) {
	ctx := r.Context()
	if cfg.Pool == nil {
		problem.Write(w, r, problem.New(http.StatusNotImplemented, "not_implemented", "idempotency keys are not configured"), RequestID(ctx))
		return
	}
	c, ok := caller.From(ctx)
	if !ok {
		cfg.writeError(w, r, fmt.Errorf("idempotency key on %s: no caller", op.ID))
		return
	}
	canonical, err := canonicalJSON(body)
	if err != nil {
		cfg.writeError(w, r, fmt.Errorf("idempotency key: canonical body: %w", err))
		return
	}
	req := idempotency.Request{
		TenantID:    c.TenantID,
		PrincipalID: c.PrincipalID,
		Key:         key,
		OperationID: op.ID,
		Hash:        idempotency.Hash(r.Method, r.URL.EscapedPath(), r.URL.RawQuery, canonical),
	}
	var claim idempotency.Claim
	if err := db.InTenant(ctx, cfg.Pool, c.TenantID, func(tx pgx.Tx) error {
		var err error
		claim, err = idempotency.Begin(ctx, tx, req)
		return err
	}); err != nil {
		cfg.writeError(w, r, err)
		return
	}
	w.idempotency = claim.Outcome.String()
	switch claim.Outcome {
	case idempotency.Replay:
		for name, values := range claim.Response.Header {
			for _, v := range values {
				w.Header().Add(name, v)
			}
		}
		w.Header().Set(ReplayedHeader, "true")
		w.WriteHeader(claim.Response.Status)
		_, _ = w.Write(claim.Response.Body)
		return
	case idempotency.InProgress:
		problem.Write(w, r, problem.Newf(http.StatusConflict, problem.CodeIdempotencyKeyInProgress,
			"a request with this Idempotency-Key is still in progress; retry after Retry-After for its response (an attempt that has not finished after %d seconds is taken over)",
			int(idempotency.TakeoverAfter/time.Second)).
			With("Retry-After", strconv.Itoa(retryInProgress)), RequestID(ctx))
		return
	case idempotency.Mismatch:
		p := problem.New(http.StatusUnprocessableEntity, problem.CodeIdempotencyKeyReused,
			"this Idempotency-Key was used for a different request (another operation, path or body) in the last 24 hours; send a new request with a new key")
		p.Errors = []problem.Field{{Parameter: api.IdempotencyKeyHeader, Detail: "already used for a different request"}}
		problem.Write(w, r, p, RequestID(ctx))
		return
	case idempotency.Proceed:
	default:
		cfg.writeError(w, r, fmt.Errorf("idempotency key: unexpected outcome %v", claim.Outcome))
		return
	}
	if claim.TakenOver {
		cfg.Logger.Warn("idempotency key taken over from an attempt that did not finish", "request_id", RequestID(ctx), "operation", op.ID)
	}

	// The response is held back until it is stored: a client that sees it
	// can count on a retry seeing it too.
	buf := &bufferedResponse{header: http.Header{}}
	finished := false
	defer func() {
		if !finished { // the handler panicked: a retry must run again
			cfg.settle(ctx, req, claim.Attempt, nil)
		}
	}()
	next.ServeHTTP(buf, r)
	finished = true
	if !buf.wroteHeader {
		buf.status = http.StatusOK
	}
	resp := idempotency.Response{Status: buf.status, Header: buf.header, Body: buf.body.Bytes()}
	if resp.Status < 500 {
		cfg.settle(ctx, req, claim.Attempt, &resp)
	} else {
		cfg.settle(ctx, req, claim.Attempt, nil)
	}
	for name, values := range buf.header {
		w.Header()[name] = values
	}
	w.WriteHeader(buf.status)
	_, _ = w.Write(resp.Body)
}

// settle stores resp as the key's response, or, when resp is nil, releases
// the key. A failure is logged, never sent: the work is done and its
// response goes out; the key stays in progress until a retry takes it over.
func (cfg Config) settle(ctx context.Context, req idempotency.Request, attempt uuid.UUID, resp *idempotency.Response) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	kept := true
	err := db.InTenant(ctx, cfg.Pool, req.TenantID, func(tx pgx.Tx) error {
		if resp == nil {
			return idempotency.Release(ctx, tx, req, attempt)
		}
		var err error
		kept, err = idempotency.Complete(ctx, tx, req, attempt, *resp)
		return err
	})
	switch {
	case err != nil:
		cfg.Logger.Error("idempotency key not settled", "request_id", RequestID(ctx), "operation", req.OperationID, "error", err.Error())
	case !kept:
		cfg.Logger.Warn("idempotency key was taken over while its request ran; the newer response is kept", "request_id", RequestID(ctx), "operation", req.OperationID)
	}
}

// canonicalJSON re-encodes a JSON body with sorted keys and no insignificant
// space, so that a retry encoding the same value differently matches. The
// gate has checked the syntax already. Numbers keep their literal form.
func canonicalJSON(body []byte) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// bufferedResponse holds a handler's response until it is stored.
type bufferedResponse struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if !b.wroteHeader {
		b.status, b.wroteHeader = code, true
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if !b.wroteHeader {
		b.WriteHeader(http.StatusOK)
	}
	return b.body.Write(p)
}
