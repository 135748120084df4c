package reporter_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/edgeward/edgeward/agent/internal/identity"
	"github.com/edgeward/edgeward/agent/internal/queue"
	"github.com/edgeward/edgeward/agent/internal/reporter"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
	"github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1/agentv1connect"
)

// controlPlane is a fake AgentService over real TLS: it acknowledges every
// report, keeps every request, and hands out the commands it is given.
type controlPlane struct {
	agentv1connect.UnimplementedAgentServiceHandler

	mu       sync.Mutex
	requests []*agentv1.HeartbeatRequest
	commands []*agentv1.Command
}

func (cp *controlPlane) Heartbeat(_ context.Context, req *connect.Request[agentv1.HeartbeatRequest]) (*connect.Response[agentv1.HeartbeatResponse], error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.requests = append(cp.requests, proto.Clone(req.Msg).(*agentv1.HeartbeatRequest))
	resp := &agentv1.HeartbeatResponse{NextInterval: durationpb.New(50 * time.Millisecond), Commands: cp.commands}
	cp.commands = nil
	for _, r := range req.Msg.GetReports() {
		resp.AckedSeqs = append(resp.AckedSeqs, r.GetSeq())
	}
	return connect.NewResponse(resp), nil
}

// seen returns the first request that matches, if any.
func (cp *controlPlane) seen(match func(*agentv1.HeartbeatRequest) bool) *agentv1.HeartbeatRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for _, r := range cp.requests {
		if match(r) {
			return r
		}
	}
	return nil
}

func (cp *controlPlane) send(c *agentv1.Command) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.commands = append(cp.commands, c)
}

// syncBuffer is a log destination the test reads while the agent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func certificate(t *testing.T, tmpl *x509.Certificate, pub *ecdsa.PublicKey, parent *x509.Certificate, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert
}

// enrolledAgainst starts cp on a TLS server and writes an agent identity
// for it into a fresh state directory.
func enrolledAgainst(t *testing.T, cp *controlPlane) string {
	t.Helper()
	caKey, err := identity.NewKey()
	require.NoError(t, err)
	now := time.Now()
	ca := certificate(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, &caKey.PublicKey, nil, caKey)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	srvCert := certificate(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cp"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		&srvKey.PublicKey, ca, caKey)

	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(cp))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw, ca.Raw}, PrivateKey: srvKey}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	enr, err := identity.BeginEnrollment(dir)
	require.NoError(t, err)
	agentCert := certificate(t, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "agent"}, NotBefore: now.Add(-time.Minute),
		NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &enr.Key.PublicKey, ca, caKey)
	_, err = enr.Enrolled(identity.Config{Server: srv.URL, AgentID: "agent-1", TenantID: "tenant-1", HeartbeatIntervalSeconds: 1, EnrolledAt: now},
		agentCert.Raw, ca.Raw)
	require.NoError(t, err)
	return dir
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func status(t *testing.T, dir string) reporter.Status {
	st, err := reporter.ReadStatus(dir)
	if err != nil && !os.IsNotExist(err) {
		require.NoError(t, err)
	}
	return st
}

