//go:build !windows

package queue_test

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/agent/internal/queue"
)

// diskFull fails writes the way a full file system does while it is set.
type diskFull struct {
	path string
	full atomic.Bool
}

func (d *diskFull) fault() error {
	if d.full.Load() {
		return &os.PathError{Op: "write", Path: d.path, Err: syscall.ENOSPC}
	}
	return nil
}

// TestFailedAppendsAreCountedAndRecovered: while the disk is full, Append
// fails, nothing changes in the file (not even the drops the bound would
// have made), and every lost report is counted with when the failing began.
// Once space returns, the next Append stores the count, the queue is no
// longer failing, and the count survives a restart.
func TestFailedAppendsAreCountedAndRecovered(t *testing.T) {
	d := &diskFull{}
	opts := queue.Options{MaxCount: 2, WriteFault: d.fault}
	q, path := newQueue(t, opts)
	d.path = path
	appendAll(t, q, "a", "b")
	before, err := q.Stats()
	require.NoError(t, err)
	assert.Zero(t, before.Unqueued)
	assert.Empty(t, before.LastErrorKind)

	d.full.Store(true)
	start := time.Now()
	for i := range 3 {
		_, err := q.Append(fmt.Appendf(nil, "lost %d", i))
		require.Error(t, err)
		assert.ErrorIs(t, err, syscall.ENOSPC)
		assert.EqualError(t, err, "queue: append: write "+path+": no space left on device")
	}
	failing, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(3), failing.Unqueued)
	assert.ErrorIs(t, failing.Failing, syscall.ENOSPC)
	assert.Equal(t, queue.KindNoSpace, failing.LastErrorKind)
	assert.False(t, failing.FailingSince.Before(start), "failing since the first failure")
	assert.True(t, failing.FailingSince.Before(failing.LastErrorAt), "not since the last one")
	assert.Equal(t, before.NextSeq, failing.NextSeq, "a failed Append takes no seq")
	assert.Zero(t, failing.Dropped, "the drop the bound would have made was rolled back")
	seqs, payloads := contents(t, q)
	assert.Equal(t, []uint64{1, 2}, seqs)
	assert.Equal(t, []string{"a", "b"}, payloads)

	d.full.Store(false)
	seq, err := q.Append([]byte("c"))
	require.NoError(t, err)
	assert.Equal(t, before.NextSeq, seq, "seqs stay contiguous: the lost reports never had one")
	recovered, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(3), recovered.Unqueued)
	assert.NoError(t, recovered.Failing)
	assert.True(t, recovered.FailingSince.IsZero())
	assert.Equal(t, queue.KindNoSpace, recovered.LastErrorKind, "the last error is history, kept")
	assert.Equal(t, failing.LastErrorAt.UnixNano(), recovered.LastErrorAt.UnixNano())

	require.NoError(t, q.Close())
	q = openQueue(t, path, opts)
	reopened, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(3), reopened.Unqueued, "stored with the record that followed")
	assert.Equal(t, queue.KindNoSpace, reopened.LastErrorKind)
	assert.Equal(t, failing.LastErrorAt.UnixNano(), reopened.LastErrorAt.UnixNano())
}

func TestKind(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want queue.ErrorKind
	}{
		{nil, ""},
		{fmt.Errorf("queue: append: %w", &os.PathError{Op: "write", Path: "q", Err: syscall.ENOSPC}), queue.KindNoSpace},
		// bbolt formats a failed file resize with %s: only the text is left.
		{errors.New("queue: append: file resize error: truncate q: no space left on device"), queue.KindNoSpace},
		{&os.PathError{Op: "write", Path: "q", Err: syscall.EDQUOT}, queue.KindQuota},
		{&os.PathError{Op: "open", Path: "q", Err: syscall.EROFS}, queue.KindReadOnly},
		{&os.PathError{Op: "fdatasync", Path: "q", Err: syscall.EIO}, queue.KindIO},
		{fmt.Errorf("%w: 9 bytes", queue.ErrTooLarge), queue.KindTooLarge},
		{errors.New("database not open"), queue.KindOther},
	} {
		assert.Equal(t, tc.want, queue.Kind(tc.err), "%v", tc.err)
	}
}
