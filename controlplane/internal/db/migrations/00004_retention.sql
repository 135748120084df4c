-- Retention: the runtime role learns which tenants exist, so the control
-- plane can enforce each tenant's retention (observations today) in that
-- tenant's own RLS transaction.
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

-- +goose Down
DROP INDEX observations_site_seen_idx;
DROP FUNCTION app_tenant_ids();
