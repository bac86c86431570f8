-- The worker's least-privilege role (issue 12, item 1; docs/security.md, "The worker's role").
--
-- The worker reads user tables and writes pg_mmretrieval's own; whatever user code those
-- statements evaluate (domain checks, casts, triggers, row-level security policies, defaults)
-- runs with the worker's rights.  So the worker is never a superuser: it logs in as a role
-- that may do exactly its job, by default mmr_worker, created here when the installing role
-- can (a superuser, or PostgreSQL 16+'s CREATEROLE holding BYPASSRLS itself).
--   NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION: nothing but its grants.
--   BYPASSRLS: row-level security policies of the source tables are not evaluated for it (a
--     policy function is user code), and it writes the embedding tables, whose only policy
--     is for reading.
--   LOGIN without a password: it can log in only where the server already trusts the client
--     to name its role (the embedded server's trust on its private socket, peer/ident
--     mappings); a server that asks for passwords needs ALTER ROLE mmr_worker PASSWORD ...
-- Its grants: USAGE on schema mmr; the worker-side tables; SELECT on the registered key and
-- content columns of each source table and UPDATE on its first key column (a FOR SHARE row
-- lock needs UPDATE on one column; the worker never updates a source row).

-- The type under a domain (through domains over domains); other types are returned as given.
CREATE OR REPLACE FUNCTION mmr._base_type(p_type regtype)
RETURNS regtype
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE d(oid, under) AS (
        SELECT y.oid, y.typbasetype FROM pg_catalog.pg_type y WHERE y.oid = p_type
        UNION ALL
        SELECT y.oid, y.typbasetype FROM d JOIN pg_catalog.pg_type y ON y.oid = d.under
         WHERE d.under <> 0)
    SELECT d.oid::regtype FROM d WHERE d.under = 0
$$;

-- The grants of one collection to the worker roles (p_role, or every role in mmr._worker_role
-- that still exists).  Called by mmr.create_collection, mmr.add_space and mmr.grant_worker.
-- The source table's columns can be granted only by a role holding them with grant option
-- (its owner, a superuser): otherwise a NOTICE says which GRANT the table's owner must run.
CREATE OR REPLACE FUNCTION mmr._grant_worker_on(p_collection_id int, p_role name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    r name;
    emb regclass;
    cols text;
    grant_sql text;
BEGIN
    SELECT * INTO c FROM mmr._collection x WHERE x.id = p_collection_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT string_agg(format('%I', col), ', ') INTO cols
      FROM (SELECT DISTINCT col FROM unnest(c.key_columns::text[] || c.text_columns
                                            || c.image_column::text) AS u(col)
             WHERE col IS NOT NULL) z;
    FOR r IN SELECT w.role_name FROM mmr._worker_role w
              WHERE p_role IS NULL AND EXISTS (SELECT 1 FROM pg_roles x WHERE x.rolname = w.role_name)
             UNION SELECT p_role WHERE p_role IS NOT NULL LOOP
        IF c.queue_table IS NOT NULL THEN
            EXECUTE format('GRANT SELECT, UPDATE, DELETE ON %s TO %I', c.queue_table, r);
        END IF;
        FOR emb IN SELECT s.embedding_table FROM mmr._space s
                    WHERE s.collection_id = c.id AND s.modality <> 'external'
                      AND s.embedding_table <> 'mmr._collection'::regclass LOOP
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', emb, r);
        END LOOP;
        grant_sql := format('GRANT SELECT (%s), UPDATE (%I) ON %s TO %I', cols,
                            c.key_columns[1], c.source, r);
        IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = c.source) THEN
            CONTINUE;  -- the source table was dropped (mmr.drop_collection tidies up)
        ELSIF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = c.source), 'USAGE')
           OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE grant_sql;
        ELSE
            RAISE NOTICE 'the worker role % cannot read collection % yet: % is not the owner of %',
                         quote_ident(r), quote_literal(c.name), current_user, c.source
                USING HINT = format('As the owner of %s, run: %s', c.source, grant_sql);
        END IF;
    END LOOP;
