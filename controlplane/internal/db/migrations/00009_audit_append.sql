-- Appending to the audit trail is the database's job.
--
-- Until now the runtime role inserted events and moved the chain head
-- itself, so it could also insert an event the chain never linked (at
-- head+1 with any hash) and the verifier, which stopped at the head, did
-- not see it. Now the runtime role may only call audit_append(): under the
-- tenant's chain-head lock it computes seq, prev_hash and the scheme 1 hash
-- (SHA-256(prev_hash || canonical_v1), exactly as internal/audit and
-- docs/api/audit.md describe it), inserts the event and advances the head.
-- The runtime role keeps SELECT on both tables and loses INSERT on
-- audit_events and INSERT/UPDATE on audit_chain_heads.
--
-- audit_append is SECURITY DEFINER, owned by the migration owner, with a
-- pinned search_path. Both tables FORCE ROW LEVEL SECURITY, so the owner is
-- bound by tenant_isolation too: the function can only append to the
-- transaction's tenant, app_current_tenant(). Its statements also name that
-- tenant explicitly, so this holds even where the owner is a superuser
-- (which RLS does not bind, and which migrate warns about).

-- +goose Up

-- audit_json_string is a JSON string as Go's encoding/json writes it without
-- HTML escaping: to_json(text) escapes the same characters the same way
-- (\" \\ \b \f \n \r \t, other controls as lowercase \u00xx), except that
-- Go also escapes U+2028 and U+2029. NULL is null. E'' literals read the
-- same whatever standard_conforming_strings says.
--
-- The two helpers have no SET clause so that PostgreSQL can inline them into
-- audit_append (a SET clause prevents inlining); they name every function
-- with its schema instead, and they read no table.
CREATE FUNCTION audit_json_string(s text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN s IS NULL THEN 'null'
                      ELSE pg_catalog.replace(pg_catalog.replace(pg_catalog.to_json(s)::text,
                               E'\u2028', E'\\u2028'), E'\u2029', E'\\u2029') END $$;
REVOKE ALL ON FUNCTION audit_json_string(text) FROM PUBLIC;

-- audit_canonical_v1 is the byte string scheme 1 hashes (Event.Canonical in
-- internal/audit): compact JSON, fixed key order, occurred_at in UTC with
-- exactly six fractional digits, empty optional values as null, details
-- verbatim (the caller passes them canonical: keys sorted, numbers as
-- written).
CREATE FUNCTION audit_canonical_v1(
    tenant_id uuid, seq bigint, id uuid, occurred_at timestamptz,
    actor_type text, actor_id text, actor_name text, action text,
    target_type text, target_id text, request_id text, source_ip text,
    outcome text, details json) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT '{"v":1'
        || ',"tenant_id":"' || tenant_id::text || '"'
        || ',"seq":' || seq::text
        || ',"id":"' || id::text || '"'
        || ',"occurred_at":"' || pg_catalog.to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'
        || ',"actor":{"type":' || public.audit_json_string(actor_type)
        || ',"id":' || public.audit_json_string(NULLIF(actor_id, ''))
        || ',"name":' || public.audit_json_string(actor_name) || '}'
        || ',"action":' || public.audit_json_string(action)
        || ',"target":{"type":' || public.audit_json_string(target_type)
        || ',"id":' || public.audit_json_string(NULLIF(target_id, '')) || '}'
        || ',"request_id":' || public.audit_json_string(NULLIF(request_id, ''))
        || ',"source_ip":' || public.audit_json_string(NULLIF(source_ip, ''))
        || ',"outcome":' || public.audit_json_string(outcome)
        || ',"details":' || details::text
        || '}' $$;
REVOKE ALL ON FUNCTION audit_canonical_v1(uuid, bigint, uuid, timestamptz, text, text, text, text, text, text, text, text, text, json) FROM PUBLIC;

-- audit_append appends one event to the transaction's tenant chain and
-- returns its seq. p_tenant_id must be that tenant: a caller that names
-- another one has a bug, and gets an error instead of a silent redirect.
-- +goose StatementBegin
CREATE FUNCTION audit_append(
    p_tenant_id uuid, p_id uuid, p_occurred_at timestamptz,
    p_actor_type text, p_actor_id text, p_actor_name text, p_action text,
    p_target_type text, p_target_id text, p_request_id text, p_source_ip text,
    p_outcome text, p_details json) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant    uuid := public.app_current_tenant();
    v_head_seq  bigint;
    v_head_hash bytea;
    v_seq       bigint;
    v_hash      bytea;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'audit_append: the transaction has no tenant (edgeward.tenant_id is not set)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_tenant_id IS DISTINCT FROM v_tenant THEN
        RAISE EXCEPTION 'audit_append: event of tenant % in a transaction of tenant %', p_tenant_id, v_tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_details IS NULL OR json_typeof(p_details) <> 'object' THEN
        RAISE EXCEPTION 'audit_append: details must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The head row lock serializes this tenant's appends until the
    -- transaction ends, so the chain never forks. The first event of a
    -- tenant creates the head (concurrent first appends wait on the
    -- conflicting insert, then lock the row it made).
    SELECT h.seq, h.hash INTO v_head_seq, v_head_hash
      FROM public.audit_chain_heads h WHERE h.tenant_id = v_tenant FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO public.audit_chain_heads (tenant_id, seq, hash)
        VALUES (v_tenant, 0, decode(repeat('00', 32), 'hex'))
        ON CONFLICT (tenant_id) DO NOTHING;
        SELECT h.seq, h.hash INTO STRICT v_head_seq, v_head_hash
          FROM public.audit_chain_heads h WHERE h.tenant_id = v_tenant FOR UPDATE;
    END IF;

    v_seq := v_head_seq + 1;
    v_hash := sha256(v_head_hash || convert_to(public.audit_canonical_v1(
        v_tenant, v_seq, p_id, p_occurred_at, p_actor_type, p_actor_id, p_actor_name, p_action,
        p_target_type, p_target_id, p_request_id, p_source_ip, p_outcome, p_details), 'UTF8'));

    INSERT INTO public.audit_events (tenant_id, seq, id, occurred_at, scheme_version, actor_type, actor_id, actor_name,
                                     action, target_type, target_id, request_id, source_ip, outcome, details, prev_hash, hash)
    VALUES (v_tenant, v_seq, p_id, p_occurred_at, 1, p_actor_type, NULLIF(p_actor_id, ''), p_actor_name,
            p_action, p_target_type, NULLIF(p_target_id, ''), NULLIF(p_request_id, ''), NULLIF(p_source_ip, ''),
            p_outcome, p_details, v_head_hash, v_hash);
    UPDATE public.audit_chain_heads SET seq = v_seq, hash = v_hash WHERE tenant_id = v_tenant;
    RETURN v_seq;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION audit_append(uuid, uuid, timestamptz, text, text, text, text, text, text, text, text, text, json) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(uuid, uuid, timestamptz, text, text, text, text, text, text, text, text, text, json) TO edgeward_app;

REVOKE INSERT ON audit_events FROM edgeward_app;
REVOKE INSERT, UPDATE ON audit_chain_heads FROM edgeward_app;

-- +goose Down
GRANT INSERT ON audit_events TO edgeward_app;
GRANT INSERT, UPDATE ON audit_chain_heads TO edgeward_app;
DROP FUNCTION audit_append(uuid, uuid, timestamptz, text, text, text, text, text, text, text, text, text, json);
DROP FUNCTION audit_canonical_v1(uuid, bigint, uuid, timestamptz, text, text, text, text, text, text, text, text, text, json);
DROP FUNCTION audit_json_string(text);
