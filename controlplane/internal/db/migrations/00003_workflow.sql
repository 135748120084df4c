-- The unauthorized-device workflow: discovery policies and decisions,
-- observations, asset authorization, alerts with timelines, immutable
-- evidence, the transactional outbox, tickets, and agent commands.

-- +goose Up

-- tenant_policy: the standard RLS policy for a tenant table.
-- +goose StatementBegin
CREATE FUNCTION edgeward_tenant_table(tbl regclass) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant())', tbl);
END;
$$;
-- +goose StatementEnd

-- An append-only table: no UPDATE or DELETE, from anyone.
-- +goose StatementBegin
CREATE FUNCTION edgeward_immutable_row() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is immutable: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd

ALTER TABLE sites ADD COLUMN description text CHECK (length(description) <= 2000);
ALTER TABLE sites ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- One policy per site; deny by default (no CIDRs, no methods).
CREATE TABLE discovery_policies (
    tenant_id                  uuid NOT NULL REFERENCES tenants (id),
    site_id                    uuid NOT NULL,
    version                    integer NOT NULL DEFAULT 1,
    allowed_cidrs              cidr[] NOT NULL DEFAULT '{}',
    allowed_methods            text[] NOT NULL DEFAULT '{}',
    collector_agent_ids        uuid[] NOT NULL DEFAULT '{}',
    observation_retention_days integer NOT NULL DEFAULT 90 CHECK (observation_retention_days BETWEEN 1 AND 3650),
    allowlist                  jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(allowlist) = 'array'),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    updated_by                 uuid,
    PRIMARY KEY (tenant_id, site_id),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id)
);
SELECT edgeward_tenant_table('discovery_policies');
GRANT SELECT, INSERT, UPDATE ON discovery_policies TO edgeward_app;

CREATE TABLE discovery_authorizations (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    site_id        uuid NOT NULL,
    method         text NOT NULL,
    target         text NOT NULL,
    decision       text NOT NULL CHECK (decision IN ('granted', 'denied')),
    rule           text NOT NULL,
    reason         text NOT NULL,
    policy_version integer NOT NULL,
    principal_id   uuid NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id)
);
SELECT edgeward_tenant_table('discovery_authorizations');
CREATE TRIGGER discovery_authorizations_immutable BEFORE UPDATE OR DELETE ON discovery_authorizations
    FOR EACH ROW EXECUTE FUNCTION edgeward_immutable_row();
GRANT SELECT, INSERT ON discovery_authorizations TO edgeward_app;

-- Per-tenant key of the keyed hash that lets redacted readers correlate.
CREATE TABLE tenant_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    redaction_key bytea NOT NULL CHECK (length(redaction_key) = 32),
    PRIMARY KEY (tenant_id)
);
SELECT edgeward_tenant_table('tenant_keys');
GRANT SELECT, INSERT ON tenant_keys TO edgeward_app;

-- Assets gain a site, a vendor prefix, an authorization state, and a merge
-- pointer (a discovered device that later enrolled becomes its agent asset).
ALTER TABLE assets ADD COLUMN site_id uuid;
ALTER TABLE assets ADD FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id);
ALTER TABLE assets ADD COLUMN vendor_oui text;
ALTER TABLE assets ADD COLUMN authorization_state text NOT NULL DEFAULT 'unauthorized'
    CHECK (authorization_state IN ('authorized', 'unauthorized'));
ALTER TABLE assets ADD COLUMN authorization_basis text CHECK (authorization_basis IN ('agent_host', 'allowlist', 'manual'));
ALTER TABLE assets ADD COLUMN authorization_rule text;
ALTER TABLE assets ADD COLUMN authorization_changed_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE assets ADD COLUMN manually_authorized boolean NOT NULL DEFAULT false;
ALTER TABLE assets ADD COLUMN alerts_suppressed boolean NOT NULL DEFAULT false;
ALTER TABLE assets ADD COLUMN merged_into uuid;
CREATE INDEX assets_authorization_idx ON assets (tenant_id, authorization_state, last_seen_at, id);
CREATE INDEX assets_site_idx ON assets (tenant_id, site_id, last_seen_at, id);
UPDATE assets SET authorization_state = 'authorized', authorization_basis = 'agent_host' WHERE source = 'agent';

-- Which asset owns a MAC: an agent host's own interfaces, or a discovered device.
CREATE TABLE asset_macs (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    mac       text NOT NULL,
    asset_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, mac),
    FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id)
);
CREATE INDEX asset_macs_asset_idx ON asset_macs (tenant_id, asset_id);
SELECT edgeward_tenant_table('asset_macs');
GRANT SELECT, INSERT, UPDATE, DELETE ON asset_macs TO edgeward_app;

