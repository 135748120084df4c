package agents

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/pki"
	"github.com/edgeward/edgeward/proto/enrollment"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

func refuse(code connect.Code, format string, args ...any) error {
	return connect.NewError(code, fmt.Errorf(format, args...))
}

// Enroll exchanges an enrollment token and a CSR for a client certificate.
// A machine that already has a live agent in the tenant (same machine id)
// keeps its agent id and asset: re-installing never duplicates a host.
func (s *Service) Enroll(ctx context.Context, req *connect.Request[agentv1.EnrollRequest]) (*connect.Response[agentv1.EnrollResponse], error) {
	m := req.Msg
	tok, err := enrollment.Parse(m.GetToken())
	if err != nil {
		return nil, refuse(connect.CodeUnauthenticated, "%v", err)
	}
	if tok.CAFingerprint != caFingerprint(s.cfg) {
		return nil, refuse(connect.CodeUnauthenticated, "this enrollment token was issued by a different control plane (its CA fingerprint does not match this server's)")
	}
	csr, err := pki.ParseAgentCSR(m.GetCsrDer())
	if err != nil {
		return nil, refuse(connect.CodeInvalidArgument, "%v", err)
	}
	facts := factsFromProto(m.GetFacts())
	if facts == nil || facts.MachineID == "" || facts.Hostname == "" {
		return nil, refuse(connect.CodeInvalidArgument, "host facts must name the machine id and hostname")
	}
	if len(facts.MachineID) > 200 {
		return nil, refuse(connect.CodeInvalidArgument, "the machine id is longer than 200 characters")
	}
	tenantID := uuid.UUID(tok.TenantID)
	now := s.cfg.now()
	var resp agentv1.EnrollResponse
	var agentID uuid.UUID
	reenrolled, proven := false, false
	err = db.InTenant(ctx, s.cfg.Pool, tenantID, func(tx pgx.Tx) error {
		var t EnrollmentToken
		err := tx.QueryRow(ctx, `SELECT id, site_id, labels, max_uses, uses, expires_at, revoked_at, created_at FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE`, tok.Hash[:]).
			Scan(&t.ID, &t.SiteID, &t.Labels, &t.MaxUses, &t.Uses, &t.ExpiresAt, &t.RevokedAt, &t.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return refuse(connect.CodeUnauthenticated, "this enrollment token is not known to the control plane")
		}
		if err != nil {
			return err
		}
		switch t.Status(now) {
		case TokenRevoked:
			return refuse(connect.CodeUnauthenticated, "this enrollment token was revoked; ask for a new one")
		case TokenExhausted:
			return refuse(connect.CodeUnauthenticated, "this enrollment token has already been used %d of %d times; ask for a new one", t.Uses, t.MaxUses)
		case TokenExpired:
			return refuse(connect.CodeUnauthenticated, "this enrollment token expired at %s; ask for a new one", t.ExpiresAt.UTC().Format(time.RFC3339))
		}

		// A machine whose agent was revoked comes back only with a token
		// issued after the revocation.
		var revokedAfterToken bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM agents WHERE machine_id = $1 AND revoked_at >= $2)`,
			facts.MachineID, t.CreatedAt).Scan(&revokedAfterToken); err != nil {
			return err
		}
		if revokedAfterToken {
			return refuse(connect.CodeUnauthenticated, "this machine's agent was revoked; enrolling it again needs a new enrollment token")
		}

		var prevAsset uuid.UUID
		var stale bool
		var lastSeen *time.Time
		err = tx.QueryRow(ctx, `
			SELECT id, asset_id, last_seen_at,
			       coalesce(last_seen_at, enrolled_at) < $2::timestamptz - make_interval(secs => 3 * heartbeat_interval_seconds)
			  FROM agents WHERE machine_id = $1 AND revoked_at IS NULL FOR UPDATE`, facts.MachineID, now).Scan(&agentID, &prevAsset, &lastSeen, &stale)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			agentID = uuid.Must(uuid.NewV7())
		case err != nil:
			return err
		default:
			// The machine has a live agent. Keep its id when the caller
			// proves it holds that agent's key, or when the agent has gone
			// silent (a re-installed machine); refuse otherwise.
			proven = s.provesIdentity(m, tenantID, agentID)
			if !proven && !stale {
				seen := "never"
				if lastSeen != nil {
					seen = lastSeen.UTC().Format(time.RFC3339)
				}
				return refuse(connect.CodeFailedPrecondition,
					"machine %s already has an active agent %s (last seen %s): enroll from that agent's state directory (edgeward-agent enroll --force proves its identity), or revoke agent %s first",
					facts.MachineID, agentID, seen, agentID)
			}
			reenrolled = true
		}
		ips, macs := facts.Addresses()
		assetID, _, err := s.cfg.Assets.ForMachine(ctx, tx, tenantID, assets.Host{
			MachineID: facts.MachineID, Name: facts.Hostname, OS: facts.OS, Platform: facts.Platform, AgentID: agentID, Addresses: ips, MACs: macs,
		}, now)
		if err != nil {
			return err
		}
		cert, err := s.cfg.CA.IssueAgent(csr, tenantID.String(), agentID.String(), s.cfg.CertLifetime)
		if err != nil {
			return err
		}
		interval := int(s.cfg.HeartbeatInterval / time.Second)
		if reenrolled {
			if _, err := tx.Exec(ctx, `UPDATE agent_certificates SET state = 'retired' WHERE agent_id = $1 AND state <> 'retired'`, agentID); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `
				UPDATE agents SET hostname = $2, os = $3, platform = $4, platform_version = $5, kernel_version = $6, arch = $7,
				       agent_version = $8, facts = $9, facts_hash = $10, labels = $11, site_id = $12, enrollment_token_id = $13,
				       asset_id = $14, enrolled_at = $15, heartbeat_interval_seconds = $16, last_seq = 0, first_seq = 0, reports_applied = 0
				 WHERE id = $1`,
				agentID, facts.Hostname, facts.OS, facts.Platform, facts.PlatformVersion, facts.KernelVersion, facts.Arch,
				facts.AgentVersion, facts, facts.Hash(), t.Labels, t.SiteID, t.ID, assetID, now, interval)
		} else {
			_, err = tx.Exec(ctx, `
				INSERT INTO agents (tenant_id, id, machine_id, hostname, os, platform, platform_version, kernel_version, arch,
				                    agent_version, facts, facts_hash, labels, site_id, enrollment_token_id, asset_id, enrolled_at,
				                    heartbeat_interval_seconds)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
				tenantID, agentID, facts.MachineID, facts.Hostname, facts.OS, facts.Platform, facts.PlatformVersion, facts.KernelVersion,
				facts.Arch, facts.AgentVersion, facts, facts.Hash(), t.Labels, t.SiteID, t.ID, assetID, now, interval)
		}
		if err != nil {
			return fmt.Errorf("record agent: %w", err)
		}
		if s.cfg.Discovery != nil {
			// The host's own MACs belong to its asset: a device discovery
			// saw before it enrolled is merged into it.
			if err := s.cfg.Discovery.ClaimHost(ctx, tx, tenantID, assetID, macs); err != nil {
				return err
			}
		}
		fp := sha256.Sum256(cert.Raw)
		if _, err := tx.Exec(ctx, `
			INSERT INTO agent_certificates (tenant_id, fingerprint, agent_id, serial, not_before, not_after, state)
			VALUES ($1, $2, $3, $4, $5, $6, 'current')`,
			tenantID, fp[:], agentID, pki.SerialHex(cert), cert.NotBefore, cert.NotAfter); err != nil {
			return fmt.Errorf("record certificate: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE enrollment_tokens SET uses = uses + 1, last_used_at = $2 WHERE id = $1`, t.ID, now); err != nil {
			return err
		}
		kind, summary, action := assets.KindEnrolled, "agent enrolled", "agent.enrolled"
		if reenrolled {
			kind, summary, action = assets.KindReenrolled, "agent enrolled again (same machine)", "agent.reenrolled"
		}
		if err := s.cfg.Assets.Record(ctx, tx, tenantID, []assets.TimelineEntry{{AssetID: assetID, At: now, Kind: kind, Summary: summary,
			Details: map[string]any{"agent_id": agentID.String(), "hostname": facts.Hostname, "enrollment_token_id": t.ID.String()}}}); err != nil {
			return err
		}
		actx := WithIdentity(ctx, Identity{TenantID: tenantID, AgentID: agentID, Hostname: facts.Hostname})
		details := map[string]any{
			"hostname": facts.Hostname, "machine_id": facts.MachineID, "enrollment_token_id": t.ID.String(), "certificate_serial": pki.SerialHex(cert),
		}
		if reenrolled {
			details["proof"] = "previous certificate key"
			if !proven {
				details["proof"] = "none: the previous agent was silent for three intervals"
			}
		}
		if err := audit.Record(actx, tx, tenantID, audit.Entry{Action: action, TargetType: "agent", TargetID: agentID.String(), Details: details}); err != nil {
			return err
		}
		if reenrolled {
			if err := notifyIdentityChanged(ctx, tx, agentID); err != nil {
				return err
			}
		}
		resp = agentv1.EnrollResponse{
			AgentId: agentID.String(), TenantId: tenantID.String(), CertificateDer: cert.Raw,
			CaCertificatesDer: [][]byte{s.cfg.CA.Cert.Raw}, HeartbeatInterval: durationpb.New(s.cfg.HeartbeatInterval), Reenrolled: reenrolled,
		}
		return nil
	})
	if err != nil {
		s.cfg.Metrics.enrollment("refused")
		return nil, s.rpcError(err)
	}
	if reenrolled {
		s.cfg.Metrics.enrollment("reenrolled")
		s.verifier.Forget(agentID)
	} else {
		s.cfg.Metrics.enrollment("enrolled")
	}
	s.log.Info("agent enrolled", "tenant_id", tenantID, "agent_id", agentID, "hostname", facts.Hostname, "reenrolled", reenrolled)
	return connect.NewResponse(&resp), nil
}

