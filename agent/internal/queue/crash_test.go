package queue_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/agent/internal/queue"
)

// The crash test re-executes this test binary as a child that owns the queue.
// These variables tell the child where the queue is and which round it is in.
const (
	crashPathEnv  = "EDGEWARD_QUEUE_CRASH_PATH"
	crashRoundEnv = "EDGEWARD_QUEUE_CRASH_ROUND"
)

// crashPayload is the payload of the child's i-th Append in a round. Both
// sides compute it, so the child only has to print (seq, i). Sizes vary, and
// every 50th record spans several pages, so the kill can land in the middle
// of page splits and overflow pages.
func crashPayload(round, i int) []byte {
	size := (i * 37) % 1000
	if i%50 == 0 {
		size = 10_000
	}
	p := fmt.Appendf(nil, "round %d record %d ", round, i)
	return append(p, bytes.Repeat([]byte{byte('a' + i%26)}, size)...)
}

// TestCrashChild is the child side of TestCrash. It appends forever and
// prints "seq S I" only after Append returned, so every printed line is a
// promise the queue must keep. Every few appends it acknowledges the three
// oldest records, printing "acking ..." before and "acked ..." after.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashPathEnv)
	if path == "" {
		t.Skip("runs only as the child process of TestCrash")
	}
	round, err := strconv.Atoi(os.Getenv(crashRoundEnv))
	if err != nil {
		fail("bad round: %v", err)
	}
	q, err := queue.Open(path, queue.Options{})
	if err != nil {
		fail("open: %v", err)
	}
	// The parent kills us long before this; the limit only keeps an orphan
	// from running forever if the parent itself dies.
	stop := time.Now().Add(2 * time.Minute)
	for i := 0; time.Now().Before(stop); i++ {
		seq, err := q.Append(crashPayload(round, i))
		if err != nil {
			fail("append: %v", err)
		}
		fmt.Printf("seq %d %d\n", seq, i) // one write(2), so lines never interleave or tear

		if i%7 == 6 {
			recs, err := q.Peek(3, 1<<30)
			if err != nil {
				fail("peek: %v", err)
			}
			seqs := make([]uint64, len(recs))
			for j, r := range recs {
				seqs[j] = r.Seq
			}
			list := strings.Trim(fmt.Sprint(seqs), "[]")
			fmt.Printf("acking %s\n", list)
			if _, err := q.Ack(seqs...); err != nil {
				fail("ack: %v", err)
			}
			fmt.Printf("acked %s\n", list)
		}
	}
	_ = q.Close()
	fail("was not killed in time")
}

// fail ends the child with a message the parent shows when the round fails.
func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "crash child: "+format+"\n", args...)
	os.Exit(3)
}

// crashLedger is the parent's knowledge of what the queue must contain,
// carried across rounds.
type crashLedger struct {
	present map[uint64][]byte // must be in the queue with this payload
	acking  map[uint64][]byte // Ack was called but had not returned: either way is fine
	acked   map[uint64]bool   // Ack returned: must be gone for good
	maxSeq  uint64            // highest seq ever handed out
}

func TestCrash(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("SIGKILL and flock semantics are POSIX; Windows has no kill -9")
	}
	path := filepath.Join(t.TempDir(), "queue.db")
	ledger := &crashLedger{
		present: map[uint64][]byte{},
		acking:  map[uint64][]byte{},
		acked:   map[uint64]bool{},
	}
	// How many appends each child gets to report before it is killed.
	for round, kills := range []int{1, 40, 150, 7, 300, 60} {
		t.Run(fmt.Sprintf("round %d after %d appends", round, kills), func(t *testing.T) {
			runCrashChild(t, path, round, kills, ledger)
			verifyAfterCrash(t, path, round, ledger)
		})
		if t.Failed() {
			return
		}
	}
}

