-- Agent queue health: what the agent says about writing its own queue.
-- queue_unqueued counts reports the agent could not write to its queue (a
-- full disk), over its queue file's life, beside queue_dropped (reports the
-- queue's bound dropped). queue_error_kind and queue_error_at describe the
-- most recent failure, kept after the agent recovered; queue_failing_since
-- is set only while the agent says it cannot write its queue.

-- +goose Up
ALTER TABLE agents
    ADD COLUMN queue_unqueued      bigint NOT NULL DEFAULT 0,
    ADD COLUMN queue_error_kind    text CHECK (queue_error_kind IN ('no_space', 'quota', 'read_only', 'io', 'too_large', 'other')),
    ADD COLUMN queue_error_at      timestamptz,
    ADD COLUMN queue_failing_since timestamptz;
GRANT UPDATE (queue_unqueued, queue_error_kind, queue_error_at, queue_failing_since) ON agents TO edgeward_app;

-- +goose Down
ALTER TABLE agents
    DROP COLUMN queue_unqueued,
    DROP COLUMN queue_error_kind,
    DROP COLUMN queue_error_at,
    DROP COLUMN queue_failing_since;
