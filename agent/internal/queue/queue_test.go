package queue_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/agent/internal/queue"
)

// openQueue opens a queue at path and closes it when the test ends.
func openQueue(t testing.TB, path string, opts queue.Options) *queue.Queue {
	t.Helper()
	q, err := queue.Open(path, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func newQueue(t testing.TB, opts queue.Options) (*queue.Queue, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "queue.db")
	return openQueue(t, path, opts), path
}

func appendAll(t testing.TB, q *queue.Queue, payloads ...string) []uint64 {
	t.Helper()
	seqs := make([]uint64, 0, len(payloads))
	for _, p := range payloads {
		seq, err := q.Append([]byte(p))
		require.NoError(t, err)
		seqs = append(seqs, seq)
	}
	return seqs
}

// contents peeks the whole (small) queue and returns seqs and payloads.
func contents(t testing.TB, q *queue.Queue) ([]uint64, []string) {
	t.Helper()
	recs, err := q.Peek(1<<30, 1<<62)
	require.NoError(t, err)
	var seqs []uint64
	var payloads []string
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
		payloads = append(payloads, string(r.Payload))
	}
	return seqs, payloads
}

func TestAppendPeekAckOrder(t *testing.T) {
	q, _ := newQueue(t, queue.Options{})
	before := time.Now()

	seqs := appendAll(t, q, "a", "b", "c", "d")
	assert.Equal(t, []uint64{1, 2, 3, 4}, seqs, "seqs start at 1 and grow by one")

	recs, err := q.Peek(10, 1<<20)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	for i, r := range recs {
		assert.Equal(t, seqs[i], r.Seq)
		assert.Equal(t, string(rune('a'+i)), string(r.Payload))
		assert.False(t, r.EnqueuedAt.Before(before), "EnqueuedAt is when Append ran")
		assert.False(t, r.EnqueuedAt.After(time.Now()))
	}

	// Acking out of order removes exactly those records; order is kept.
	n, err := q.Ack(3, 1)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	gotSeqs, gotPayloads := contents(t, q)
	assert.Equal(t, []uint64{2, 4}, gotSeqs)
	assert.Equal(t, []string{"b", "d"}, gotPayloads)

	st, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, 2, st.Depth)
	assert.Equal(t, int64(2), st.Bytes)
	assert.Equal(t, uint64(2), st.OldestSeq)
	assert.Equal(t, recs[1].EnqueuedAt, st.OldestAt)
	assert.Equal(t, uint64(5), st.NextSeq)
}

func TestAckUnknownAndDuplicate(t *testing.T) {
	q, _ := newQueue(t, queue.Options{})
	appendAll(t, q, "a", "b", "c")

	tests := []struct {
		name    string
		seqs    []uint64
		deleted int
		left    []uint64
	}{
		{"nothing", nil, 0, []uint64{1, 2, 3}},
		{"unknown only", []uint64{0, 99, 1 << 63}, 0, []uint64{1, 2, 3}},
		{"duplicates in one call", []uint64{2, 2, 2}, 1, []uint64{1, 3}},
		{"already acked", []uint64{2}, 0, []uint64{1, 3}},
		{"mix of known and unknown", []uint64{7, 3, 2, 1}, 2, nil},
		{"empty queue", []uint64{1, 2, 3}, 0, nil},
	}
	for _, tt := range tests {
		n, err := q.Ack(tt.seqs...)
		require.NoError(t, err, tt.name)
		assert.Equal(t, tt.deleted, n, tt.name)
		left, _ := contents(t, q)
		assert.Equal(t, tt.left, left, tt.name)
		st, err := q.Stats()
		require.NoError(t, err)
		assert.Equal(t, len(tt.left), st.Depth, tt.name)
	}
}

