package queue

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// TestOpenRepairsCounters damages the file the way only a foreign writer or
// an older build could, and checks that Open recomputes the counters from the
// records so Stats and the next sequence number are right again.
func TestOpenRepairsCounters(t *testing.T) {
	putMeta := func(k []byte, v uint64) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			return tx.Bucket(metaBucket).Put(k, binary.BigEndian.AppendUint64(nil, v))
		}
	}
	tests := []struct {
		name        string
		tamper      func(*bolt.Tx) error
		wantDepth   int
		wantBytes   int64
		wantDropped uint64
		wantNext    uint64
	}{
		{
			name:      "count too high",
			tamper:    putMeta(keyCount, 999),
			wantDepth: 2, wantBytes: 8, wantDropped: 1, wantNext: 5,
		},
		{
			name:      "bytes too low",
			tamper:    putMeta(keyBytes, 1),
			wantDepth: 2, wantBytes: 8, wantDropped: 1, wantNext: 5,
		},
		{
			// Only the live records are evidence; the acked seq 4 left none.
			name:      "next seq behind the data",
			tamper:    putMeta(keyNextSeq, 2),
			wantDepth: 2, wantBytes: 8, wantDropped: 1, wantNext: 4,
		},
		{
			name:      "garbled counter value",
			tamper:    func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(keyCount, []byte("x")) },
			wantDepth: 2, wantBytes: 8, wantDropped: 1, wantNext: 5,
		},
		{
			// Without the meta bucket the acked seq 4 is forgotten; the data
			// still guarantees no live seq is reused.
			name:      "meta bucket lost",
			tamper:    func(tx *bolt.Tx) error { return tx.DeleteBucket(metaBucket) },
			wantDepth: 2, wantBytes: 8, wantDropped: 0, wantNext: 4,
		},
		{
			name: "malformed records are removed and counted as dropped",
			tamper: func(tx *bolt.Tx) error {
				recs := tx.Bucket(recordsBucket)
				if err := recs.Put([]byte("short"), make([]byte, 16)); err != nil {
					return err
				}
				if err := recs.Put(seqKey(100), []byte{1, 2}); err != nil {
					return err
				}
				_, err := recs.CreateBucket(seqKey(101))
				return err
			},
			wantDepth: 2, wantBytes: 8, wantDropped: 4, wantNext: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "queue.db")
			// Seqs 1..4; the bound drops 1, seq 4 is acked: 2 and 3 remain.
			q, err := Open(path, Options{MaxCount: 3})
			require.NoError(t, err)
			for _, p := range []string{"aaaa", "bbbb", "cccc", "dddd"} {
				_, err := q.Append([]byte(p))
				require.NoError(t, err)
			}
			_, err = q.Ack(4)
			require.NoError(t, err)
			require.NoError(t, q.Close())

			db, err := bolt.Open(path, 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Update(tt.tamper))
			require.NoError(t, db.Close())

			q, err = Open(path, Options{})
			require.NoError(t, err)
			defer func() { require.NoError(t, q.Close()) }()
			st, err := q.Stats()
			require.NoError(t, err)
			assert.Equal(t, tt.wantDepth, st.Depth)
			assert.Equal(t, tt.wantBytes, st.Bytes)
			assert.Equal(t, tt.wantDropped, st.Dropped)
			assert.Equal(t, tt.wantNext, st.NextSeq)
			assert.Equal(t, uint64(2), st.OldestSeq)

			seq, err := q.Append([]byte("eeee"))
			require.NoError(t, err)
			assert.Equal(t, tt.wantNext, seq)
			recs, err := q.Peek(10, 1<<20)
			require.NoError(t, err)
			require.Len(t, recs, 3)
			assert.Equal(t, "bbbb", string(recs[0].Payload))
		})
	}
}
