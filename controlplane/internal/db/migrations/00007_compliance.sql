-- Compliance: the framework and control catalog (global reference data,
-- loaded by `migrate` from the binary, read-only to the runtime role), and
-- each tenant's control status with the evidence that decided it.

-- +goose Up
CREATE TABLE compliance_catalog (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE compliance_frameworks (
    id        text PRIMARY KEY,
    name      text NOT NULL,
    version   text NOT NULL,
    publisher text NOT NULL,
    url       text NOT NULL,
    license   text NOT NULL
);

CREATE TABLE compliance_families (
    framework_id text NOT NULL,
    id           text NOT NULL,
    title        text NOT NULL,
    PRIMARY KEY (framework_id, id)
);

-- id is framework:key, e.g. nist-800-53-r5:cm-8.3.
CREATE TABLE compliance_controls (
    id           text PRIMARY KEY,
    framework_id text NOT NULL,
    key          text NOT NULL,
    label        text NOT NULL,
    title        text NOT NULL,
    family       text NOT NULL,
    parent_id    text,
    withdrawn    boolean NOT NULL,
    baselines    text[] NOT NULL,
    sort         integer NOT NULL,
    url          text NOT NULL
);
CREATE INDEX compliance_controls_order_idx ON compliance_controls (framework_id, sort);

CREATE TABLE compliance_mappings (
    from_id text NOT NULL,
    to_id   text NOT NULL,
    source  text NOT NULL,
    PRIMARY KEY (from_id, to_id)
);
CREATE INDEX compliance_mappings_to_idx ON compliance_mappings (to_id);

GRANT SELECT ON compliance_catalog, compliance_frameworks, compliance_families, compliance_controls, compliance_mappings TO edgeward_app;

-- A tenant's status of a control. No row: unknown. A control marked
-- not_applicable keeps its justification until an admin reverses it;
-- evaluators leave such a control alone.
CREATE TABLE control_status (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    control_id    text NOT NULL,
    status        text NOT NULL CHECK (status IN ('passing', 'failing', 'not_applicable', 'unknown')),
    evaluator     text NOT NULL,
    reason        text NOT NULL,
    evaluated_at  timestamptz NOT NULL,
    evidence_id   uuid,
    justification text,
    changed_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, control_id)
);
CREATE INDEX control_status_status_idx ON control_status (tenant_id, status);
SELECT edgeward_tenant_table('control_status');
GRANT SELECT, INSERT, UPDATE, DELETE ON control_status TO edgeward_app;

-- The evidence a status rests on: the evaluation's own record and what it
-- cites (an alert's observation evidence, for example).
CREATE TABLE control_evidence (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    control_id  text NOT NULL,
    evidence_id uuid NOT NULL,
    role        text NOT NULL CHECK (role IN ('evaluation', 'cited')),
    linked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, control_id, evidence_id),
    FOREIGN KEY (tenant_id, evidence_id) REFERENCES evidence (tenant_id, id)
);
CREATE INDEX control_evidence_recent_idx ON control_evidence (tenant_id, control_id, linked_at DESC);
SELECT edgeward_tenant_table('control_evidence');
GRANT SELECT, INSERT, DELETE ON control_evidence TO edgeward_app;

-- Evaluations are evidence too.
ALTER TABLE evidence DROP CONSTRAINT evidence_kind_check;
ALTER TABLE evidence ADD CONSTRAINT evidence_kind_check CHECK (kind IN ('observation', 'triage', 'authorization', 'control_evaluation'));

-- +goose Down
ALTER TABLE evidence DROP CONSTRAINT evidence_kind_check;
ALTER TABLE evidence ADD CONSTRAINT evidence_kind_check CHECK (kind IN ('observation', 'triage', 'authorization'));
DROP TABLE control_evidence;
DROP TABLE control_status;
DROP TABLE compliance_mappings;
DROP TABLE compliance_controls;
DROP TABLE compliance_families;
DROP TABLE compliance_frameworks;
DROP TABLE compliance_catalog;