func TestPayloadsAreCopies(t *testing.T) {
	q, _ := newQueue(t, queue.Options{})

	// A filler larger than a quarter page keeps bbolt from storing the
	// records inline (and copying them itself), so Peek really reads from
	// the memory map here.
	filler := bytes.Repeat([]byte{'f'}, 2048)
	in := []byte("original")
	for _, p := range [][]byte{filler, in, {}} {
		_, err := q.Append(p)
		require.NoError(t, err)
	}
	copy(in, "XXXXXXXX") // the caller reuses its buffer

	first, err := q.Peek(10, 1<<20)
	require.NoError(t, err)
	require.Len(t, first, 3)
	assert.Equal(t, filler, first[0].Payload)
	assert.Equal(t, "original", string(first[1].Payload), "Append copies its input")
	assert.Empty(t, first[2].Payload, "an empty payload is a valid report")

	// Writing into a payload that aliased the read-only map would crash.
	copy(first[1].Payload, "mutated!")
	// Churn the file so any page the first Peek saw is rewritten or remapped.
	for i := range 200 {
		_, err := q.Append(bytes.Repeat([]byte{byte(i)}, 4096))
		require.NoError(t, err)
	}
	_, err = q.Ack(1, 3)
	require.NoError(t, err)

	second, err := q.Peek(1, 1<<20)
	require.NoError(t, err)
	require.Len(t, second, 1)
	assert.Equal(t, "original", string(second[0].Payload), "Peek hands out copies")
	assert.Equal(t, "mutated!", string(first[1].Payload), "earlier results stay valid after the transaction")
	assert.Equal(t, filler, first[0].Payload)
}

func TestPeekBounds(t *testing.T) {
	q, _ := newQueue(t, queue.Options{})
	// Payload sizes 10, 20, 30, 40, 50 with seqs 1..5.
	for i := 1; i <= 5; i++ {
		_, err := q.Append(bytes.Repeat([]byte{'x'}, 10*i))
		require.NoError(t, err)
	}

	tests := []struct {
		name     string
		maxCount int
		maxBytes int64
		want     []uint64
	}{
		{"count bound", 2, 1 << 20, []uint64{1, 2}},
		{"everything", 100, 1 << 20, []uint64{1, 2, 3, 4, 5}},
		{"bytes bound exact", 100, 60, []uint64{1, 2, 3}},
		{"bytes bound just under", 100, 59, []uint64{1, 2}},
		{"first record alone exceeds bytes", 100, 5, []uint64{1}},
		{"zero bytes still yields one", 100, 0, []uint64{1}},
		{"both bounds, count tighter", 1, 1 << 20, []uint64{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := q.Peek(tt.maxCount, tt.maxBytes)
			require.NoError(t, err)
			var got []uint64
			for _, r := range recs {
				got = append(got, r.Seq)
			}
			assert.Equal(t, tt.want, got)
		})
	}

	t.Run("bad count", func(t *testing.T) {
		_, err := q.Peek(0, 1<<20)
		assert.ErrorContains(t, err, "maxCount")
	})
	t.Run("empty queue", func(t *testing.T) {
		empty, _ := newQueue(t, queue.Options{})
		recs, err := empty.Peek(10, 1<<20)
		require.NoError(t, err)
		assert.Empty(t, recs)
	})
}

func TestSeqNeverReused(t *testing.T) {
	q, path := newQueue(t, queue.Options{MaxCount: 3})

	assert.Equal(t, []uint64{1, 2, 3}, appendAll(t, q, "a", "b", "c"))
	n, err := q.Ack(1, 2, 3)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	assert.Equal(t, []uint64{4}, appendAll(t, q, "d"), "after acking everything")
	_, err = q.Ack(4)
	require.NoError(t, err)
	require.NoError(t, q.Close())

	// Reopen an empty queue: the counter is persisted, not derived from data.
	q = openQueue(t, path, queue.Options{MaxCount: 3})
	st, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, 0, st.Depth)
	assert.Equal(t, uint64(5), st.NextSeq)
	assert.Equal(t, uint64(0), st.OldestSeq)
	assert.True(t, st.OldestAt.IsZero())
	assert.Equal(t, []uint64{5, 6, 7, 8, 9}, appendAll(t, q, "e", "f", "g", "h", "i"), "after reopen, through drops")

	// Drops at the bound do not rewind the counter either.
	seqs, _ := contents(t, q)
	assert.Equal(t, []uint64{7, 8, 9}, seqs)
	_, err = q.Ack(7, 8, 9)
	require.NoError(t, err)
	require.NoError(t, q.Close())
	q = openQueue(t, path, queue.Options{MaxCount: 3})
	assert.Equal(t, []uint64{10}, appendAll(t, q, "j"))
}

