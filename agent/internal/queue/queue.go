// Package queue is the agent's durable outbox. Every report is appended here
// before the agent tries to send it and removed only after the control plane
// acknowledged its sequence number, so a dead network, a dead control plane,
// a reboot or kill -9 loses nothing that Append returned for.
//
// The queue lives in one bbolt file. Records are keyed by their sequence
// number in big-endian form, which makes bbolt's key order the order in which
// reports were written. The counters that describe the queue (next sequence
// number, depth, bytes, dropped) live in the same file and change in the same
// transaction as the records, so a crash can never leave them disagreeing
// with the data. The queue is bounded; when a new report would exceed the
// bound, the oldest reports are dropped and counted, because fresh state is
// worth more to the control plane than stale state.
//
// A report that cannot be stored at all (a full disk, an I/O error) is
// counted too, as unqueued: the count is kept in memory while the file
// cannot be written and joins the stored counters with the next record that
// can be, and Stats says since when the queue has been failing.
package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Defaults for the zero values of Options.
const (
	DefaultMaxBytes    int64         = 64 << 20
	DefaultMaxCount    int           = 100_000
	DefaultOpenTimeout time.Duration = time.Second
)

// ErrLocked is returned by Open when another process (or another Queue in
// this process) holds the queue file. Only one writer may own a bbolt file;
// the usual cause is a second agent running against the same state directory.
var ErrLocked = errors.New("queue: the queue file is locked by another process (is another agent running?)")

// ErrTooLarge is returned by Append when a single payload is larger than
// Options.MaxBytes. Dropping older records could never make room for it, so
// it is refused instead of emptying the queue for nothing.
var ErrTooLarge = errors.New("queue: payload is larger than the queue's byte bound")

// Options bound the queue. The zero value of each field selects its default;
// negative values are refused by Open.
type Options struct {
	// MaxBytes bounds the sum of payload sizes, so a long outage cannot fill
	// the endpoint's disk. Default 64 MiB.
	MaxBytes int64
	// MaxCount bounds the number of records, so that many tiny reports cannot
	// grow the file's index without limit. Default 100_000.
	MaxCount int
	// OpenTimeout is how long Open waits for another process holding the file
	// lock before it gives up with ErrLocked, so a stuck second agent fails
	// loudly instead of hanging. Default 1s.
	OpenTimeout time.Duration
	// WriteFault, when set, is called in every Append's transaction just
	// before it commits; an error it returns fails that Append exactly as a
	// failed write of the file would (the transaction is rolled back). It
	// lets tests fill the disk without filling a disk; production leaves it
	// nil.
	WriteFault func() error
}

// Record is one queued report.
type Record struct {
	// Seq is the record's sequence number. It is never reused, so the control
	// plane can deduplicate by agent and sequence.
	Seq uint64
	// Payload is the opaque report, owned by the caller.
	Payload []byte
	// EnqueuedAt is when Append stored the record, so the sender can tell how
	// stale a report is.
	EnqueuedAt time.Time
}

// Stats describes the queue at one instant, for status output and metrics.
type Stats struct {
	// Depth is the number of records in the queue.
	Depth int
	// Bytes is the sum of the payload sizes in the queue.
	Bytes int64
	// Dropped counts records discarded by the bounds over the queue's whole
	// life; it survives restarts so a drop is never silently forgotten.
	Dropped uint64
	// Unqueued counts payloads Append could not store (a failed write, or a
	// payload over the byte bound) over the queue's whole life. Failures
	// are counted in memory while the file cannot be written and stored
	// with the next record that is, so only a restart while the disk is
	// still full forgets the failures since the last stored record.
	Unqueued uint64
	// LastErrorKind and LastErrorAt describe the most recent failed Append;
	// empty and zero when there never was one.
	LastErrorKind ErrorKind
	LastErrorAt   time.Time
	// Failing is the error of the last write when it failed, and
	// FailingSince when the current run of failed writes began; nil and
	// zero once a write succeeded again. A payload refused as too large
	// does not make the queue failing: the file is still writable.
	Failing      error
	FailingSince time.Time
	// NextSeq is the sequence number the next Append will assign.
	NextSeq uint64
	// OldestSeq is the sequence number of the oldest record, or 0 when the
	// queue is empty (sequence numbers start at 1).
	OldestSeq uint64
	// OldestAt is when the oldest record was enqueued, or the zero time when
	// the queue is empty.
	OldestAt time.Time
}

