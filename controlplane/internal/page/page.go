// Package page implements the API's cursor pagination: `?limit=&cursor=` in,
// `{"items": [...], "next_cursor": ...}` out. A cursor is opaque to clients:
// base64url of a small JSON key naming where the next page starts, and an
// HMAC binding it to the list and filters it was made for (see Binding).
package page

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"

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

// Binding ties the cursors of one request to the list they page: the
// operation, its path parameters and its filters (every query parameter but
// cursor and limit). Cursors carry an HMAC of that scope and their
// position under a deployment key, so a cursor of another list, of the same
// list with other filters, or one a client made up, is refused instead of
// silently paging the wrong rows. The HTTP gate attaches a Binding to every
// request (WithBinding).
type Binding struct {
	// Keys sign with the first and verify with any (they rotate with the
	// deployment's secrets keyring).
	Keys  [][]byte
	scope []byte
}

type bindingKey struct{}

// processKey signs cursors made outside a bound request (tests that call
// handlers directly): valid within this process only.
var processKey = func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic("page: no randomness: " + err.Error())
	}
	return k
}()

// WithBinding attaches the cursor binding of one request to ctx.
func WithBinding(ctx context.Context, keys [][]byte, operation string, pathParams map[string]string, query url.Values) context.Context {
	var scope bytes.Buffer
	scope.WriteString(operation)
	writeSorted := func(kind byte, m map[string][]string) {
		names := make([]string, 0, len(m))
		for n := range m {
			if kind == 'q' && (n == "cursor" || n == "limit") {
				continue
			}
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			for _, v := range m[n] {
				// NUL cannot occur in names or values (the gate refuses it).
				scope.WriteByte(0)
				scope.WriteByte(kind)
				scope.WriteString(n)
				scope.WriteByte(0)
				scope.WriteString(v)
			}
		}
	}
	path := make(map[string][]string, len(pathParams))
	for n, v := range pathParams {
		path[n] = []string{v}
	}
	writeSorted('p', path)
	writeSorted('q', query)
	if len(keys) == 0 {
		keys = [][]byte{processKey}
	}
	return context.WithValue(ctx, bindingKey{}, Binding{Keys: keys, scope: scope.Bytes()})
}

func bindingFrom(ctx context.Context) Binding {
	if b, ok := ctx.Value(bindingKey{}).(Binding); ok {
		return b
	}
	return Binding{Keys: [][]byte{processKey}}
}

// macSize is the truncated HMAC-SHA256 a cursor carries (128 bits).
const macSize = 16

func (b Binding) mac(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(b.scope)
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(nil)[:macSize]
}

// Encode makes the cursor of a position key, bound to the request of ctx.
func Encode(ctx context.Context, key any) *string {
	payload, err := json.Marshal(key)
	if err != nil {
		// Keys are small structs of strings, numbers and times.
		panic("page: encode cursor: " + err.Error())
	}
	b := bindingFrom(ctx)
	s := base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(b.mac(b.Keys[0], payload))
	return &s
}

// Decode reads an optional cursor into key, checking that it was made for
// the list and filters of the request of ctx; any other cursor is a 400.
// It reports whether a cursor was given.
func Decode(ctx context.Context, cursor *string, key any) (bool, error) {
	if cursor == nil || *cursor == "" {
		return false, nil
	}
	enc, sig, ok := strings.Cut(*cursor, ".")
	if !ok {
		return false, InvalidCursor()
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(enc)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil || len(mac) != macSize {
		return false, InvalidCursor()
	}
	b := bindingFrom(ctx)
	valid := false
	for _, k := range b.Keys {
		if hmac.Equal(mac, b.mac(k, payload)) {
			valid = true
			break
		}
	}
	if !valid {
		return false, InvalidCursor()
	}
	if err := json.Unmarshal(payload, key); err != nil {
		return false, InvalidCursor()
	}
	return true, nil
}

// InvalidCursor is the 400 for a cursor this API did not return (also for
// one that decodes but holds an impossible position).
func InvalidCursor() error {
	p := problem.New(http.StatusBadRequest, "invalid_cursor", "the cursor is not one this API returned for this list and these filters; start again without a cursor")
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
