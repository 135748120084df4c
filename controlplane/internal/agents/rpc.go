package agents

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/discovery"
	"github.com/edgeward/edgeward/controlplane/internal/pki"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
	"github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1/agentv1connect"
)

// Service is the agents room: its Connect services, its REST operations and
// the background work (identity notifications, heartbeat ingest) they need.
type Service struct {
	cfg      *Config
	log      *slog.Logger
	verifier *Verifier
	ingester *Ingester
}

// New returns the agents room.
func New(cfg Config, log *slog.Logger) *Service {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &cfg
	return &Service{cfg: c, log: log, verifier: NewVerifier(c, log), ingester: NewIngester(c, log)}
}

// Run runs the background work until ctx ends.
func (s *Service) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.verifier.Run(ctx); close(done) }()
	s.ingester.Run(ctx)
	<-done
}

// Verifier returns the identity verifier (for the REST gate).
func (s *Service) Verifier() *Verifier { return s.verifier }

type tlsKey struct{}

// maxObservations bounds the neighbour entries of one report.
const maxObservations = 10000

// MaxMessageBytes bounds one agent protocol message, compressed or not: a
// heartbeat of 200 reports with full facts fits many times over.
const MaxMessageBytes = 4 << 20

// Handlers returns the Connect handlers of the agent protocol, by path
// prefix. They serve Connect, gRPC and gRPC-Web.
func (s *Service) Handlers(opts ...connect.HandlerOption) map[string]http.Handler {
	withTLS := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tlsKey{}, r.TLS)))
		})
	}
	// Heartbeat responses are tiny: compressing them costs more than it
	// saves. Messages are bounded before and after decompression, because
	// Enroll is open to anyone who can reach the listener.
	opts = append(append([]connect.HandlerOption{
		connect.WithCompressMinBytes(4096),
		connect.WithReadMaxBytes(MaxMessageBytes),
	}, jsonCodecs()...), opts...)
	limit := func(h http.Handler) http.Handler { return http.MaxBytesHandler(h, MaxMessageBytes) }
	enrollPath, enroll := agentv1connect.NewEnrollmentServiceHandler(s, opts...)
	agentPath, agent := agentv1connect.NewAgentServiceHandler(s, opts...)
	return map[string]http.Handler{enrollPath: limit(enroll), agentPath: limit(withTLS(agent))}
}

// authenticate checks the calling agent's client certificate.
func (s *Service) authenticate(ctx context.Context) (context.Context, Identity, error) {
	state, _ := ctx.Value(tlsKey{}).(*tls.ConnectionState)
	id, err := s.verifier.VerifyTLS(ctx, state)
	if err != nil {
		return ctx, id, s.rpcError(err)
	}
	return WithIdentity(ctx, id), id, nil
}

// Heartbeat implements AgentService.Heartbeat.
func (s *Service) Heartbeat(ctx context.Context, req *connect.Request[agentv1.HeartbeatRequest]) (*connect.Response[agentv1.HeartbeatResponse], error) {
	ctx, id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	msgs := req.Msg.GetReports()
	if len(msgs) > 1000 {
		return nil, refuse(connect.CodeInvalidArgument, "at most 1000 reports per heartbeat, got %d", len(msgs))
	}
	reports := make([]Report, 0, len(msgs))
	for _, m := range msgs {
		if m.GetSeq() == 0 || m.GetSeq() > MaxInteger {
			return nil, refuse(connect.CodeInvalidArgument, "report sequence numbers start at 1 and end at 2^53-1; got %d", m.GetSeq())
		}
		r := Report{Seq: m.GetSeq(), At: m.GetCreatedAt().AsTime(), Facts: factsFromProto(m.GetFacts()), Counts: len(m.GetObservations()),
			ObservationsDropped: clampCount(m.GetObservationsDropped())}
		if m.CreatedAt == nil {
			r.At = s.cfg.now()
		}
		if len(m.GetObservations()) > maxObservations {
			return nil, refuse(connect.CodeInvalidArgument, "at most %d observations per report", maxObservations)
		}
		for _, o := range m.GetObservations() {
			seen := o.GetLastSeenAt().AsTime()
			if o.LastSeenAt == nil {
				seen = r.At
			}
			r.Observations = append(r.Observations, discovery.Observation{MAC: clean(o.GetMac()), IP: clean(o.GetIp()),
				Interface: clean(o.GetInterface()), State: clean(o.GetState()), SeenAt: seen})
		}
		for _, cr := range m.GetCommandResults() {
			id, err := uuid.Parse(cr.GetCommandId())
			if err != nil {
				continue
			}
			at := cr.GetCompletedAt().AsTime()
			if cr.CompletedAt == nil {
				at = r.At
			}
			r.CommandResults = append(r.CommandResults, CommandResult{ID: id, Succeeded: cr.GetSucceeded(), Summary: cr.GetSummary(), CompletedAt: at})
		}
		r.Queue = queueFromProto(m.GetQueue())
		r.factsHash()
		reports = append(reports, r)
	}
	ack, err := s.ingester.Submit(ctx, id, reports, queueFromProto(req.Msg.GetQueue()), true)
	if err != nil {
		return nil, s.rpcError(err)
	}
	resp := &agentv1.HeartbeatResponse{AckedSeqs: ack.Seqs, NextInterval: durationpb.New(ack.Interval),
		Discovery: &agentv1.DiscoveryPolicy{PassiveNeighbor: ack.Policy.PassiveNeighbor, AllowedCidrs: ack.Policy.CIDRs, Version: int64(ack.Policy.Version)}}
	for _, c := range ack.Commands {
		resp.Commands = append(resp.Commands, c.proto())
	}
	return connect.NewResponse(resp), nil
}

