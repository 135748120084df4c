package agents

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/pki"
)

// Identity is an authenticated agent: who it is and which certificate it used.
type Identity struct {
	TenantID    uuid.UUID
	AgentID     uuid.UUID
	Hostname    string
	Fingerprint [32]byte
	Cert        *x509.Certificate
	// Interval is the agent's heartbeat interval.
	Interval time.Duration
}

// IdentityError says why an agent certificate was refused. Its Code is the
// stable problem code of the REST API; its message is what the agent shows.
type IdentityError struct {
	Code string
	Msg  string
}

func (e *IdentityError) Error() string { return e.Msg }

// Codes of refused agent certificates.
const (
	CodeCertMissing  = "agent_certificate_missing"
	CodeCertInvalid  = "agent_certificate_invalid"
	CodeCertExpired  = "agent_certificate_expired"
	CodeCertReplaced = "agent_certificate_replaced"
	CodeAgentRevoked = "agent_revoked"
)

func idErr(code, format string, args ...any) error {
	return &IdentityError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

type identityKey struct{}

// WithIdentity attaches an authenticated agent to ctx.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	ctx = context.WithValue(ctx, identityKey{}, id)
	return audit.WithActor(ctx, audit.Actor{Type: audit.ActorAgent, ID: id.AgentID.String(), Name: id.Hostname})
}

// IdentityFrom returns the authenticated agent of ctx.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Verifier checks agent client certificates: the chain, the identity they
// name, and, in the database, that the agent is not revoked and the
// certificate is its current one (or the one a rotation is replacing).
// Results are cached briefly; every replica drops an agent's entries the
// moment a revocation or rotation commits (LISTEN/NOTIFY), and while that
// notification channel is down the cache is not used at all.
type Verifier struct {
	cfg *Config
	log *slog.Logger

	mu        sync.Mutex
	entries   map[[32]byte]cacheEntry
	listening bool
	// epoch advances on every invalidation, so a lookup that raced with a
	// revocation cannot cache what it read before the revocation committed.
	epoch uint64
}

type cacheEntry struct {
	id      Identity
	expires time.Time
}

const maxCacheEntries = 200_000

// NewVerifier returns a verifier; Run must be running for the cache to be used.
func NewVerifier(cfg *Config, log *slog.Logger) *Verifier {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Verifier{cfg: cfg, log: log, entries: map[[32]byte]cacheEntry{}}
}

