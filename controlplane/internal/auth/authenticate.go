package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// lastUsedGranularity bounds how often a token's last_used_at is written: a
// busy token costs one write a minute, not one a request.
const lastUsedGranularity = time.Minute

// Authenticator turns a bearer token into the request's caller.
type Authenticator struct {
	Pool *pgxpool.Pool
	// Now is the clock; tests may set it.
	Now func() time.Time
}

func (a *Authenticator) now() time.Time { return nowFrom(a.Now) }

// nowFrom reads a settable clock: clock when set, else the system clock.
func nowFrom(clock func() time.Time) time.Time {
	if clock != nil {
		return clock()
	}
	return time.Now()
}

func unauthorized(code, detail string) *problem.Problem {
	// RFC 6750: a 401 for a bearer resource names the scheme.
	challenge := `Bearer realm="edgeward"`
	if code != problem.CodeTokenMissing {
		challenge += `, error="invalid_token"`
	}
	return problem.New(http.StatusUnauthorized, code, detail).With("WWW-Authenticate", challenge)
}

// Authenticate checks the request's bearer token. On success the returned
// context carries the caller and its audit actor; otherwise the error is a
// 401 problem saying what is wrong with the token. Uses of expired or revoked
// tokens are recorded in the tenant's audit trail.
func (a *Authenticator) Authenticate(r *http.Request) (context.Context, error) {
	ctx := r.Context()
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, unauthorized(problem.CodeTokenMissing, "this operation needs an API token: send Authorization: Bearer <token>")
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, unauthorized(problem.CodeTokenMalformed, "the Authorization header must be: Bearer <token>")
	}
	tenantID, hash, err := ParseToken(strings.TrimSpace(token))
	if err != nil {
		return nil, unauthorized(problem.CodeTokenMalformed, "the bearer token is not an Edgeward API token (they start with ew_ and carry a checksum)")
	}

	var c caller.Caller
	var rejected error
	now := a.now()
	err = db.InTenant(ctx, a.Pool, tenantID, func(tx pgx.Tx) error {
		var t Token
		var disabled *time.Time
		var err error
		c, t, disabled, err = lookup(ctx, tx, hash)
		if err != nil {
			return err
		}
		actor := audit.WithActor(ctx, audit.Actor{Type: audit.ActorPrincipal, ID: c.PrincipalID.String(), Name: c.PrincipalName})
		switch {
		case t.RevokedAt != nil:
			rejected = unauthorized(problem.CodeTokenRevoked, "the bearer token was revoked")
		case !now.Before(t.ExpiresAt):
			rejected = unauthorized(problem.CodeTokenExpired, "the bearer token expired at "+t.ExpiresAt.UTC().Format(time.RFC3339))
		case disabled != nil:
			rejected = unauthorized(problem.CodeTokenRevoked, "the token's principal is disabled")
		}
		if rejected != nil {
			p, _ := problem.As(rejected)
			return audit.Record(actor, tx, c.TenantID, audit.Entry{
				Action: "auth.token_rejected", TargetType: "api_token", TargetID: t.ID.String(), Outcome: audit.OutcomeDenied,
				Details: map[string]any{"reason": p.Code, "method": r.Method, "path": r.URL.Path},
			})
		}
		if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) >= lastUsedGranularity {
			if _, err := tx.Exec(ctx, `UPDATE api_tokens SET last_used_at = $2 WHERE id = $1`, t.ID, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if p, ok := problem.As(err); ok {
			return nil, p
		}
		return nil, err
	}
	if rejected != nil {
		return nil, rejected
	}
	ctx = caller.With(ctx, c)
	ctx = audit.WithActor(ctx, audit.Actor{Type: audit.ActorPrincipal, ID: c.PrincipalID.String(), Name: c.PrincipalName})
	return ctx, nil
}

// RecordDenied writes the audit event for an authenticated caller whose role
// may not call an operation. The refused request itself changes nothing.
func (a *Authenticator) RecordDenied(ctx context.Context, operationID string, r *http.Request) error {
	c, ok := caller.From(ctx)
	if !ok {
		return errors.New("record denied: no caller")
	}
	// The denial is recorded even when the client has gone away.
	ctx = context.WithoutCancel(ctx)
	return db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		return audit.Record(ctx, tx, c.TenantID, audit.Entry{
			Action: "auth.denied", TargetType: "operation", TargetID: operationID, Outcome: audit.OutcomeDenied,
			Details: map[string]any{"role": c.Role, "method": r.Method, "path": r.URL.Path},
		})
	})
}