// RotateCertificate implements AgentService.RotateCertificate: a new
// certificate for a new key. The calling certificate stays valid (as
// `previous`) until the new one is first used, and any certificate issued
// by an earlier, unfinished rotation is retired.
func (s *Service) RotateCertificate(ctx context.Context, req *connect.Request[agentv1.RotateCertificateRequest]) (*connect.Response[agentv1.RotateCertificateResponse], error) {
	ctx, id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	csr, err := pki.ParseAgentCSR(req.Msg.GetCsrDer())
	if err != nil {
		return nil, refuse(connect.CodeInvalidArgument, "%v", err)
	}
	newKey, err1 := x509.MarshalPKIXPublicKey(csr.PublicKey)
	oldKey, err2 := x509.MarshalPKIXPublicKey(id.Cert.PublicKey)
	if err1 != nil || err2 != nil || bytes.Equal(newKey, oldKey) {
		return nil, refuse(connect.CodeInvalidArgument, "a rotation needs a new key")
	}
	cert, err := s.cfg.CA.IssueAgent(csr, id.TenantID.String(), id.AgentID.String(), s.cfg.CertLifetime)
	if err != nil {
		return nil, s.rpcError(err)
	}
	fp := sha256.Sum256(cert.Raw)
	err = db.InTenant(ctx, s.cfg.Pool, id.TenantID, func(tx pgx.Tx) error {
		var revoked bool
		if err := tx.QueryRow(ctx, `SELECT revoked_at IS NOT NULL FROM agents WHERE id = $1 FOR UPDATE`, id.AgentID).Scan(&revoked); err != nil {
			return err
		}
		if revoked {
			return idErr(CodeAgentRevoked, "agent %s was revoked", id.AgentID)
		}
		// Under the agent's lock, the calling certificate must still be one
		// the server accepts: a cached identity may be a moment out of date.
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM agent_certificates WHERE fingerprint = $1 AND agent_id = $2`, id.Fingerprint[:], id.AgentID).Scan(&state)
		if err != nil || state == "retired" {
			return idErr(CodeCertReplaced, "this certificate of agent %s was replaced by a newer one; use the newest certificate", id.AgentID)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE agent_certificates SET state = CASE WHEN fingerprint = $2 THEN 'previous' ELSE 'retired' END
			 WHERE agent_id = $1 AND state <> 'retired'`, id.AgentID, id.Fingerprint[:]); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO agent_certificates (tenant_id, fingerprint, agent_id, serial, not_before, not_after, state)
			VALUES ($1, $2, $3, $4, $5, $6, 'current')`,
			id.TenantID, fp[:], id.AgentID, pki.SerialHex(cert), cert.NotBefore, cert.NotAfter); err != nil {
			return err
		}
		if err := notifyIdentityChanged(ctx, tx, id.AgentID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, id.TenantID, audit.Entry{Action: "agent.certificate_rotated", TargetType: "agent", TargetID: id.AgentID.String(),
			Details: map[string]any{"previous_serial": pki.SerialHex(id.Cert), "serial": pki.SerialHex(cert), "not_after": cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z")}})
	})
	if err != nil {
		return nil, s.rpcError(err)
	}
	s.verifier.Forget(id.AgentID)
	return connect.NewResponse(&agentv1.RotateCertificateResponse{
		CertificateDer: cert.Raw, CaCertificatesDer: [][]byte{s.cfg.CA.Cert.Raw}, HeartbeatInterval: durationpb.New(id.Interval),
	}), nil
}

// queueFromProto reads an agent's queue figures. Counts past int64 are
// clamped and timestamps a timestamptz cannot hold are left out, so a
// garbled figure cannot fail the heartbeat that carries it.
func queueFromProto(q *agentv1.QueueStats) *QueueStats {
	if q == nil {
		return nil
	}
	at := func(ts *timestamppb.Timestamp) *time.Time {
		if ts == nil || ts.CheckValid() != nil {
			return nil
		}
		t := ts.AsTime().UTC().Truncate(time.Microsecond)
		return &t
	}
	out := &QueueStats{Depth: clampCount(q.GetDepth()), Dropped: clampCount(q.GetDropped()), Unqueued: clampCount(q.GetUnqueued()),
		LastErrorAt: at(q.GetLastErrorAt()), FailingSince: at(q.GetFailingSince())}
	if out.LastErrorAt != nil {
		out.LastErrorKind = queueErrorKind(q.GetLastErrorKind())
	}
	return out
}

// queueErrorKind is the stored (and REST) name of a queue error kind; an
// unknown or unspecified kind is "other".
func queueErrorKind(k agentv1.QueueErrorKind) string {
	switch k {
	case agentv1.QueueErrorKind_QUEUE_ERROR_KIND_NO_SPACE:
		return "no_space"
	case agentv1.QueueErrorKind_QUEUE_ERROR_KIND_QUOTA:
		return "quota"
	case agentv1.QueueErrorKind_QUEUE_ERROR_KIND_READ_ONLY:
		return "read_only"
	case agentv1.QueueErrorKind_QUEUE_ERROR_KIND_IO:
		return "io"
	case agentv1.QueueErrorKind_QUEUE_ERROR_KIND_TOO_LARGE:
		return "too_large"
	}
	return "other"
}