// TestFullDiskIsSeenAndCounted runs the agent's loop against a fake
// control plane while the queue cannot be written. The agent says so in its
// status (with the error and since when), keeps calling the control plane
// with its queue's live figures and a count of the reports it lost, and
// once the queue can be written again, status clears and the first queued
// report carries the count.
func TestFullDiskIsSeenAndCounted(t *testing.T) {
	cp := &controlPlane{}
	dir := enrolledAgainst(t, cp)
	queuePath := filepath.Join(dir, reporter.QueueFile)
	var full atomic.Bool
	full.Store(true)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- reporter.Run(ctx, reporter.Options{Dir: dir, Version: "test", Logger: slog.New(slog.NewTextHandler(logs, nil)),
			Queue: queue.Options{WriteFault: func() error {
				if full.Load() {
					return &os.PathError{Op: "write", Path: queuePath, Err: syscall.ENOSPC}
				}
				return nil
			}}})
	}()
	var runErr error
	stop := sync.OnceFunc(func() {
		cancel()
		runErr = <-done
	})
	t.Cleanup(stop)

	// Nothing can be queued, yet the control plane hears of it.
	var live *agentv1.HeartbeatRequest
	eventually(t, "a heartbeat saying the queue is failing", func() bool {
		live = cp.seen(func(r *agentv1.HeartbeatRequest) bool {
			return len(r.GetReports()) == 0 && r.GetQueue().GetFailingSince() != nil && r.GetQueue().GetUnqueued() >= 2
		})
		return live != nil
	})
	q := live.GetQueue()
	assert.Equal(t, agentv1.QueueErrorKind_QUEUE_ERROR_KIND_NO_SPACE, q.GetLastErrorKind())
	assert.False(t, q.GetFailingSince().AsTime().Before(start.Truncate(time.Second)))
	assert.False(t, q.GetLastErrorAt().AsTime().Before(q.GetFailingSince().AsTime()))

	eventually(t, "status to say the queue cannot be written", func() bool { return status(t, dir).State == reporter.StateQueueFailing })
	st := status(t, dir)
	assert.Equal(t, reporter.StateOK, st.SendState, "sending itself works")
	assert.Equal(t, "queue: append: write "+queuePath+": no space left on device", st.QueueError)
	assert.False(t, st.QueueErrorSince.IsZero())
	assert.Positive(t, st.QueueUnqueued)
	assert.Equal(t, "no_space", st.QueueLastErrorKind)
	assert.Contains(t, logs.String(), "the queue cannot be written")

	// Space returns: the next report is queued, carries the count, and the
	// failing state is gone on both sides.
	full.Store(false)
	var recovered *agentv1.HeartbeatRequest
	eventually(t, "a queued report after recovery", func() bool {
		recovered = cp.seen(func(r *agentv1.HeartbeatRequest) bool { return len(r.GetReports()) > 0 })
		return recovered != nil
	})
	rep := recovered.GetReports()[0]
	assert.GreaterOrEqual(t, rep.GetQueue().GetUnqueued(), q.GetUnqueued(), "the report carries every loss")
	assert.Nil(t, rep.GetQueue().GetFailingSince(), "a queued report was written")
	assert.Equal(t, agentv1.QueueErrorKind_QUEUE_ERROR_KIND_NO_SPACE, rep.GetQueue().GetLastErrorKind())
	assert.Nil(t, recovered.GetQueue().GetFailingSince(), "live figures: no longer failing")
	assert.Equal(t, uint64(1), rep.GetSeq(), "lost reports took no sequence number")

	eventually(t, "status to recover", func() bool { return status(t, dir).State == reporter.StateOK })
	st = status(t, dir)
	assert.Empty(t, st.QueueError)
	assert.True(t, st.QueueErrorSince.IsZero())
	assert.Equal(t, rep.GetQueue().GetUnqueued(), st.QueueUnqueued, "the count stays, as history")
	assert.Equal(t, "no_space", st.QueueLastErrorKind)
	assert.Contains(t, logs.String(), "the queue can be written again")

	stop()
	require.NoError(t, runErr)
	assert.Equal(t, reporter.StateStopped, status(t, dir).State)
}

// TestCommandsAreLogged: each command the control plane sends is logged by
// id and name, and so is its outcome.
func TestCommandsAreLogged(t *testing.T) {
	cp := &controlPlane{}
	dir := enrolledAgainst(t, cp)
	cp.send(&agentv1.Command{Id: "c-refresh", Type: agentv1.CommandType_COMMAND_TYPE_REFRESH_FACTS})
	cp.send(&agentv1.Command{Id: "c-discover", Type: agentv1.CommandType_COMMAND_TYPE_RUN_DISCOVERY})
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- reporter.Run(ctx, reporter.Options{Dir: dir, Version: "test", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	eventually(t, "both results reported", func() bool {
		return cp.seen(func(r *agentv1.HeartbeatRequest) bool {
			n := 0
			for _, rep := range r.GetReports() {
				n += len(rep.GetCommandResults())
			}
			return n == 2
		}) != nil
	})
	out := logs.String()
	assert.Contains(t, out, `msg="command received" command_id=c-refresh command=refresh_facts`)
	assert.Contains(t, out, `msg="command succeeded" command_id=c-refresh command=refresh_facts summary="host facts collected and queued"`)
	assert.Contains(t, out, `msg="command received" command_id=c-discover command=run_discovery`)
	assert.Contains(t, out, `msg="command failed" command_id=c-discover command=run_discovery summary="the site's discovery policy does not allow passive_neighbor for this agent"`)
}