-- Neighbour observations, one row per (site, MAC, IP), refreshed on each sighting.
CREATE TABLE observations (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    site_id       uuid NOT NULL,
    collector_id  uuid NOT NULL,
    asset_id      uuid,
    mac           text NOT NULL,
    ip            inet NOT NULL,
    interface     text NOT NULL DEFAULT '',
    state         text NOT NULL DEFAULT '',
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    seen_count    bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id),
    FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id)
);
CREATE UNIQUE INDEX observations_subject_key ON observations (tenant_id, site_id, mac, ip);
CREATE INDEX observations_seen_idx ON observations (tenant_id, last_seen_at);
CREATE INDEX observations_asset_idx ON observations (tenant_id, asset_id);
CREATE INDEX observations_collector_idx ON observations (tenant_id, collector_id, last_seen_at);
SELECT edgeward_tenant_table('observations');
GRANT SELECT, INSERT, UPDATE, DELETE ON observations TO edgeward_app;

-- Collector figures live on the agent.
ALTER TABLE agents ADD COLUMN observations_dropped_by_agent bigint NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN observations_dropped_by_server bigint NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN last_observation_at timestamptz;
GRANT UPDATE (observations_dropped_by_agent, observations_dropped_by_server, last_observation_at) ON agents TO edgeward_app;
GRANT UPDATE (site_id, vendor_oui, authorization_state, authorization_basis, authorization_rule, authorization_changed_at,
              manually_authorized, alerts_suppressed, merged_into) ON assets TO edgeward_app;

CREATE TABLE alerts (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    id              uuid NOT NULL,
    type            text NOT NULL CHECK (type IN ('unauthorized_device')),
    status          text NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    severity        text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    title           text NOT NULL,
    asset_id        uuid NOT NULL,
    site_id         uuid,
    first_seen_at   timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    seen_count      bigint NOT NULL DEFAULT 1,
    assignee_id     uuid,
    resolution      text CHECK (resolution IN ('authorized', 'removed', 'false_positive')),
    resolution_note text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    acknowledged_at timestamptz,
    resolved_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id),
    FOREIGN KEY (tenant_id, assignee_id) REFERENCES principals (tenant_id, id),
    CHECK ((status = 'resolved') = (resolution IS NOT NULL))
);
-- One unresolved alert of a type per asset.
CREATE UNIQUE INDEX alerts_one_open_key ON alerts (tenant_id, asset_id, type) WHERE status <> 'resolved';
CREATE INDEX alerts_status_idx ON alerts (tenant_id, status, id);
CREATE INDEX alerts_asset_idx ON alerts (tenant_id, asset_id, id);
CREATE INDEX alerts_assignee_idx ON alerts (tenant_id, assignee_id, id);
CREATE INDEX alerts_created_idx ON alerts (tenant_id, created_at);
SELECT edgeward_tenant_table('alerts');
GRANT SELECT, INSERT, UPDATE ON alerts TO edgeward_app;

CREATE TABLE alert_timeline (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    alert_id   uuid NOT NULL,
    at         timestamptz NOT NULL,
    kind       text NOT NULL,
    actor_type text NOT NULL,
    actor_id   text,
    actor_name text NOT NULL,
    summary    text NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, alert_id) REFERENCES alerts (tenant_id, id)
);
CREATE INDEX alert_timeline_alert_idx ON alert_timeline (tenant_id, alert_id, id);
SELECT edgeward_tenant_table('alert_timeline');
CREATE TRIGGER alert_timeline_immutable BEFORE UPDATE OR DELETE ON alert_timeline
    FOR EACH ROW EXECUTE FUNCTION edgeward_immutable_row();
GRANT SELECT, INSERT ON alert_timeline TO edgeward_app;

-- Evidence: immutable, hashed at creation. content is json, not jsonb, so
-- the stored text is exactly the canonical bytes that were hashed.
CREATE TABLE evidence (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('observation', 'triage', 'authorization')),
    alert_id       uuid,
    asset_id       uuid,
    source_type    text NOT NULL,
    source_id      text NOT NULL,
    content        json NOT NULL,
    content_sha256 bytea NOT NULL CHECK (length(content_sha256) = 32),
    created_at     timestamptz NOT NULL,
    actor_type     text NOT NULL,
    actor_id       text,
    actor_name     text NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, alert_id) REFERENCES alerts (tenant_id, id),
    FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id)
);
CREATE INDEX evidence_alert_idx ON evidence (tenant_id, alert_id, id);
CREATE INDEX evidence_asset_idx ON evidence (tenant_id, asset_id, id);
SELECT edgeward_tenant_table('evidence');
CREATE TRIGGER evidence_immutable BEFORE UPDATE OR DELETE ON evidence
    FOR EACH ROW EXECUTE FUNCTION edgeward_immutable_row();
GRANT SELECT, INSERT ON evidence TO edgeward_app;

