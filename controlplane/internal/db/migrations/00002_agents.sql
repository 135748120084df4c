-- Agents: sites (the minimal registry enrollment tokens bind to), enrollment
-- tokens, agents and their certificates, assets and asset timelines.

-- +goose Up

CREATE TABLE sites (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX sites_name_key ON sites (tenant_id, lower(name));
ALTER TABLE sites ENABLE ROW LEVEL SECURITY;
ALTER TABLE sites FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sites
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT, UPDATE ON sites TO edgeward_app;

-- One-time (or max_uses-time) tokens that admit agents. Only the SHA-256 of
-- the token string is kept.
CREATE TABLE enrollment_tokens (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    site_id      uuid,
    labels       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    max_uses     integer NOT NULL CHECK (max_uses BETWEEN 1 AND 100000),
    uses         integer NOT NULL DEFAULT 0 CHECK (uses >= 0),
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   uuid,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    revoked_by   uuid,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id)
);
CREATE UNIQUE INDEX enrollment_tokens_hash_key ON enrollment_tokens (tenant_id, token_hash);
ALTER TABLE enrollment_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE enrollment_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON enrollment_tokens
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT ON enrollment_tokens TO edgeward_app;
GRANT UPDATE (uses, last_used_at, revoked_at, revoked_by) ON enrollment_tokens TO edgeward_app;

-- Assets: every device the tenant knows. An enrolled host is keyed by its
-- machine id, so re-installing or re-enrolling a machine finds its asset.
CREATE TABLE assets (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    name          text NOT NULL,
    source        text NOT NULL CHECK (source IN ('agent', 'discovery')),
    machine_id    text,
    os            text,
    platform      text,
    agent_id      uuid,
    addresses     text[] NOT NULL DEFAULT '{}',
    macs          text[] NOT NULL DEFAULT '{}',
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX assets_machine_key ON assets (tenant_id, machine_id);
CREATE INDEX assets_last_seen_idx ON assets (tenant_id, last_seen_at);
ALTER TABLE assets SET (fillfactor = 80);
ALTER TABLE assets ENABLE ROW LEVEL SECURITY;
ALTER TABLE assets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON assets
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT, UPDATE ON assets TO edgeward_app;

CREATE TABLE asset_timeline (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    asset_id  uuid NOT NULL,
    id        uuid NOT NULL,
    at        timestamptz NOT NULL,
    kind      text NOT NULL,
    summary   text NOT NULL,
    details   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id)
);
CREATE INDEX asset_timeline_asset_idx ON asset_timeline (tenant_id, asset_id, id);
ALTER TABLE asset_timeline ENABLE ROW LEVEL SECURITY;
ALTER TABLE asset_timeline FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON asset_timeline
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT ON asset_timeline TO edgeward_app;

-- Agents. At most one live (unrevoked) agent per machine.
CREATE TABLE agents (
    tenant_id                  uuid NOT NULL REFERENCES tenants (id),
    id                         uuid NOT NULL,
    machine_id                 text NOT NULL CHECK (length(machine_id) BETWEEN 1 AND 200),
    hostname                   text NOT NULL,
    os                         text NOT NULL DEFAULT '',
    platform                   text NOT NULL DEFAULT '',
    platform_version           text NOT NULL DEFAULT '',
    kernel_version             text NOT NULL DEFAULT '',
    arch                       text NOT NULL DEFAULT '',
    agent_version              text NOT NULL DEFAULT '',
    facts                      jsonb NOT NULL DEFAULT '{}',
    facts_hash                 bytea,
    labels                     jsonb NOT NULL DEFAULT '{}',
    site_id                    uuid,
    enrollment_token_id        uuid,
    asset_id                   uuid NOT NULL,
    enrolled_at                timestamptz NOT NULL,
    last_seen_at               timestamptz,
    heartbeat_interval_seconds integer NOT NULL CHECK (heartbeat_interval_seconds > 0),
    queue_depth                bigint NOT NULL DEFAULT 0,
    queue_dropped              bigint NOT NULL DEFAULT 0,
    last_seq                   bigint NOT NULL DEFAULT 0,
    -- The first report applied since the last (re)enrollment, and how many
    -- were applied since. Agents number reports contiguously, so
    -- reports_applied = last_seq - first_seq + 1 means every report arrived
    -- exactly once and in order.
    first_seq                  bigint NOT NULL DEFAULT 0,
    reports_applied            bigint NOT NULL DEFAULT 0,
    revoked_at                 timestamptz,
    revoked_by                 uuid,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id),
    FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id),
    FOREIGN KEY (tenant_id, enrollment_token_id) REFERENCES enrollment_tokens (tenant_id, id)
);
CREATE UNIQUE INDEX agents_live_machine_key ON agents (tenant_id, machine_id) WHERE revoked_at IS NULL;
-- Every heartbeat updates its agent row. No index covers a column a
-- heartbeat changes, and pages keep free space, so these are HOT updates
-- that write no index entries.
ALTER TABLE agents SET (fillfactor = 80);
ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT ON agents TO edgeward_app;
-- An agent's tenant, id and machine never change.
GRANT UPDATE (hostname, os, platform, platform_version, kernel_version, arch, agent_version, facts, facts_hash,
              labels, site_id, enrollment_token_id, asset_id, enrolled_at, last_seen_at, heartbeat_interval_seconds,
              queue_depth, queue_dropped, last_seq, first_seq, reports_applied, revoked_at, revoked_by) ON agents TO edgeward_app;

-- Revocation is final: no code path, buggy or not, brings a revoked agent back.
-- +goose StatementBegin
CREATE FUNCTION agents_revocation_is_final() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at) THEN
        RAISE EXCEPTION 'agent % is revoked; revocation cannot be undone', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER agents_revocation_is_final BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_revocation_is_final();

-- Certificates issued to agents. The server accepts the agent's `current`
-- certificate, and its `previous` one until the current one is first used,
-- so a rotation interrupted at any step never locks the agent out.
CREATE TABLE agent_certificates (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    fingerprint   bytea NOT NULL CHECK (length(fingerprint) = 32),
    agent_id      uuid NOT NULL,
    serial        text NOT NULL,
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    state         text NOT NULL CHECK (state IN ('current', 'previous', 'retired')),
    issued_at     timestamptz NOT NULL DEFAULT now(),
    first_used_at timestamptz,
    PRIMARY KEY (tenant_id, fingerprint),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX agent_certificates_agent_idx ON agent_certificates (tenant_id, agent_id, state);
ALTER TABLE agent_certificates ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_certificates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_certificates
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT ON agent_certificates TO edgeward_app;
GRANT UPDATE (state, first_used_at) ON agent_certificates TO edgeward_app;

-- A retired certificate stays retired.
-- +goose StatementBegin
CREATE FUNCTION agent_certificates_retirement_is_final() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state = 'retired' AND NEW.state <> 'retired' THEN
        RAISE EXCEPTION 'certificate of agent % is retired; it cannot be used again', OLD.agent_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER agent_certificates_retirement_is_final BEFORE UPDATE ON agent_certificates
    FOR EACH ROW EXECUTE FUNCTION agent_certificates_retirement_is_final();

-- +goose Down
DROP TABLE agent_certificates;
DROP FUNCTION agent_certificates_retirement_is_final();
DROP TABLE agents;
DROP FUNCTION agents_revocation_is_final();
DROP TABLE asset_timeline;
DROP TABLE assets;
DROP TABLE enrollment_tokens;
DROP TABLE sites;
