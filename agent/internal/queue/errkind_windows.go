package queue

import "syscall"

// Windows system error codes (winerror.h) a failed write can carry.
const (
	errorWriteProtect   syscall.Errno = 19
	errorHandleDiskFull syscall.Errno = 39
	errorDiskFull       syscall.Errno = 112
	errorDiskQuota      syscall.Errno = 1295
	errorIODevice       syscall.Errno = 1117
)

// errnoKinds are the operating system's errors a failed write can carry,
// most specific first.
var errnoKinds = []struct {
	errno syscall.Errno
	kind  ErrorKind
}{
	{errorDiskFull, KindNoSpace},
	{errorHandleDiskFull, KindNoSpace},
	{errorDiskQuota, KindQuota},
	{errorWriteProtect, KindReadOnly},
	{errorIODevice, KindIO},
}
