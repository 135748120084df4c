// Package caller carries the authenticated caller of a request through its
// context. The auth room puts it there; every room reads its tenant from it,
// so no handler takes a tenant id from the request itself.
package caller

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/db"
)

// Roles a caller can hold. Auditors can only read.
const (
	RoleTenantAdmin    = "tenant_admin"
	RoleAnalyst        = "analyst"
	RoleAuditor        = "auditor"
	RoleServiceAccount = "service_account"
)

// Roles lists every role.
var Roles = []string{RoleTenantAdmin, RoleAnalyst, RoleAuditor, RoleServiceAccount}

// ValidRole reports whether r names a role.
func ValidRole(r string) bool {
	for _, x := range Roles {
		if x == r {
			return true
		}
	}
	return false
}

// Caller is an authenticated API caller: a principal of a tenant, acting
// through one token with one role.
type Caller struct {
	TenantID       uuid.UUID
	TenantName     string
	PrincipalID    uuid.UUID
	PrincipalName  string
	PrincipalKind  string
	Role           string
	TokenID        uuid.UUID
	TokenName      string
	TokenExpiresAt time.Time
}

type key struct{}

// With attaches c to ctx.
func With(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, key{}, c)
}

// From returns the caller of ctx.
func From(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(key{}).(Caller)
	return c, ok
}

// Require returns the caller of ctx. The HTTP layer authenticates every
// non-public operation before its handler runs, so a handler always has one;
// a missing caller is a wiring bug, reported as an error.
func Require(ctx context.Context) (Caller, error) {
	c, ok := From(ctx)
	if !ok {
		return Caller{}, errors.New("caller: no authenticated caller in the request context")
	}
	return c, nil
}

// InTenant runs fn in a row-level-security transaction of the calling
// tenant (db.InTenant), for handlers that need both the caller and the
// transaction.
func InTenant(ctx context.Context, pool db.Beginner, fn func(c Caller, tx pgx.Tx) error) error {
	c, err := Require(ctx)
	if err != nil {
		return err
	}
	return db.InTenant(ctx, pool, c.TenantID, func(tx pgx.Tx) error { return fn(c, tx) })
}