// Queue is a durable, bounded, ordered outbox. It is safe for concurrent use
// by several goroutines: bbolt serializes writers and lets readers run
// alongside them.
type Queue struct {
	db       *bolt.DB
	maxBytes uint64
	maxCount uint64
	fault    func() error

	// mu serializes Append with itself and with Stats, so that the failures
	// counted in memory and the stored counters are read and moved together.
	mu           sync.Mutex
	pending      uint64 // failed Appends not yet in the stored counters
	lastKind     ErrorKind
	lastAt       time.Time
	failing      error
	failingSince time.Time
}

// ErrorKind says why an Append failed, in words the control plane and its
// users share.
type ErrorKind string

// The kinds of failed Appends.
const (
	KindNoSpace  ErrorKind = "no_space"
	KindQuota    ErrorKind = "quota"
	KindReadOnly ErrorKind = "read_only"
	KindIO       ErrorKind = "io"
	KindTooLarge ErrorKind = "too_large"
	KindOther    ErrorKind = "other"
)

// Kind classifies an error of Append. It recognises the operating system's
// error even where bbolt reports it only as text (it formats some file
// errors with %s), so a full disk is no_space on every path.
func Kind(err error) ErrorKind {
	if err == nil {
		return ""
	}
	if errors.Is(err, ErrTooLarge) {
		return KindTooLarge
	}
	msg := err.Error()
	for _, e := range errnoKinds {
		if errors.Is(err, e.errno) || strings.Contains(msg, e.errno.Error()) {
			return e.kind
		}
	}
	return KindOther
}

var (
	recordsBucket = []byte("records")
	metaBucket    = []byte("meta")

	keyNextSeq = []byte("next_seq")
	keyDropped = []byte("dropped")
	keyBytes   = []byte("bytes")
	keyCount   = []byte("count")

	keyUnqueued    = []byte("unqueued")
	keyLastErrAt   = []byte("last_error_at")
	keyLastErrKind = []byte("last_error_kind")
)

// timeLen is the size of the EnqueuedAt prefix (unix nanoseconds) stored in
// front of each payload.
const timeLen = 8

// Open opens the queue file at path, creating it with mode 0600 because
// reports describe the endpoint and are nobody else's business. It checks the stored
// counters against the records and silently repairs them if they disagree.
// The directory holding path must already exist.
func Open(path string, opts Options) (*Queue, error) {
	if opts.MaxBytes < 0 || opts.MaxCount < 0 || opts.OpenTimeout < 0 {
		return nil, fmt.Errorf("queue: open %s: negative option (MaxBytes %d, MaxCount %d, OpenTimeout %s)",
			path, opts.MaxBytes, opts.MaxCount, opts.OpenTimeout)
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxCount == 0 {
		opts.MaxCount = DefaultMaxCount
	}
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = DefaultOpenTimeout
	}

	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)

	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.OpenTimeout,
		// Every commit is fsync'd: durability is the point of this package.
		NoSync: false,
		// The freelist is not written on commit (one page write less per
		// Append); bbolt rebuilds it by scanning the file on open, so this
		// costs open time, not safety. The map freelist keeps that cheap.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (waited %s)", ErrLocked, path, opts.OpenTimeout)
		}
		return nil, fmt.Errorf("queue: open %s: %w", path, err)
	}
	if created {
		// bbolt syncs the file but not the directory entry that names it; without
		// this a power loss right after the first Append could lose the file.
		if err := syncDir(filepath.Dir(path)); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("queue: open %s: sync directory: %w", path, err)
		}
	}

	q := &Queue{db: db, maxBytes: uint64(opts.MaxBytes), maxCount: uint64(opts.MaxCount), fault: opts.WriteFault}
	if err := db.Update(repair); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("queue: open %s: %w", path, err)
	}
	return q, nil
}

