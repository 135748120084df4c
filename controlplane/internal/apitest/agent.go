package apitest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
	"github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1/agentv1connect"
)

// Agent is a simulated agent for tests and benchmarks: it speaks the real
// agent protocol over real TLS, with its own key and certificate.
type Agent struct {
	Env       *Env
	Key       *ecdsa.PrivateKey
	Cert      *x509.Certificate
	AgentID   string
	TenantID  string
	MachineID string
	Hostname  string
	Seq       uint64
}

// NewKey generates an ECDSA P-256 key, as the agent does.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// CSR is a DER certificate request for key.
func CSR(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "test"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// bootTime is when every simulated machine booted.
var bootTime = time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)

// MACFor is the interface MAC of a simulated machine: distinct per machine,
// locally administered.
func MACFor(machineID string) string {
	sum := sha256.Sum256([]byte(machineID))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", sum[0], sum[1], sum[2], sum[3], sum[4])
}

// Facts are plausible host facts for a simulated machine.
func Facts(machineID, hostname string) *agentv1.HostFacts {
	return &agentv1.HostFacts{
		Hostname: hostname, Os: "linux", Platform: "debian", PlatformVersion: "12", KernelVersion: "6.1.0-28-amd64", Arch: "amd64",
		MachineId: machineID, AgentVersion: "test", CpuCount: 8, CpuModel: "Test CPU", MemoryTotalBytes: 16 << 30,
		Uptime: durationpb.New(time.Hour), BootTime: timestamppb.New(bootTime),
		Interfaces: []*agentv1.NetworkInterface{{Name: "eth0", Mac: MACFor(machineID), Addresses: []string{"192.0.2.10/24", "fe80::1/64"}}},
		Disks:      []*agentv1.Disk{{Mountpoint: "/", Device: "/dev/sda1", Fstype: "ext4", TotalBytes: 256 << 30, UsedBytes: 100 << 30}},
	}
}

// EnrollmentToken issues an enrollment token through the REST API as the
// first tenant's admin.
func (e *Env) EnrollmentToken(t testing.TB, body map[string]any) (id, token string) {
	t.Helper()
	if body == nil {
		body = map[string]any{"name": "test"}
	}
	r := e.Client(t, e.AdminToken).Do("POST", "/api/v1/enrollment-tokens", body)
	if r.Status != http.StatusCreated {
		t.Fatalf("create enrollment token: %d %s", r.Status, r.Body)
	}
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	r.JSON(t, &out)
	return out.ID, out.Token
}

// EnrollClient is an EnrollmentService client trusting the server's CA.
func (e *Env) EnrollClient() agentv1connect.EnrollmentServiceClient {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: e.TLSConfig(), ForceAttemptHTTP2: true}}
	return agentv1connect.NewEnrollmentServiceClient(hc, e.Server.URL)
}

// Enroll enrolls a simulated agent; a refusal is returned as the Connect error.
func (e *Env) Enroll(t testing.TB, token, machineID, hostname string) (*Agent, error) {
	t.Helper()
	a := &Agent{Env: e, Key: NewKey(t), MachineID: machineID, Hostname: hostname}
	resp, err := e.EnrollClient().Enroll(context.Background(), connect.NewRequest(&agentv1.EnrollRequest{
		Token: token, CsrDer: CSR(t, a.Key), Facts: Facts(machineID, hostname),
	}))
	if err != nil {
		return nil, err
	}
	if a.Cert, err = x509.ParseCertificate(resp.Msg.GetCertificateDer()); err != nil {
		t.Fatal(err)
	}
	a.AgentID, a.TenantID = resp.Msg.GetAgentId(), resp.Msg.GetTenantId()
	return a, nil
}

// Reenroll enrolls the same machine again with a new key, proving it holds
// the current identity (as `edgeward-agent enroll --force` does).
func (a *Agent) Reenroll(t testing.TB, token, hostname string) (*Agent, error) {
	t.Helper()
	next := &Agent{Env: a.Env, Key: NewKey(t), MachineID: a.MachineID, Hostname: hostname}
	csr := CSR(t, next.Key)
	digest := sha256.Sum256(csr)
	sig, err := ecdsa.SignASN1(rand.Reader, a.Key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.Env.EnrollClient().Enroll(context.Background(), connect.NewRequest(&agentv1.EnrollRequest{
		Token: token, CsrDer: csr, Facts: Facts(a.MachineID, hostname), PreviousCertificateDer: a.Cert.Raw, PreviousSignature: sig,
	}))
	if err != nil {
		return nil, err
	}
	if next.Cert, err = x509.ParseCertificate(resp.Msg.GetCertificateDer()); err != nil {
		t.Fatal(err)
	}
	next.AgentID, next.TenantID = resp.Msg.GetAgentId(), resp.Msg.GetTenantId()
	return next, nil
}

// TLSCertificate is the agent's client certificate.
func (a *Agent) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{a.Cert.Raw}, PrivateKey: a.Key, Leaf: a.Cert}
}

// RPC is an AgentService client on its own mutual-TLS connection.
func (a *Agent) RPC(t testing.TB, opts ...connect.ClientOption) agentv1connect.AgentServiceClient {
	cfg := a.Env.TLSConfig()
	cfg.Certificates = []tls.Certificate{a.TLSCertificate()}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return agentv1connect.NewAgentServiceClient(&http.Client{Timeout: 30 * time.Second, Transport: tr}, a.Env.Server.URL, opts...)
}

// Report makes the agent's next report.
func (a *Agent) Report() *agentv1.Report {
	a.Seq++
	return &agentv1.Report{Seq: a.Seq, CreatedAt: timestamppb.Now(), Facts: Facts(a.MachineID, a.Hostname), Queue: &agentv1.QueueStats{Depth: 1}}
}
