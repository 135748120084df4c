package apitest

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// timestamp matches an RFC 3339 date-time string with its fraction.
var timestamp = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`)

// checkTimestamps fails a response that carries a timestamp with more than
// six fractional digits: PostgreSQL keeps microseconds, so a write that
// answered nanoseconds would read back differently from what it returned.
func checkTimestamps(body []byte) error {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	var walk func(path string, v any) error
	walk = func(path string, v any) error {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if err := walk(path+"/"+k, e); err != nil {
					return err
				}
			}
		case []any:
			for i, e := range x {
				if err := walk(fmt.Sprintf("%s/%d", path, i), e); err != nil {
					return err
				}
			}
		case string:
			if m := timestamp.FindStringSubmatch(x); m != nil && len(m[1]) > 7 {
				return fmt.Errorf("%s: timestamp %s has more than microsecond precision (reads of the same field have six digits at most)", path, x)
			}
		}
		return nil
	}
	return walk("#", v)
}
