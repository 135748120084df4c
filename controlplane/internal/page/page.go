// Package page implements the API's cursor pagination: `?limit=&cursor=` in,
// `{"items": [...], "next_cursor": ...}` out. A cursor is opaque to clients:
// base64url of a small JSON key naming where the next page starts.
package page

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"

	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// DefaultLimit and MaxLimit bound a page (the spec enforces the maximum too).
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// Limit returns the page size for an optional ?limit=.
func Limit(limit *int) int {
	if limit == nil || *limit < 1 {
		return DefaultLimit
	}
	if *limit > MaxLimit {
		return MaxLimit
	}
	return *limit
}

// Encode makes a cursor from a position key.
func Encode(key any) *string {
	b, err := json.Marshal(key)
	if err != nil {
		// Keys are small structs of strings, numbers and times.
		panic("page: encode cursor: " + err.Error())
	}
	s := base64.RawURLEncoding.EncodeToString(b)
	return &s
}

// Decode reads an optional cursor into key; an unreadable cursor is a 400.
// It reports whether a cursor was given.
func Decode(cursor *string, key any) (bool, error) {
	if cursor == nil || *cursor == "" {
		return false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(*cursor)
	if err == nil {
		err = json.Unmarshal(b, key)
	}
	if err != nil {
		return false, InvalidCursor()
	}
	return true, nil
}

// InvalidCursor is the 400 for a cursor this API did not return (also for
// one that decodes but holds an impossible position).
func InvalidCursor() error {
	p := problem.New(http.StatusBadRequest, "invalid_cursor", "the cursor is not one this API returned; start again without a cursor")
	p.Errors = []problem.Field{{Parameter: "cursor", Detail: "not a valid cursor"}}
	return p
}

// ValidInt32 reports whether a position decoded from a cursor fits the
// integer columns positions are compared with.
func ValidInt32(n int) bool {
	return n >= math.MinInt32 && n <= math.MaxInt32
}

// Trim cuts rows fetched with limit+1 down to limit and says whether more
// exist, so the caller knows to emit a next cursor.
func Trim[T any](rows []T, limit int) ([]T, bool) {
	if len(rows) > limit {
		return rows[:limit], true
	}
	return rows, false
}
