package queue_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/agent/internal/queue"
)

// benchPayload is the size of a typical serialized heartbeat or observation
// batch.
const benchPayload = 512

// BenchmarkAppend measures durable appends: each one is a committed,
// fsync'd bbolt transaction.
func BenchmarkAppend(b *testing.B) {
	q, _ := newQueue(b, queue.Options{})
	payload := make([]byte, benchPayload)
	b.SetBytes(benchPayload)
	for b.Loop() {
		if _, err := q.Append(payload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

// BenchmarkAppendAck measures the outbox's steady state: a report goes in,
// is read back and is deleted once acknowledged, so the queue stays short.
// Each op is two fsync'd transactions and one read transaction.
func BenchmarkAppendAck(b *testing.B) {
	q, _ := newQueue(b, queue.Options{})
	payload := make([]byte, benchPayload)
	b.SetBytes(benchPayload)
	for b.Loop() {
		if _, err := q.Append(payload); err != nil {
			b.Fatal(err)
		}
		recs, err := q.Peek(1, 1<<20)
		if err != nil || len(recs) != 1 {
			b.Fatal(err, len(recs))
		}
		if _, err := q.Ack(recs[0].Seq); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
}

// BenchmarkFsyncCeiling is the comparison for the two benchmarks above: a
// plain file write plus one fsync on the same file system, which no durable
// append can beat. A bbolt commit syncs twice (data pages, then the meta
// page), so Append lands below this figure.
func BenchmarkFsyncCeiling(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "ceiling"))
	require.NoError(b, err)
	defer func() { _ = f.Close() }()
	payload := make([]byte, benchPayload)
	b.SetBytes(benchPayload)
	for b.Loop() {
		if _, err := f.Write(payload); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
}