// runCrashChild starts a child, lets it report `kills` appends, kills it with
// SIGKILL and folds everything it printed into the ledger.
func runCrashChild(t *testing.T, path string, round, kills int, ledger *crashLedger) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashPathEnv+"="+path, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string)
	go func() { // ends at EOF, which the child's death guarantees
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// stop kills the child (a no-op if it is dead), reads its output to EOF
	// and reaps it. Only after that is stderr safe to read. It is idempotent
	// so the cleanup can finish the job when a failing check interrupted it.
	var waitErr error
	waited := false
	stop := func(handle func(string)) {
		_ = cmd.Process.Kill() // SIGKILL: no deferred code, no Close
		for line := range lines {
			handle(line)
		}
		if !waited {
			waited = true
			waitErr = cmd.Wait()
		}
	}
	t.Cleanup(func() { stop(func(string) {}) })
	childStderr := func() string {
		stop(func(string) {})
		return stderr.String()
	}

	firstSeq := ledger.maxSeq + 1
	var lastSeq uint64
	seen := 0
	handle := func(line string) {
		verb, rest, _ := strings.Cut(line, " ")
		switch verb {
		case "seq":
			var seq uint64
			var i int
			_, err := fmt.Sscanf(rest, "%d %d", &seq, &i)
			require.NoError(t, err, "line %q", line)
			if lastSeq == 0 {
				require.GreaterOrEqual(t, seq, firstSeq, "a seq from before the crash was reused")
			} else {
				require.Equal(t, lastSeq+1, seq, "seqs within a run are contiguous")
			}
			lastSeq = seq
			ledger.present[seq] = crashPayload(round, i)
			ledger.maxSeq = max(ledger.maxSeq, seq)
			seen++
		case "acking":
			for _, s := range parseSeqs(t, rest) {
				require.Contains(t, ledger.present, s, "child acks a record the parent does not know")
				ledger.acking[s] = ledger.present[s]
				delete(ledger.present, s)
			}
		case "acked":
			for _, s := range parseSeqs(t, rest) {
				require.Contains(t, ledger.acking, s)
				delete(ledger.acking, s)
				ledger.acked[s] = true
			}
		}
		// Anything else is the test framework talking; ignore it.
	}

	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	for seen < kills {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("child exited after %d appends; stderr:\n%s", seen, childStderr())
			}
			handle(line)
		case <-timeout.C:
			t.Fatalf("child reported only %d of %d appends within a minute; stderr:\n%s", seen, kills, childStderr())
		}
	}

	// Lines still in the pipe were printed before the kill: they are
	// promises too, so stop hands them to handle.
	stop(handle)
	require.Error(t, waitErr, "child must die by the signal")
	require.Contains(t, waitErr.Error(), "killed", "child died some other way; stderr:\n%s", stderr.String())
}

// verifyAfterCrash reopens the queue the child was killed with and checks
// that it kept every promise, then appends once to check the counter.
func verifyAfterCrash(t *testing.T, path string, round int, ledger *crashLedger) {
	q, err := queue.Open(path, queue.Options{})
	require.NoError(t, err, "the kill must release the file lock and leave a valid file")
	defer func() { require.NoError(t, q.Close()) }()

	recs, err := q.Peek(1<<30, 1<<62) // the test queue is small
	require.NoError(t, err)
	found := map[uint64]bool{}
	var bytesTotal int64
	var prev uint64
	for _, r := range recs {
		require.Greater(t, r.Seq, prev, "Peek is in seq order")
		prev = r.Seq
		found[r.Seq] = true
		bytesTotal += int64(len(r.Payload))

		switch {
		case ledger.present[r.Seq] != nil:
			require.Equal(t, ledger.present[r.Seq], r.Payload, "seq %d payload", r.Seq)
		case ledger.acking[r.Seq] != nil:
			// The Ack did not commit before the kill; the record stays.
			require.Equal(t, ledger.acking[r.Seq], r.Payload, "seq %d payload", r.Seq)
			ledger.present[r.Seq] = ledger.acking[r.Seq]
			delete(ledger.acking, r.Seq)
		case ledger.acked[r.Seq]:
			t.Fatalf("seq %d came back after its Ack returned", r.Seq)
		default:
			// Only the Append that committed after the last printed line, if any.
			require.Equal(t, ledger.maxSeq+1, r.Seq, "unexpected record")
			require.True(t, bytes.HasPrefix(r.Payload, fmt.Appendf(nil, "round %d record ", round)))
			ledger.present[r.Seq] = bytes.Clone(r.Payload)
			ledger.maxSeq = r.Seq
		}
	}
	for seq := range ledger.present {
		require.True(t, found[seq], "seq %d was printed after Append returned but is missing", seq)
	}
	for seq := range ledger.acking {
		// The Ack committed before the kill.
		delete(ledger.acking, seq)
		ledger.acked[seq] = true
	}

	st, err := q.Stats()
	require.NoError(t, err)
	require.Equal(t, len(recs), st.Depth, "counters agree with the data")
	require.Equal(t, bytesTotal, st.Bytes)
	require.Zero(t, st.Dropped)
	require.Greater(t, st.NextSeq, ledger.maxSeq)

	payload := fmt.Appendf(nil, "parent after round %d", round)
	seq, err := q.Append(payload)
	require.NoError(t, err)
	require.Greater(t, seq, ledger.maxSeq, "the next Append gets a seq above every seq handed out")
	ledger.present[seq] = payload
	ledger.maxSeq = seq
}

func parseSeqs(t *testing.T, s string) []uint64 {
	var out []uint64
	for f := range strings.FieldsSeq(s) {
		n, err := strconv.ParseUint(f, 10, 64)
		require.NoError(t, err, "seq list %q", s)
		out = append(out, n)
	}
	return out
}