// VerifyTLS authenticates the client certificate of a TLS connection.
func (v *Verifier) VerifyTLS(ctx context.Context, state *tls.ConnectionState) (Identity, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return Identity{}, idErr(CodeCertMissing, "this call needs the agent's client certificate (mutual TLS); enroll the agent first")
	}
	leaf := state.PeerCertificates[0]
	now := v.cfg.now()
	fp := sha256.Sum256(leaf.Raw)
	// A certificate with exactly these bytes passed the checks below less
	// than the cache TTL ago: only its validity period can have changed
	// since (revocations and rotations evict it).
	cached, ok, epoch := v.cached(fp, now)
	if ok && now.Before(leaf.NotAfter) {
		v.cfg.Metrics.identityCheck("cache")
		return cached, nil
	}
	inter := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: v.cfg.CA.Pool(), Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
		return Identity{}, idErr(CodeCertExpired, "the agent certificate expired at %s; enroll the agent again with a new token", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if err != nil {
		return Identity{}, idErr(CodeCertInvalid, "the client certificate was not issued by this control plane: %v", err)
	}
	tenant, agent, err := pki.ParseAgentURI(leaf)
	if err != nil {
		return Identity{}, idErr(CodeCertInvalid, "%v", err)
	}
	id := Identity{Fingerprint: fp, Cert: leaf}
	if id.TenantID, err = uuid.Parse(tenant); err == nil {
		id.AgentID, err = uuid.Parse(agent)
	}
	if err != nil {
		return Identity{}, idErr(CodeCertInvalid, "the certificate's agent identity is malformed")
	}
	cacheable := false
	err = db.InTenant(ctx, v.cfg.Pool, id.TenantID, func(tx pgx.Tx) error {
		var state string
		var firstUsed, revoked *time.Time
		var interval int
		err := tx.QueryRow(ctx, `
			SELECT c.state, c.first_used_at, a.revoked_at, a.hostname, a.heartbeat_interval_seconds
			  FROM agent_certificates c JOIN agents a ON a.tenant_id = c.tenant_id AND a.id = c.agent_id
			 WHERE c.fingerprint = $1 AND c.agent_id = $2`, id.Fingerprint[:], id.AgentID).
			Scan(&state, &firstUsed, &revoked, &id.Hostname, &interval)
		if errors.Is(err, pgx.ErrNoRows) {
			return idErr(CodeCertInvalid, "this certificate was not issued to agent %s", id.AgentID)
		}
		if err != nil {
			return err
		}
		id.Interval = time.Duration(interval) * time.Second
		switch {
		case revoked != nil:
			return idErr(CodeAgentRevoked, "agent %s was revoked at %s; enrolling this machine again needs a new enrollment token", id.AgentID, revoked.UTC().Format(time.RFC3339))
		case state == "retired":
			return idErr(CodeCertReplaced, "this certificate of agent %s was replaced by a newer one; use the newest certificate", id.AgentID)
		case state == "current" && firstUsed == nil:
			// The first use of a rotated certificate ends the rotation: the
			// certificate it replaces stops working. The agent row is locked
			// first, in the same order as revocation and rotation.
			if _, err := tx.Exec(ctx, `SELECT 1 FROM agents WHERE id = $1 FOR UPDATE`, id.AgentID); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `UPDATE agent_certificates SET first_used_at = $3
				WHERE fingerprint = $1 AND agent_id = $2 AND state = 'current' AND first_used_at IS NULL`, id.Fingerprint[:], id.AgentID, now)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				tag, err = tx.Exec(ctx, `UPDATE agent_certificates SET state = 'retired' WHERE agent_id = $1 AND state = 'previous'`, id.AgentID)
				if err != nil {
					return err
				}
				if tag.RowsAffected() > 0 {
					if err := notifyIdentityChanged(ctx, tx, id.AgentID); err != nil {
						return err
					}
				}
			}
			cacheable = true
		case state == "current":
			cacheable = true
		}
		return nil
	})
	if err != nil {
		v.cfg.Metrics.identityCheck("refused")
		return Identity{}, err
	}
	v.cfg.Metrics.identityCheck("database")
	if cacheable {
		v.store(id, now, epoch)
	}
	return id, nil
}

func (v *Verifier) cached(fp [32]byte, now time.Time) (Identity, bool, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.listening {
		return Identity{}, false, v.epoch
	}
	e, ok := v.entries[fp]
	if !ok || now.After(e.expires) {
		return Identity{}, false, v.epoch
	}
	return e.id, true, v.epoch
}

func (v *Verifier) store(id Identity, now time.Time, epoch uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.listening || v.epoch != epoch {
		return
	}
	if len(v.entries) >= maxCacheEntries {
		v.entries = map[[32]byte]cacheEntry{}
	}
	v.entries[id.Fingerprint] = cacheEntry{id: id, expires: now.Add(v.cfg.IdentityCacheTTL)}
}

// Forget drops every cached certificate of an agent.
func (v *Verifier) Forget(agentID uuid.UUID) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.epoch++
	for fp, e := range v.entries {
		if e.id.AgentID == agentID {
			delete(v.entries, fp)
		}
	}
}

func (v *Verifier) setListening(on bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.listening = on
	v.epoch++
	v.entries = map[[32]byte]cacheEntry{}
}

// Run listens for identity changes until ctx ends, keeping the cache
// coherent across replicas. When the listening connection fails, the cache
// is emptied and bypassed until it is back.
func (v *Verifier) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := v.listen(ctx)
		v.setListening(false)
		if ctx.Err() != nil {
			return
		}
		v.log.Warn("agent identity notifications lost; identity cache off until they return", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (v *Verifier) listen(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, v.cfg.Pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	v.setListening(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if id, err := uuid.Parse(n.Payload); err == nil {
			v.Forget(id)
		}
	}
}