// repair creates the buckets and recomputes the counters from the records.
// Counters and records change in the same transaction, so they can only
// disagree if something other than this package wrote the file; then the
// records are the truth. Entries that this package could not have written
// are removed and counted as dropped rather than blocking the agent forever.
func repair(tx *bolt.Tx) error {
	recs, err := tx.CreateBucketIfNotExists(recordsBucket)
	if err != nil {
		return fmt.Errorf("create records bucket: %w", err)
	}
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return fmt.Errorf("create meta bucket: %w", err)
	}
	stored := readCounters(meta)

	var found counters
	var maxSeq uint64
	var badKeys, badBuckets [][]byte // expected empty; only foreign writes fill them
	c := recs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		switch {
		case v == nil:
			badBuckets = append(badBuckets, append([]byte(nil), k...))
		case len(k) != 8 || len(v) < timeLen:
			badKeys = append(badKeys, append([]byte(nil), k...))
		default:
			found.count++
			found.bytes += uint64(len(v) - timeLen)
			maxSeq = max(maxSeq, binary.BigEndian.Uint64(k))
		}
	}
	for _, k := range badKeys {
		if err := recs.Delete(k); err != nil {
			return fmt.Errorf("delete malformed record: %w", err)
		}
	}
	for _, k := range badBuckets {
		if err := recs.DeleteBucket(k); err != nil {
			return fmt.Errorf("delete malformed record: %w", err)
		}
	}

	found.dropped = stored.dropped + uint64(len(badKeys)+len(badBuckets))
	found.unqueued, found.errAt, found.errKind = stored.unqueued, stored.errAt, stored.errKind
	// Sequence numbers start at 1 (0 means "none" in Stats) and must stay
	// above every seq ever handed out; the stored counter also remembers seqs
	// that were acknowledged or dropped since.
	found.next = max(stored.next, maxSeq+1, 1)
	if found == stored {
		return nil
	}
	return found.write(meta)
}