END
$$;

-- Make a role a worker role (another server, or a name of your own): it gets the worker's
-- grants on every collection, now and when collections and spaces are created later.
-- Administrative (090-privileges.sql): PUBLIC cannot execute it.
CREATE OR REPLACE FUNCTION mmr.grant_worker(role regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_roles;
    cid int;
    vschema name;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO r FROM pg_roles x WHERE x.oid = role;
    IF r.rolsuper THEN
        RAISE EXCEPTION 'role % is a superuser, so it cannot be the worker''s role', role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'User code the worker evaluates (domain checks, casts, triggers, '
                         'policies) would run as a superuser.  Create a role for it: CREATE ROLE '
                         'mmr_worker LOGIN BYPASSRLS; SELECT mmr.grant_worker(''mmr_worker'');';
    END IF;
    IF NOT r.rolbypassrls THEN
        RAISE EXCEPTION 'role % lacks BYPASSRLS, which the worker''s role needs', role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('As a superuser, run: ALTER ROLE %s BYPASSRLS; (policies of the '
                                'source tables are then not evaluated as the worker, and it can '
                                'write the embedding tables).', role);
    END IF;
    INSERT INTO mmr._worker_role (role_name) VALUES (r.rolname) ON CONFLICT DO NOTHING;
    EXECUTE format('GRANT USAGE ON SCHEMA mmr TO %I', r.rolname);
    EXECUTE format('GRANT SELECT ON mmr._collection, mmr._space TO %I', r.rolname);
    EXECUTE format('GRANT UPDATE (model_id) ON mmr._space TO %I', r.rolname);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON mmr._failed, mmr._worker, '
                   'mmr._throughput TO %I', r.rolname);
    -- issue 16: workers publish the encoders they have and report spaces they cannot serve
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON mmr._encoder TO %I', r.rolname);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON mmr._unservable TO %I', r.rolname);
    EXECUTE format('GRANT EXECUTE ON FUNCTION mmr.content_hash(text), mmr.content_hash(bytea) '
                   'TO %I', r.rolname);
    -- ends the bulk fill of a drained space version (issue 17; sql/idempotent/028-bulk.sql)
    EXECUTE format('GRANT EXECUTE ON FUNCTION mmr._worker_finish_fill(int[]) TO %I', r.rolname);
    SELECT n.nspname INTO vschema FROM pg_extension e
      JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector';
    IF vschema IS NOT NULL THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', vschema, r.rolname);
    END IF;
    FOR cid IN SELECT id FROM mmr._collection ORDER BY id LOOP
        PERFORM mmr._grant_worker_on(cid, r.rolname);
    END LOOP;
END
$$;

-- Take back what _grant_worker_on granted on a collection's source table (mmr.drop_collection,
-- and so `mmr db uninstall`): the queue and embedding tables go with the collection.
CREATE OR REPLACE FUNCTION mmr._revoke_worker_on(p_collection_id int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    r name;
    cols text;
BEGIN
    SELECT * INTO c FROM mmr._collection x WHERE x.id = p_collection_id;
    IF NOT FOUND OR NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = c.source) THEN
        RETURN;
    END IF;
    SELECT string_agg(format('%I', col), ', ') INTO cols
      FROM (SELECT DISTINCT col FROM unnest(c.key_columns::text[] || c.text_columns
                                            || c.image_column::text) AS u(col)
             WHERE col IS NOT NULL) z;
    FOR r IN SELECT w.role_name FROM mmr._worker_role w
              WHERE EXISTS (SELECT 1 FROM pg_roles x WHERE x.rolname = w.role_name) LOOP
        IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = c.source), 'USAGE')
           OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE format('REVOKE SELECT (%s), UPDATE (%I) ON %s FROM %I', cols,
                           c.key_columns[1], c.source, r);
        END IF;
    END LOOP;
END
$$;
