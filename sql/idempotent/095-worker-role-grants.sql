-- The worker's role (sql/idempotent/032-worker-role.sql; docs/security.md, "The worker's role"),
-- granted after 090-privileges.sql so that a fresh install and an upgraded one list the same
-- grants in the same order.
-- mmr_worker: created once per cluster when the installing role can; granted in each database
-- on every upgrade (grants are per database).
DO $$
DECLARE
    me pg_roles;
    w pg_roles;
BEGIN
    SELECT * INTO me FROM pg_roles WHERE rolname = current_user;
    SELECT * INTO w FROM pg_roles WHERE rolname = 'mmr_worker';
    IF w.rolname IS NULL THEN
        IF me.rolsuper OR (me.rolcreaterole AND me.rolbypassrls
                           AND current_setting('server_version_num')::int >= 160000) THEN
            BEGIN
                CREATE ROLE mmr_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
                    NOREPLICATION BYPASSRLS;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- an upgrade of another database created it meanwhile
            END;
            SELECT * INTO w FROM pg_roles WHERE rolname = 'mmr_worker';
        ELSE
            RAISE NOTICE 'the worker role mmr_worker was not created: % may not create a role with BYPASSRLS',
                         current_user
                USING HINT = 'As a superuser: CREATE ROLE mmr_worker LOGIN BYPASSRLS; then SELECT '
                             'mmr.grant_worker(''mmr_worker''); (or grant a role of your own).';
        END IF;
    END IF;
    IF w.rolname IS NOT NULL AND NOT w.rolsuper AND w.rolbypassrls THEN
        PERFORM mmr.grant_worker('mmr_worker');
    ELSIF w.rolname IS NOT NULL THEN
        RAISE WARNING 'role mmr_worker exists but is % : not granted the worker''s privileges',
                      CASE WHEN w.rolsuper THEN 'a superuser' ELSE 'without BYPASSRLS' END
            USING HINT = 'ALTER ROLE mmr_worker NOSUPERUSER BYPASSRLS; then mmr db upgrade.';
    END IF;
    -- roles granted earlier (mmr.grant_worker) get the grants of new tables again
    PERFORM mmr.grant_worker(x.oid::regrole) FROM pg_roles x JOIN mmr._worker_role w2
        ON w2.role_name = x.rolname WHERE x.rolname <> 'mmr_worker' AND NOT x.rolsuper
       AND x.rolbypassrls;
END
$$;