func TestBoundsDropOldest(t *testing.T) {
	tests := []struct {
		name     string
		opts     queue.Options
		payloads []string
		wantSeqs []uint64
		wantDrop uint64
	}{
		{
			name:     "count bound",
			opts:     queue.Options{MaxCount: 3},
			payloads: []string{"a", "b", "c", "d", "e"},
			wantSeqs: []uint64{3, 4, 5},
			wantDrop: 2,
		},
		{
			name:     "bytes bound",
			opts:     queue.Options{MaxBytes: 10},
			payloads: []string{"aaaa", "bbbb", "cccc", "dd"},
			wantSeqs: []uint64{2, 3, 4}, // 4+4+4 > 10 drops one; 4+4+2 fits
			wantDrop: 1,
		},
		{
			name:     "one large record drops several small ones",
			opts:     queue.Options{MaxBytes: 10},
			payloads: []string{"a", "b", "c", "d", "e", "123456789"},
			wantSeqs: []uint64{5, 6},
			wantDrop: 4,
		},
		{
			name:     "payload of exactly MaxBytes empties the queue",
			opts:     queue.Options{MaxBytes: 4},
			payloads: []string{"ab", "cd", "wxyz"},
			wantSeqs: []uint64{3},
			wantDrop: 2,
		},
		{
			name:     "both bounds, count binds first",
			opts:     queue.Options{MaxBytes: 100, MaxCount: 2},
			payloads: []string{"a", "b", "c"},
			wantSeqs: []uint64{2, 3},
			wantDrop: 1,
		},
		{
			name:     "within bounds nothing drops",
			opts:     queue.Options{MaxBytes: 3, MaxCount: 3},
			payloads: []string{"a", "b", "c"},
			wantSeqs: []uint64{1, 2, 3},
			wantDrop: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, path := newQueue(t, tt.opts)
			appendAll(t, q, tt.payloads...)

			check := func(q *queue.Queue) {
				t.Helper()
				seqs, payloads := contents(t, q)
				assert.Equal(t, tt.wantSeqs, seqs)
				var size int64
				for i, p := range payloads {
					assert.Equal(t, tt.payloads[seqs[i]-1], p)
					size += int64(len(p))
				}
				st, err := q.Stats()
				require.NoError(t, err)
				assert.Equal(t, tt.wantDrop, st.Dropped)
				assert.Equal(t, len(tt.wantSeqs), st.Depth)
				assert.Equal(t, size, st.Bytes)
				assert.Equal(t, tt.wantSeqs[0], st.OldestSeq)
				assert.Equal(t, uint64(len(tt.payloads)+1), st.NextSeq)
			}
			check(q)

			require.NoError(t, q.Close())
			check(openQueue(t, path, tt.opts)) // the dropped counter persists
		})
	}
}

func TestDroppedCounterAccumulatesAcrossReopen(t *testing.T) {
	opts := queue.Options{MaxCount: 2}
	q, path := newQueue(t, opts)
	appendAll(t, q, "a", "b", "c") // drops 1
	require.NoError(t, q.Close())

	q = openQueue(t, path, opts)
	appendAll(t, q, "d", "e") // drops 2 more
	st, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(3), st.Dropped)
	assert.Equal(t, uint64(4), st.OldestSeq)
}

func TestErrTooLarge(t *testing.T) {
	q, _ := newQueue(t, queue.Options{MaxBytes: 8})
	appendAll(t, q, "keep")
	before, err := q.Stats()
	require.NoError(t, err)

	_, err = q.Append(make([]byte, 9))
	require.ErrorIs(t, err, queue.ErrTooLarge)
	assert.ErrorContains(t, err, "9 bytes")

	after, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, before.NextSeq, after.NextSeq, "a refused payload does not take a seq")
	assert.Equal(t, before.Depth, after.Depth)
	assert.Equal(t, uint64(1), after.Unqueued, "but it is counted: the report never reaches the control plane")
	assert.Equal(t, queue.KindTooLarge, after.LastErrorKind)
	assert.NoError(t, after.Failing, "the file is still writable")
	seqs, _ := contents(t, q)
	assert.Equal(t, []uint64{1}, seqs)
}

