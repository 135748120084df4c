-- Idempotency keys: the outcome of a mutation sent with an Idempotency-Key,
-- kept for 24 hours so that a retry with the same key is answered with the
-- first response instead of doing the work twice (see internal/idempotency).
--
-- A key belongs to one principal of one tenant: principals never see or
-- collide with each other's keys. While the first attempt runs the row is
-- in_progress and owned by attempt_id; an attempt that died (its row older
-- than the takeover age) is taken over by the next retry with a new
-- attempt_id, so a late finish of the dead attempt cannot overwrite it.
--
-- response_body is the response exactly as sent. Operations whose response
-- carries a secret (createApiToken, createEnrollmentToken) take no key, so
-- no secret is ever stored here.

-- +goose Up
CREATE TABLE idempotency_keys (
    tenant_id          uuid NOT NULL REFERENCES tenants (id),
    principal_id       uuid NOT NULL,
    key                text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    operation_id       text NOT NULL,
    request_hash       bytea NOT NULL CHECK (length(request_hash) = 32),
    status             text NOT NULL CHECK (status IN ('in_progress', 'completed')),
    attempt_id         uuid NOT NULL,
    attempt_started_at timestamptz NOT NULL DEFAULT now(),
    response_status    integer CHECK (response_status BETWEEN 100 AND 499),
    response_headers   jsonb CHECK (jsonb_typeof(response_headers) = 'object'),
    response_body      bytea,
    created_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    PRIMARY KEY (tenant_id, principal_id, key),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, id),
    -- A completed key has its whole response; an in-progress one none of it.
    CHECK ((status = 'completed') = (response_status IS NOT NULL AND response_headers IS NOT NULL
                                     AND response_body IS NOT NULL AND completed_at IS NOT NULL)),
    CHECK (status = 'completed' OR (response_status IS NULL AND response_headers IS NULL
                                    AND response_body IS NULL AND completed_at IS NULL))
);
-- Expiry deletes a tenant's keys by age.
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (tenant_id, created_at);
SELECT edgeward_tenant_table('idempotency_keys');
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO edgeward_app;

-- +goose Down
DROP TABLE idempotency_keys;
