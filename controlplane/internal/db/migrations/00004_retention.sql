-- Retention: the runtime role learns which tenants exist, so the control
-- plane can enforce each tenant's retention (observations today) in that
-- tenant's own RLS transaction. And commands: delivered ones without a
-- result are offered again, so the pending index covers them too.
--
-- tenants is not FORCE ROW LEVEL SECURITY, so this SECURITY DEFINER function,
-- owned by the migration owner, sees every row. It returns ids only: no
-- names, nothing else of any tenant, and it cannot write. The deletes it
-- enables still run per tenant under tenant_isolation.

-- +goose Up
CREATE FUNCTION app_tenant_ids() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT id FROM public.tenants ORDER BY id $$;
REVOKE ALL ON FUNCTION app_tenant_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_tenant_ids() TO edgeward_app;

-- Expiry finds a site's old observations by time.
CREATE INDEX observations_site_seen_idx ON observations (tenant_id, site_id, last_seen_at);

-- Commands to hand out: queued, or delivered and perhaps lost.
DROP INDEX agent_commands_queued_idx;
CREATE INDEX agent_commands_pending_idx ON agent_commands (tenant_id, agent_id) WHERE status IN ('queued', 'delivered');

-- +goose Down
DROP INDEX agent_commands_pending_idx;
CREATE INDEX agent_commands_queued_idx ON agent_commands (tenant_id, agent_id) WHERE status = 'queued';
DROP INDEX observations_site_seen_idx;
DROP FUNCTION app_tenant_ids();
