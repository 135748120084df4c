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
// 428, another version a 412. `*` matches any version.
func Check(ifMatch *string, current int) error {
	if ifMatch == nil || strings.TrimSpace(*ifMatch) == "" {
		return problem.New(http.StatusPreconditionRequired, "precondition_required",
			"this change needs If-Match with the resource's ETag; read it first").With("ETag", Of(current))
	}
	for _, v := range strings.Split(*ifMatch, ",") {
		v = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), "W/"))
		if v == "*" || v == Of(current) {
			return nil
		}
	}
	return problem.Newf(http.StatusPreconditionFailed, "precondition_failed",
		"If-Match %s names an older version; the current one is %s: read it again and reapply the change", *ifMatch, Of(current))
}
