-- Compliance policies: a tenant's managed copy of a shipped baseline policy
-- (the baselines live in the binary), versioned, with every version kept.

-- +goose Up
CREATE TABLE compliance_policies (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    baseline_id text NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    parameters  jsonb NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- One managed copy per baseline: it is what the evaluators read.
    UNIQUE (tenant_id, baseline_id)
);
SELECT edgeward_tenant_table('compliance_policies');
GRANT SELECT, INSERT ON compliance_policies TO edgeward_app;
GRANT UPDATE (name, parameters, version, updated_at) ON compliance_policies TO edgeward_app;

CREATE TABLE compliance_policy_versions (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    policy_id  uuid NOT NULL,
    version    integer NOT NULL,
    change     text NOT NULL CHECK (change IN ('forked', 'updated')),
    name       text NOT NULL,
    parameters jsonb NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text NOT NULL,
    PRIMARY KEY (tenant_id, policy_id, version),
    FOREIGN KEY (tenant_id, policy_id) REFERENCES compliance_policies (tenant_id, id)
);
SELECT edgeward_tenant_table('compliance_policy_versions');
CREATE TRIGGER compliance_policy_versions_immutable BEFORE UPDATE OR DELETE ON compliance_policy_versions
    FOR EACH ROW EXECUTE FUNCTION edgeward_immutable_row();
GRANT SELECT, INSERT ON compliance_policy_versions TO edgeward_app;

-- +goose Down
DROP TABLE compliance_policy_versions;
DROP TABLE compliance_policies;
