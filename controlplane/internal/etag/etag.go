// Package etag implements optimistic concurrency for versioned resources:
// reads send `ETag: "v<version>"`, changes must send it back in If-Match.
package etag

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// Of is the ETag of a version.
func Of(version int) string {
	return fmt.Sprintf(`"v%d"`, version)
}

// Check compares If-Match with the current version: a missing header is a
// 428, one that is not a list of entity tags (an unquoted v2) a 400 that
// says how to quote it, another version a 412. `*` matches any version; a
// W/ prefix is ignored.
func Check(ifMatch *string, current int) error {
	if ifMatch == nil || strings.TrimSpace(*ifMatch) == "" {
		return problem.New(http.StatusPreconditionRequired, "precondition_required",
			"this change needs If-Match with the resource's ETag; read it first").With("ETag", Of(current))
	}
	tags, bad := parse(*ifMatch)
	if bad != "" {
		detail := fmt.Sprintf(`If-Match must be the ETag as the read answered it, in double quotes (RFC 9110 entity-tag): If-Match: %s, not %s`,
			Of(current), shorten(bad))
		p := problem.New(http.StatusBadRequest, problem.CodeInvalidParameter, detail).With("ETag", Of(current))
		p.Errors = []problem.Field{{Parameter: "If-Match", Detail: `an entity tag in double quotes, such as "v2", or *`}}
		return p
	}
	for _, t := range tags {
		if t == "*" || t == Of(current) {
			return nil
		}
	}
	return problem.Newf(http.StatusPreconditionFailed, "precondition_failed",
		"If-Match %s names an older version; the current one is %s: read it again and reapply the change", *ifMatch, Of(current))
}

// parse splits an If-Match value (RFC 9110 section 13.1.1: "*" or a
// comma-separated list of entity tags) into its members, with any W/
// prefix dropped. bad is the first member that is neither, such as v2.
func parse(h string) (tags []string, bad string) {
	for _, m := range splitList(h) {
		if m == "*" {
			tags = append(tags, m)
			continue
		}
		t := strings.TrimPrefix(m, "W/")
		if !entityTag(t) {
			return nil, m
		}
		tags = append(tags, t)
	}
	return tags, ""
}

// splitList splits at the commas outside double quotes and drops empty
// members, as RFC 9110 lists allow.
func splitList(h string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i <= len(h); i++ {
		if i < len(h) && h[i] == '"' {
			quoted = !quoted
		}
		if i == len(h) || h[i] == ',' && !quoted {
			if m := strings.TrimSpace(h[start:i]); m != "" {
				out = append(out, m)
			}
			start = i + 1
		}
	}
	return out
}

// entityTag reports whether s is an opaque-tag: DQUOTE *etagc DQUOTE, where
// etagc is any visible character but DQUOTE, or obs-text.
func entityTag(s string) bool {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; c == '"' || c < 0x21 || c == 0x7f {
			return false
		}
	}
	return true
}

// shorten keeps what a detail quotes of the header short.
func shorten(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}
