package api

import "time"

// UTC returns an optional time in UTC, as every API timestamp is written.
func UTC(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