func TestOpenLocked(t *testing.T) {
	q, path := newQueue(t, queue.Options{})
	appendAll(t, q, "a")

	second, err := queue.Open(path, queue.Options{OpenTimeout: 100 * time.Millisecond})
	if second != nil {
		_ = second.Close()
	}
	require.ErrorIs(t, err, queue.ErrLocked)
	assert.Contains(t, err.Error(), "locked by another process")
	assert.Contains(t, err.Error(), path)

	// The lock goes with the owner: once it closes, the file opens again.
	require.NoError(t, q.Close())
	q = openQueue(t, path, queue.Options{OpenTimeout: 100 * time.Millisecond})
	seqs, _ := contents(t, q)
	assert.Equal(t, []uint64{1}, seqs)
}

func TestOpenRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		opts queue.Options
	}{
		{"negative MaxBytes", queue.Options{MaxBytes: -1}},
		{"negative MaxCount", queue.Options{MaxCount: -1}},
		{"negative OpenTimeout", queue.Options{OpenTimeout: -time.Second}},
	}
	for _, tt := range tests {
		path := filepath.Join(dir, "q.db")
		q, err := queue.Open(path, tt.opts)
		assert.Nil(t, q, tt.name)
		assert.ErrorContains(t, err, "negative", tt.name)
		_, statErr := os.Stat(path)
		assert.True(t, errors.Is(statErr, os.ErrNotExist), "%s: bad options create no file", tt.name)
	}

	_, err := queue.Open(filepath.Join(dir, "missing-dir", "q.db"), queue.Options{})
	assert.ErrorContains(t, err, "missing-dir")
}

func TestFileMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix permissions")
	}
	_, path := newQueue(t, queue.Options{})
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

// TestConcurrentAppendAndAck runs several appenders against one acker, the
// agent's real shape (collectors append, the sender acks), and checks that
// every record is delivered exactly once and in each appender's order.
func TestConcurrentAppendAndAck(t *testing.T) {
	const writers, perWriter = 4, 50
	const total = writers * perWriter
	q, _ := newQueue(t, queue.Options{})

	var wg sync.WaitGroup
	// Deferred so a failing require below still stops every goroutine
	// before the queue is closed.
	defer wg.Wait()
	seqsByWriter := make([][]uint64, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				seq, err := q.Append(fmt.Appendf(nil, "%d/%d", w, i))
				if !assert.NoError(t, err) {
					return
				}
				seqsByWriter[w] = append(seqsByWriter[w], seq)
			}
		})
	}

	// Stats may be read at any time by status reporting.
	statsDone := make(chan struct{})
	stopStats := make(chan struct{})
	defer func() {
		close(stopStats)
		<-statsDone
	}()
	go func() {
		defer close(statsDone)
		for {
			select {
			case <-stopStats:
				return
			default:
			}
			st, err := q.Stats()
			if !assert.NoError(t, err) {
				return
			}
			assert.LessOrEqual(t, st.Depth, total)
		}
	}()

	nextIndex := make([]int, writers) // next i expected from each writer
	var lastAcked uint64
	acked := 0
	deadline := time.Now().Add(time.Minute)
	for acked < total {
		require.True(t, time.Now().Before(deadline), "acker made no progress: %d of %d acked", acked, total)
		recs, err := q.Peek(16, 1<<20)
		require.NoError(t, err)
		if len(recs) == 0 {
			runtime.Gosched()
			continue
		}
		seqs := make([]uint64, 0, len(recs))
		for _, r := range recs {
			require.Greater(t, r.Seq, lastAcked, "records come out in seq order")
			lastAcked = r.Seq
			var w, i int
			_, err := fmt.Sscanf(string(r.Payload), "%d/%d", &w, &i)
			require.NoError(t, err)
			require.Equal(t, nextIndex[w], i, "writer %d's records arrive once and in its order", w)
			nextIndex[w]++
			seqs = append(seqs, r.Seq)
		}
		n, err := q.Ack(seqs...)
		require.NoError(t, err)
		require.Equal(t, len(seqs), n)
		acked += n
	}
	wg.Wait()

	seen := make(map[uint64]bool, total)
	for _, seqs := range seqsByWriter {
		for _, s := range seqs {
			assert.False(t, seen[s], "seq %d handed out twice", s)
			seen[s] = true
		}
	}
	assert.Len(t, seen, total)
	st, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, queue.Stats{NextSeq: total + 1}, st)
}
