//go:build !windows

package queue

import "syscall"

// errnoKinds are the operating system's errors a failed write can carry,
// most specific first.
var errnoKinds = []struct {
	errno syscall.Errno
	kind  ErrorKind
}{
	{syscall.ENOSPC, KindNoSpace},
	{syscall.EDQUOT, KindQuota},
	{syscall.EROFS, KindReadOnly},
	{syscall.EIO, KindIO},
}
