-- Webhook deliveries: destinations (with sealed credentials), one delivery
-- per (outbox event, destination), and an immutable record of every attempt.
--
-- Attempts are run by River jobs (schema river, migrated by `migrate` after
-- these files). A job carries only ids; what a job may touch is still decided
-- by these tables' row-level security in the tenant's own transaction.

-- +goose Up
CREATE TABLE delivery_destinations (
    tenant_id                  uuid NOT NULL REFERENCES tenants (id),
    id                         uuid NOT NULL,
    name                       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    url                        text NOT NULL CHECK (length(url) <= 2048),
    event_types                text[] NOT NULL CHECK (cardinality(event_types) > 0),
    enabled                    boolean NOT NULL DEFAULT true,
    disabled_reason            text CHECK (disabled_reason IN ('disabled_by_user', 'endpoint_gone', 'failing')),
    disabled_at                timestamptz,
    -- Sealed by internal/secrets with a key from configuration; never
    -- returned by a read.
    secret_sealed              bytea,
    previous_secret_sealed     bytea,
    previous_secret_expires_at timestamptz,
    auth_header_name           text,
    auth_header_sealed         bytea,
    -- Health: failing_since is the first failed attempt after the last
    -- success; a destination failing for the whole disable span is disabled.
    last_success_at            timestamptz,
    last_failure_at            timestamptz,
    failing_since              timestamptz,
    consecutive_failures       integer NOT NULL DEFAULT 0,
    version                    integer NOT NULL DEFAULT 1,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    deleted_at                 timestamptz,
    PRIMARY KEY (tenant_id, id),
    CHECK ((auth_header_name IS NULL) = (auth_header_sealed IS NULL))
);
CREATE INDEX delivery_destinations_live_idx ON delivery_destinations (tenant_id, id) WHERE deleted_at IS NULL;
SELECT edgeward_tenant_table('delivery_destinations');
GRANT SELECT, INSERT ON delivery_destinations TO edgeward_app;
GRANT UPDATE (name, url, event_types, enabled, disabled_reason, disabled_at, secret_sealed, previous_secret_sealed,
    previous_secret_expires_at, auth_header_name, auth_header_sealed, last_success_at, last_failure_at, failing_since,
    consecutive_failures, version, updated_at, deleted_at) ON delivery_destinations TO edgeward_app;

CREATE TABLE deliveries (
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    id                uuid NOT NULL,
    destination_id    uuid NOT NULL,
    event_id          uuid NOT NULL,
    event_type        text NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'retrying', 'succeeded', 'failed', 'cancelled')),
    attempt_count     integer NOT NULL DEFAULT 0,
    next_retry_at     timestamptz,
    last_attempt_at   timestamptz,
    last_status_code  integer,
    last_error_class  text,
    -- job_seq names the one scheduled job that may attempt this delivery;
    -- scheduling another (a retry) makes older jobs no-ops.
    job_seq           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, event_id, destination_id),
    FOREIGN KEY (tenant_id, destination_id) REFERENCES delivery_destinations (tenant_id, id),
    FOREIGN KEY (tenant_id, event_id) REFERENCES outbox_events (tenant_id, id)
);
CREATE INDEX deliveries_status_idx ON deliveries (tenant_id, status, id);
CREATE INDEX deliveries_destination_idx ON deliveries (tenant_id, destination_id, id);
CREATE INDEX deliveries_type_idx ON deliveries (tenant_id, event_type, id);
CREATE INDEX deliveries_open_idx ON deliveries (tenant_id, destination_id) WHERE status IN ('pending', 'retrying');
SELECT edgeward_tenant_table('deliveries');
GRANT SELECT, INSERT ON deliveries TO edgeward_app;
GRANT UPDATE (status, attempt_count, next_retry_at, last_attempt_at, last_status_code, last_error_class, job_seq,
    updated_at, completed_at) ON deliveries TO edgeward_app;

CREATE TABLE delivery_attempts (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    id                  uuid NOT NULL,
    delivery_id         uuid NOT NULL,
    attempt             integer NOT NULL,
    trigger             text NOT NULL CHECK (trigger IN ('scheduled', 'manual')),
    started_at          timestamptz NOT NULL,
    ended_at            timestamptz NOT NULL,
    duration_ms         integer NOT NULL,
    status_code         integer,
    error_class         text,
    error               text CHECK (length(error) <= 500),
    response_body       text CHECK (octet_length(response_body) <= 4096),
    response_truncated  boolean NOT NULL DEFAULT false,
    retry_after_seconds integer,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, delivery_id, attempt),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES deliveries (tenant_id, id)
);
SELECT edgeward_tenant_table('delivery_attempts');
CREATE TRIGGER delivery_attempts_immutable BEFORE UPDATE OR DELETE ON delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION edgeward_immutable_row();
GRANT SELECT, INSERT ON delivery_attempts TO edgeward_app;

-- A committed outbox event wakes the dispatchers of every replica at once
-- (NOTIFY is sent on commit, identical payloads of one transaction merge).
-- +goose StatementBegin
CREATE FUNCTION edgeward_outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('edgeward_outbox', NEW.tenant_id::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER outbox_events_notify AFTER INSERT ON outbox_events
    FOR EACH ROW EXECUTE FUNCTION edgeward_outbox_notify();

-- +goose Down
DROP TRIGGER outbox_events_notify ON outbox_events;
DROP FUNCTION edgeward_outbox_notify();
DROP TABLE delivery_attempts;
DROP TABLE deliveries;
DROP TABLE delivery_destinations;
