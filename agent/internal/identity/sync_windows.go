//go:build windows

package identity

// syncDir is a no-op on Windows, where directories cannot be synced and
// MoveFileEx (os.Rename) is durable once it returns.
func syncDir(string) error { return nil }