-- The transactional outbox: domain events written with the change that
-- caused them, consumed by deliveries.
CREATE TABLE outbox_events (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    type           text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   uuid NOT NULL,
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    dispatched_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_events_pending_idx ON outbox_events (tenant_id, id) WHERE dispatched_at IS NULL;
SELECT edgeward_tenant_table('outbox_events');
GRANT SELECT, INSERT ON outbox_events TO edgeward_app;
GRANT UPDATE (dispatched_at) ON outbox_events TO edgeward_app;

CREATE TABLE ticket_counters (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    last_number bigint NOT NULL,
    PRIMARY KEY (tenant_id)
);
SELECT edgeward_tenant_table('ticket_counters');
GRANT SELECT, INSERT, UPDATE ON ticket_counters TO edgeward_app;

CREATE TABLE tickets (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    number      bigint NOT NULL,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    status      text NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    priority    text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    assignee_id uuid,
    created_by  uuid,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, assignee_id) REFERENCES principals (tenant_id, id)
);
CREATE UNIQUE INDEX tickets_number_key ON tickets (tenant_id, number);
CREATE INDEX tickets_status_idx ON tickets (tenant_id, status, id);
CREATE INDEX tickets_assignee_idx ON tickets (tenant_id, assignee_id, id);
SELECT edgeward_tenant_table('tickets');
GRANT SELECT, INSERT ON tickets TO edgeward_app;
GRANT UPDATE (title, description, status, priority, assignee_id, updated_at, version) ON tickets TO edgeward_app;

CREATE TABLE ticket_comments (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    ticket_id   uuid NOT NULL,
    body        text NOT NULL,
    author_id   uuid NOT NULL,
    author_name text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets (tenant_id, id)
);
CREATE INDEX ticket_comments_ticket_idx ON ticket_comments (tenant_id, ticket_id, id);
SELECT edgeward_tenant_table('ticket_comments');
GRANT SELECT, INSERT ON ticket_comments TO edgeward_app;

CREATE TABLE ticket_links (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    ticket_id  uuid NOT NULL,
    type       text NOT NULL CHECK (type IN ('alert', 'asset', 'ticket', 'url')),
    target_id  uuid,
    url        text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets (tenant_id, id),
    CHECK ((type = 'url') = (url IS NOT NULL AND target_id IS NULL))
);
CREATE UNIQUE INDEX ticket_links_key ON ticket_links (tenant_id, ticket_id, type, coalesce(target_id::text, url));
CREATE INDEX ticket_links_target_idx ON ticket_links (tenant_id, type, target_id);
SELECT edgeward_tenant_table('ticket_links');
GRANT SELECT, INSERT ON ticket_links TO edgeward_app;

CREATE TABLE agent_commands (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    agent_id     uuid NOT NULL,
    type         text NOT NULL CHECK (type IN ('refresh_facts', 'run_discovery', 'rotate_certificate')),
    status       text NOT NULL CHECK (status IN ('queued', 'delivered', 'succeeded', 'failed', 'expired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   uuid,
    expires_at   timestamptz NOT NULL,
    delivered_at timestamptz,
    completed_at timestamptz,
    result       text,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX agent_commands_agent_idx ON agent_commands (tenant_id, agent_id, id);
CREATE INDEX agent_commands_queued_idx ON agent_commands (tenant_id, agent_id) WHERE status = 'queued';
SELECT edgeward_tenant_table('agent_commands');
GRANT SELECT, INSERT ON agent_commands TO edgeward_app;
GRANT UPDATE (status, delivered_at, completed_at, result) ON agent_commands TO edgeward_app;

-- +goose Down
DROP TABLE agent_commands;
DROP TABLE ticket_links;
DROP TABLE ticket_comments;
DROP TABLE tickets;
DROP TABLE ticket_counters;
DROP TABLE outbox_events;
DROP TABLE evidence;
DROP TABLE alert_timeline;
DROP TABLE alerts;
ALTER TABLE agents DROP COLUMN observations_dropped_by_agent, DROP COLUMN observations_dropped_by_server, DROP COLUMN last_observation_at;
DROP TABLE observations;
DROP TABLE asset_macs;
ALTER TABLE assets DROP COLUMN site_id, DROP COLUMN vendor_oui, DROP COLUMN authorization_state, DROP COLUMN authorization_basis,
    DROP COLUMN authorization_rule, DROP COLUMN authorization_changed_at, DROP COLUMN manually_authorized,
    DROP COLUMN alerts_suppressed, DROP COLUMN merged_into;
DROP TABLE tenant_keys;
DROP TABLE discovery_authorizations;
DROP TABLE discovery_policies;
ALTER TABLE sites DROP COLUMN description, DROP COLUMN updated_at;
DROP FUNCTION edgeward_immutable_row();
DROP FUNCTION edgeward_tenant_table(regclass);
