-- Foundation: tenants, principals, API tokens and the hash-chained audit log.
--
-- Conventions every later migration follows:
--   * a tenant-owned table has tenant_id uuid NOT NULL, ENABLE and FORCE ROW
--     LEVEL SECURITY, and the tenant_isolation policy on app_current_tenant();
--   * its primary key, unique indexes and foreign keys lead with tenant_id;
--   * the runtime role edgeward_app gets only the privileges it needs.

-- +goose Up

-- app_current_tenant is the tenant of the running transaction, or NULL outside
-- db.InTenant. NULLIF: a setting that was set locally reads back as '' after
-- its transaction ends, and '' is not a uuid.
CREATE FUNCTION app_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('edgeward.tenant_id', true), '')::uuid $$;

GRANT EXECUTE ON FUNCTION app_current_tenant() TO edgeward_app;

-- The tenant registry. Not a tenant-owned table (it has no tenant_id), but the
-- runtime role still sees only its own tenant's row. RLS is enabled and not
-- forced: the migration owner, which runs operator commands such as
-- `tenant list`, sees every tenant.
CREATE TABLE tenants (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tenants_name_key ON tenants (lower(name));
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = app_current_tenant())
    WITH CHECK (id = app_current_tenant());
GRANT SELECT ON tenants TO edgeward_app;

-- Principals: the people and services that hold API tokens.
CREATE TABLE principals (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('user', 'service_account')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE principals ENABLE ROW LEVEL SECURITY;
ALTER TABLE principals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON principals
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT, UPDATE ON principals TO edgeward_app;

-- API tokens: only the SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    principal_id uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role         text NOT NULL CHECK (role IN ('tenant_admin', 'analyst', 'auditor', 'service_account')),
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   uuid,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    revoked_by   uuid,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, id)
);
CREATE UNIQUE INDEX api_tokens_hash_key ON api_tokens (tenant_id, token_hash);
CREATE INDEX api_tokens_principal_idx ON api_tokens (tenant_id, principal_id);
ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_tokens
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT ON api_tokens TO edgeward_app;
-- Only the mutable columns; a token's hash, role and tenant never change.
GRANT UPDATE (last_used_at, revoked_at, revoked_by) ON api_tokens TO edgeward_app;

-- The audit trail: append-only and hash-chained per tenant (see internal/audit).
-- details is json, not jsonb, so the stored text is exactly the canonical
-- bytes that were hashed.
CREATE TABLE audit_events (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    seq            bigint NOT NULL CHECK (seq > 0),
    id             uuid NOT NULL,
    occurred_at    timestamptz NOT NULL,
    scheme_version integer NOT NULL,
    actor_type     text NOT NULL,
    actor_id       text,
    actor_name     text NOT NULL,
    action         text NOT NULL,
    target_type    text NOT NULL,
    target_id      text,
    request_id     text,
    source_ip      text,
    outcome        text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    details        json NOT NULL,
    prev_hash      bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash           bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant_id, seq)
);
CREATE UNIQUE INDEX audit_events_id_key ON audit_events (tenant_id, id);
CREATE INDEX audit_events_action_idx ON audit_events (tenant_id, action, seq);
CREATE INDEX audit_events_target_idx ON audit_events (tenant_id, target_type, target_id, seq);
CREATE INDEX audit_events_actor_idx ON audit_events (tenant_id, actor_id, seq);
CREATE INDEX audit_events_time_idx ON audit_events (tenant_id, occurred_at);
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT ON audit_events TO edgeward_app;

-- +goose StatementBegin
CREATE FUNCTION audit_events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- The head of each tenant's chain. Locking this row serializes a tenant's
-- audit inserts, so the chain never forks.
CREATE TABLE audit_chain_heads (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    seq       bigint NOT NULL,
    hash      bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant_id)
);
ALTER TABLE audit_chain_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_chain_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_chain_heads
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT, UPDATE ON audit_chain_heads TO edgeward_app;

-- +goose Down
DROP TABLE audit_chain_heads;
DROP TABLE audit_events;
DROP FUNCTION audit_events_append_only();
DROP TABLE api_tokens;
DROP TABLE principals;
DROP TABLE tenants;
DROP FUNCTION app_current_tenant();
