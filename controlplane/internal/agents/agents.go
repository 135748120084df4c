// Package agents admits and serves endpoint agents: enrollment tokens, the
// Enroll exchange of a token and a CSR for a client certificate, the
// mutual-TLS identity check of every agent call, heartbeat ingest, certificate
// rotation and revocation. It serves the Connect services of
// proto/edgeward/agent/v1 and the agent operations of specs/openapi.yaml.
package agents

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/discovery"
	"github.com/edgeward/edgeward/controlplane/internal/pki"
)

// Defaults of a deployment.
const (
	DefaultCertLifetime      = 30 * 24 * time.Hour
	DefaultHeartbeatInterval = 60 * time.Second
	DefaultIdentityCacheTTL  = 30 * time.Second
	// StaleAfterIntervals is how many missed heartbeats make an agent stale.
	StaleAfterIntervals = 3
)

// AssetBook is what agents need from the asset inventory, inside the
// caller's tenant transaction.
type AssetBook interface {
	ForMachine(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, h assets.Host, at time.Time) (uuid.UUID, bool, error)
	Seen(ctx context.Context, tx pgx.Tx, sightings []assets.Sighting) error
	DetachAgent(ctx context.Context, tx pgx.Tx, tenantID, assetID, agentID uuid.UUID) error
	Record(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, entries []assets.TimelineEntry) error
}

// DiscoverySink is what agents need from discovery, inside the heartbeat's
// transaction.
type DiscoverySink interface {
	PoliciesFor(ctx context.Context, tx pgx.Tx, cols []discovery.Collector) (map[uuid.UUID]discovery.AgentPolicy, error)
	Observe(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, col discovery.Collector, obs []discovery.Observation, droppedByAgent int64) error
	ClaimHost(ctx context.Context, tx pgx.Tx, tenantID, hostAsset uuid.UUID, macs []string) error
}

// Config configures the agents room.
type Config struct {
	Pool              *pgxpool.Pool
	CA                *pki.CA
	Assets            AssetBook
	Discovery         DiscoverySink
	CertLifetime      time.Duration
	HeartbeatInterval time.Duration
	IdentityCacheTTL  time.Duration
	// Metrics may be nil.
	Metrics *Metrics
	// Now is the clock; tests may set it.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.CertLifetime <= 0 {
		c.CertLifetime = DefaultCertLifetime
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.IdentityCacheTTL <= 0 {
		c.IdentityCacheTTL = DefaultIdentityCacheTTL
	}
	if c.Assets == nil {
		c.Assets = assets.Store{}
	}
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// notifyChannel carries the id of an agent whose identity changed (revoked,
// rotated), so every replica drops it from its identity cache at once.
const notifyChannel = "edgeward_agent_identity"

func notifyIdentityChanged(ctx context.Context, tx pgx.Tx, agentID uuid.UUID) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, agentID.String())
	return err
}