// provesIdentity reports whether an enrollment request carries proof that
// its sender holds the key of agent agentID: that agent's certificate from
// this CA (expired is fine: the key is what counts) and a signature with
// its key over the new CSR.
func (s *Service) provesIdentity(m *agentv1.EnrollRequest, tenantID, agentID uuid.UUID) bool {
	der, sig := m.GetPreviousCertificateDer(), m.GetPreviousSignature()
	if len(der) == 0 || len(sig) == 0 {
		return false
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return false
	}
	opts := x509.VerifyOptions{Roots: s.cfg.CA.Pool(), CurrentTime: cert.NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := cert.Verify(opts); err != nil {
		return false
	}
	t, a, err := pki.ParseAgentURI(cert)
	if err != nil || t != tenantID.String() || a != agentID.String() {
		return false
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return false
	}
	digest := sha256.Sum256(m.GetCsrDer())
	return ecdsa.VerifyASN1(pub, digest[:], sig)
}

// rpcError passes Connect errors through and hides anything else.
func (s *Service) rpcError(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	var ie *IdentityError
	if errors.As(err, &ie) {
		return connect.NewError(connect.CodeUnauthenticated, ie)
	}
	s.log.Error("agent rpc failed", "error", err.Error())
	return connect.NewError(connect.CodeInternal, errors.New("the control plane failed to handle this call"))
}