// Append stores a copy of payload under the next sequence number and returns
// that number once the record is committed and fsync'd, so the caller may
// send it knowing a crash cannot lose it. If the record would push the queue
// past MaxBytes or MaxCount, the oldest records are dropped and counted in
// the same transaction. A payload larger than MaxBytes fails with ErrTooLarge.
// Every failed Append is counted in Stats.Unqueued; the first Append that
// succeeds after failures stores their count with its record.
func (q *Queue) Append(payload []byte) (uint64, error) {
	size := uint64(len(payload))
	if size > q.maxBytes {
		err := fmt.Errorf("%w: %d bytes, bound is %d", ErrTooLarge, size, q.maxBytes)
		q.mu.Lock()
		q.pending++
		q.lastKind, q.lastAt = KindTooLarge, time.Now()
		q.mu.Unlock()
		return 0, err
	}
	// The value is built outside the transaction to keep the writer lock
	// short; bbolt keeps a reference to it until commit, and owning it makes
	// the stored payload a copy.
	val := make([]byte, timeLen+len(payload))
	copy(val[timeLen:], payload)

	q.mu.Lock()
	defer q.mu.Unlock()
	var seq uint64
	err := q.db.Update(func(tx *bolt.Tx) error {
		recs, meta := tx.Bucket(recordsBucket), tx.Bucket(metaBucket)
		// Keys only ever grow and the oldest are deleted from the front, so
		// full pages waste less space than bbolt's even split.
		recs.FillPercent = 0.9
		c := readCounters(meta)

		cur := recs.Cursor()
		for c.count > 0 && (c.count+1 > q.maxCount || c.bytes+size > q.maxBytes) {
			_, v := cur.First()
			if v == nil {
				// Counters are repaired on Open and kept in step since, so this
				// is unreachable; stop rather than loop.
				c.count, c.bytes = 0, 0
				break
			}
			n := uint64(len(v) - timeLen)
			if err := cur.Delete(); err != nil {
				return fmt.Errorf("drop oldest: %w", err)
			}
			c.count--
			c.bytes -= min(n, c.bytes)
			c.dropped++
		}

		seq = c.next
		// Stamped under the writer lock so EnqueuedAt follows seq order
		// (barring wall-clock steps).
		binary.BigEndian.PutUint64(val, uint64(time.Now().UnixNano()))
		if err := recs.Put(seqKey(seq), val); err != nil {
			return err
		}
		c.next++
		c.count++
		c.bytes += size
		c.unqueued += q.pending
		if at := uint64(q.lastAt.UnixNano()); !q.lastAt.IsZero() && at > c.errAt {
			c.errAt, c.errKind = at, string(q.lastKind)
		}
		if err := c.write(meta); err != nil {
			return err
		}
		if q.fault != nil {
			return q.fault()
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("queue: append: %w", err)
		now := time.Now()
		q.pending++
		q.lastKind, q.lastAt = Kind(err), now
		if q.failing == nil {
			q.failingSince = now
		}
		q.failing = err
		return 0, err
	}
	q.pending = 0
	q.failing, q.failingSince = nil, time.Time{}
	return seq, nil
}

// Peek returns the oldest records in sequence order without removing them,
// at most maxCount of them and, after the first, no more than maxBytes of
// payload in total. The first record is always returned even when it alone
// exceeds maxBytes, so one large report can never wedge the sender. Payloads
// are copies and stay valid after later calls. An empty queue yields no
// records and no error.
func (q *Queue) Peek(maxCount int, maxBytes int64) ([]Record, error) {
	if maxCount < 1 {
		return nil, fmt.Errorf("queue: peek: maxCount must be at least 1, got %d", maxCount)
	}
	var out []Record
	err := q.db.View(func(tx *bolt.Tx) error {
		var total int64
		c := tx.Bucket(recordsBucket).Cursor()
		for k, v := c.First(); k != nil && len(out) < maxCount; k, v = c.Next() {
			n := int64(len(v) - timeLen)
			if len(out) > 0 && total+n > maxBytes {
				break
			}
			total += n
			out = append(out, decode(k, v))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queue: peek: %w", err)
	}
	return out, nil
}

// Ack deletes the records with the given sequence numbers, after the control
// plane acknowledged them, and returns how many it deleted. Unknown sequence
// numbers are ignored, because acknowledgements may repeat after a retry or
// arrive for records the bound already dropped. The deletion is fsync'd
// before Ack returns; when nothing matched, nothing is written.
func (q *Queue) Ack(seqs ...uint64) (int, error) {
	if len(seqs) == 0 {
		return 0, nil
	}
	tx, err := q.db.Begin(true)
	if err != nil {
		return 0, fmt.Errorf("queue: ack: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after a successful Commit

	recs, meta := tx.Bucket(recordsBucket), tx.Bucket(metaBucket)
	c := readCounters(meta)
	deleted := 0
	for _, seq := range seqs {
		k := seqKey(seq)
		v := recs.Get(k)
		if v == nil {
			continue
		}
		n := uint64(len(v) - timeLen)
		if err := recs.Delete(k); err != nil {
			return 0, fmt.Errorf("queue: ack %d: %w", seq, err)
		}
		c.count -= min(1, c.count)
		c.bytes -= min(n, c.bytes)
		deleted++
	}
	if deleted == 0 {
		// A pure duplicate ack costs no fsync.
		return 0, nil
	}
	if err := c.write(meta); err != nil {
		return 0, fmt.Errorf("queue: ack: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("queue: ack: %w", err)
	}
	return deleted, nil
}

// Stats reports the queue's depth, size, drop and failure counts and oldest
// record as one consistent snapshot.
func (q *Queue) Stats() (Stats, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var s Stats
	err := q.db.View(func(tx *bolt.Tx) error {
		c := readCounters(tx.Bucket(metaBucket))
		s = Stats{Depth: int(c.count), Bytes: int64(c.bytes), Dropped: c.dropped, NextSeq: c.next,
			Unqueued: c.unqueued + q.pending, Failing: q.failing, FailingSince: q.failingSince}
		if c.errAt != 0 {
			s.LastErrorKind, s.LastErrorAt = ErrorKind(c.errKind), time.Unix(0, int64(c.errAt))
		}
		if q.lastAt.After(s.LastErrorAt) {
			s.LastErrorKind, s.LastErrorAt = q.lastKind, q.lastAt
		}
		if k, v := tx.Bucket(recordsBucket).Cursor().First(); k != nil {
			s.OldestSeq = binary.BigEndian.Uint64(k)
			s.OldestAt = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("queue: stats: %w", err)
	}
	return s, nil
}

// Close releases the file and its lock. It waits for running transactions;
// calls made after Close fail.
func (q *Queue) Close() error {
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("queue: close: %w", err)
	}
	return nil
}

// counters is the meta bucket's content; every number is stored as an
// 8-byte big-endian integer under its own key, errKind as its text.
type counters struct {
	next, dropped, bytes, count uint64
	unqueued                    uint64
	errAt                       uint64 // unix nanoseconds of the last failed Append
	errKind                     string
}

func readCounters(meta *bolt.Bucket) counters {
	get := func(k []byte) uint64 {
		v := meta.Get(k)
		if len(v) != 8 {
			return 0
		}
		return binary.BigEndian.Uint64(v)
	}
	return counters{next: get(keyNextSeq), dropped: get(keyDropped), bytes: get(keyBytes), count: get(keyCount),
		unqueued: get(keyUnqueued), errAt: get(keyLastErrAt), errKind: string(meta.Get(keyLastErrKind))}
}

func (c counters) write(meta *bolt.Bucket) error {
	for _, kv := range []struct {
		k []byte
		v uint64
	}{{keyNextSeq, c.next}, {keyDropped, c.dropped}, {keyBytes, c.bytes}, {keyCount, c.count}} {
		if err := meta.Put(kv.k, binary.BigEndian.AppendUint64(nil, kv.v)); err != nil {
			return fmt.Errorf("write counter %s: %w", kv.k, err)
		}
	}
	if c.errAt == 0 {
		// Never failed: files written before failures were counted stay
		// byte for byte what they were.
		return nil
	}
	if err := meta.Put(keyUnqueued, binary.BigEndian.AppendUint64(nil, c.unqueued)); err != nil {
		return fmt.Errorf("write counter %s: %w", keyUnqueued, err)
	}
	if err := meta.Put(keyLastErrAt, binary.BigEndian.AppendUint64(nil, c.errAt)); err != nil {
		return fmt.Errorf("write counter %s: %w", keyLastErrAt, err)
	}
	if err := meta.Put(keyLastErrKind, []byte(c.errKind)); err != nil {
		return fmt.Errorf("write counter %s: %w", keyLastErrKind, err)
	}
	return nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// decode copies a record out of bbolt's memory map, which is only valid
// until the transaction ends.
func decode(k, v []byte) Record {
	return Record{
		Seq:        binary.BigEndian.Uint64(k),
		Payload:    append([]byte{}, v[timeLen:]...),
		EnqueuedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
	}
}

// syncDir makes a newly created file's directory entry durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		// Windows cannot open a directory for syncing; NTFS journals the entry.
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}
