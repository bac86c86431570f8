-- Per-collection generated objects: the sync trigger function and triggers, and the view.

-- The statements of collection c's sync trigger function for one trigger operation p_op
-- (INSERT, UPDATE or DELETE), in order, each a format() template over the tables it reads and
-- writes: %1$s is the queue, %<i+1>$s the embedding table of the collection's i-th space (by id),
-- and every other % is doubled.  One node fills them in once, with the tables' names, when it
-- generates the function; Citus fills them in per statement with this node's shards.
-- on_queue: the statement reads or writes the queue; enqueues: it adds queue entries (counted
-- for the NOTIFY).  p_seq: the queue's identity sequence when mmr_id must be given explicitly
-- (a Citus shard has no identity), else NULL.  Names come from the catalog only.
CREATE OR REPLACE FUNCTION mmr._sync_statements(c mmr._collection, p_op text, p_seq text)
RETURNS TABLE (template text, on_queue boolean, enqueues boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s mmr._space;
    i int := 0;
    q constant text := '%1$s';
    e text;
    col text;
    id_col text := '';
    id_val text := '';
    keys constant text := replace(mmr._key_list(c), '%', '%%');
    n_keys constant text := replace(mmr._key_list(c, 'n'), '%', '%%');
    k1 constant text := replace(quote_ident(c.key_columns[1]), '%', '%%');
BEGIN
    IF p_seq IS NOT NULL THEN
        id_col := 'mmr_id, ';
        id_val := replace(format('pg_catalog.nextval(%L::pg_catalog.regclass), ', p_seq),
                          '%', '%%');
    END IF;
    FOR s IN SELECT * FROM mmr._space x WHERE x.collection_id = c.id ORDER BY x.id LOOP
        i := i + 1;
        e := format('%%%s$s', i + 1);
        col := replace(quote_ident(s.source_column), '%', '%%');
        IF p_op = 'INSERT' AND s.modality <> 'external' THEN
            RETURN QUERY SELECT format(
                'INSERT INTO %s (%smmr_space_id, %s) SELECT %s%s, %s FROM mmr_new n WHERE n.%s IS NOT NULL',
                q, id_col, keys, id_val, s.id, n_keys, col), true, true;
        ELSIF p_op = 'UPDATE' THEN
            IF s.modality <> 'external' THEN
                -- An entry nobody has claimed or tried yet already stands for the newest
                -- content (the worker reads the content when it claims), so a second one would
                -- only be deduplicated later: skip it.  Claimed entries get a new one: the
                -- worker holding them may have read the older content (its write then sees the
                -- hash mismatch).
                RETURN QUERY SELECT format(
                    E'INSERT INTO %s (%smmr_space_id, %s) SELECT %s%s, %s FROM mmr_new n\n'
                    '          LEFT JOIN mmr_old o ON %s\n'
                    '          WHERE n.%s IS NOT NULL AND (o.%s IS NULL OR o.%s IS DISTINCT FROM n.%s)\n'
                    '            AND NOT EXISTS (SELECT 1 FROM %s x WHERE x.mmr_space_id = %s AND %s\n'
                    '                              AND x.mmr_claimed_until IS NULL AND x.mmr_attempts = 0)',
                    q, id_col, keys, id_val, s.id, n_keys,
                    replace(mmr._key_join(c, 'o', 'n'), '%', '%%'),
                    col, k1, col, col,
                    q, s.id, replace(mmr._key_join(c, 'x', 'n'), '%', '%%')), true, true;
                RETURN QUERY SELECT format(
                    'DELETE FROM %s e USING mmr_new n WHERE %s AND n.%s IS NULL',
                    e, replace(mmr._key_join(c, 'e', 'n'), '%', '%%'), col), false, false;
            END IF;
            -- rows whose key disappeared (key changed by the UPDATE)
            RETURN QUERY SELECT format(
                E'DELETE FROM %s e USING mmr_old o WHERE %s\n'
                '          AND NOT EXISTS (SELECT 1 FROM mmr_new n WHERE %s)',
                e, replace(mmr._key_join(c, 'e', 'o'), '%', '%%'),
                replace(mmr._key_join(c, 'n', 'o'), '%', '%%')), false, false;
        ELSIF p_op = 'DELETE' THEN
            RETURN QUERY SELECT format('DELETE FROM %s e USING mmr_old o WHERE %s',
                                       e, replace(mmr._key_join(c, 'e', 'o'), '%', '%%')),
                                false, false;
        END IF;
    END LOOP;
    IF p_op = 'DELETE' THEN
        RETURN QUERY SELECT format('DELETE FROM %s x USING mmr_old o WHERE %s',
                                   q, replace(mmr._key_join(c, 'x', 'o'), '%', '%%')),
                            true, false;
    END IF;
END
$$;

-- (Re)generate mmr._sync_<id>(): one statement-level trigger function that, per statement,
-- queues inserted rows and rows whose content column changed, deletes embeddings of deleted
-- rows (and of rows whose content became NULL), and wakes workers with one NOTIFY.  The
-- statements come from mmr._sync_statements.  On one node they name the tables; on a Citus
-- source (docs/operations.md, "Citus") the triggers fire on the shards, so each statement runs
-- with this node's shards of the tables (EXECUTE format(template, VARIADIC v_shards), the names
-- looked up by mmr._citus_sync_prologue, 019-citus.sql), queue entries take mmr_id from the
-- identity sequence, a reference table's copies other than the coordinator's leave the queue
-- alone, nothing is NOTIFYed (Citus commits with two-phase commit, which refuses a transaction
-- that notified: workers poll) and the function may write to shards for its own duration.
CREATE OR REPLACE FUNCTION mmr._rebuild_sync(p_collection_id int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    v_kind text;
    v_tables text[];
    v_seq text;
    v_decl text;
    v_prologue text := '';
    v_set text := '';
    v_notify text;
    v_op text;
    v_branch text;
    v_branches text := '';
    v_trunc text := '';
    st record;
    fn text;
BEGIN
    SELECT * INTO STRICT c FROM mmr._collection WHERE id = p_collection_id;
    -- the tables the statements' %1$s, %2$s, ... stand for: the queue, then each space's
    -- embedding table by id
    v_tables := ARRAY[format('mmr.%I', mmr._queue_name(c.id))]
             || ARRAY(SELECT format('mmr.%I', mmr._emb_name(s.id)) FROM mmr._space s
                       WHERE s.collection_id = c.id ORDER BY s.id);
    v_kind := mmr._citus_kind(c.source);  -- Citus hook (019-citus.sql): NULL without Citus
    IF v_kind IS NULL THEN
        v_decl := E'    cnt bigint;\n'
                   '    queued bigint := 0;\n';
        v_notify := format(E'    IF queued > 0 THEN\n'
                            '        PERFORM pg_notify(''mmr_queue'', %L);\n'
                            '    END IF;\n', c.id::text);
    ELSE
        -- Shards have no identity: a queue entry's mmr_id comes from the node's range of the
        -- identity sequence (Citus gives each node its own).
        v_seq := pg_get_serial_sequence(v_tables[1], 'mmr_id');
        SELECT p.declarations, p.statements INTO v_decl, v_prologue
          FROM mmr._citus_sync_prologue(c.source, v_kind, v_tables) p;
        v_set := E'SET citus.enable_manual_changes_to_shards = on\n';
        v_notify := E'    -- Citus: no NOTIFY on a shard''s node (two-phase commit); workers poll\n';
    END IF;
    FOREACH v_op IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE'] LOOP
        v_branch := '';
        FOR st IN SELECT * FROM mmr._sync_statements(c, v_op, v_seq) LOOP
            IF v_kind IS NULL THEN
                v_branch := v_branch || '        ' || format(st.template, VARIADIC v_tables)
                            || E';\n';
                IF st.enqueues THEN
                    v_branch := v_branch
                        || E'        GET DIAGNOSTICS cnt = ROW_COUNT; queued := queued + cnt;\n';
                END IF;
            ELSIF v_kind = 'reference' AND st.on_queue THEN
                -- a reference table: only the coordinator's copy touches the queue
                v_branch := v_branch || format(E'        IF v_coordinator THEN\n'
                                                '            EXECUTE format(%L, VARIADIC v_shards);\n'
                                                '        END IF;\n', st.template);
            ELSE
                v_branch := v_branch || format(E'        EXECUTE format(%L, VARIADIC v_shards);\n',
                                               st.template);
            END IF;
        END LOOP;
        v_branches := v_branches || format(E'    %s TG_OP = %L THEN\n%s',
                                           CASE v_op WHEN 'INSERT' THEN 'IF' ELSE 'ELSIF' END,
                                           v_op, coalesce(nullif(v_branch, ''), E'        NULL;\n'));
    END LOOP;
    -- TRUNCATE fires on the table itself (on Citus: the coordinator's), never on a shard: the
    -- tables are truncated by name, the embedding tables first
    FOR i IN 2 .. array_length(v_tables, 1) LOOP
        v_trunc := v_trunc || format(E'        TRUNCATE %s;\n', v_tables[i]);
    END LOOP;
    v_trunc := v_trunc || format(E'        TRUNCATE %s;\n', v_tables[1]);

    fn := format(
        E'CREATE OR REPLACE FUNCTION mmr.%I() RETURNS trigger\n'
        'LANGUAGE plpgsql SECURITY DEFINER\n'
        'SET search_path = pg_catalog, pg_temp\n'
        '%s'
        'AS $body$\n'
        'DECLARE\n'
        '%s'
        'BEGIN\n'
        '    -- generated by mmr._rebuild_sync for collection %s; do not edit\n'
        '%s'
        '%s'
        '    ELSIF TG_OP = ''TRUNCATE'' THEN\n%s'
        '    END IF;\n'
        '%s'
        '    RETURN NULL;\n'
        'END\n'
        '$body$',
        '_sync_' || c.id, v_set, v_decl, quote_literal(c.name), v_prologue, v_branches, v_trunc,
        v_notify);
    EXECUTE fn;
    EXECUTE format('REVOKE ALL ON FUNCTION mmr.%I() FROM PUBLIC', '_sync_' || c.id);
END
$$;

CREATE OR REPLACE FUNCTION mmr._create_triggers(p_collection_id int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    fn text;
    v_citus text;
BEGIN
    SELECT * INTO STRICT c FROM mmr._collection WHERE id = p_collection_id;
    fn := format('mmr.%I()', '_sync_' || c.id);
    v_citus := mmr._citus_triggers(c.source, true);  -- Citus hook (019-citus.sql)
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS mmr_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s', 'mmr_sync_' || c.id || '_ins',
                   c.source, fn);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS mmr_old '
                   'NEW TABLE AS mmr_new FOR EACH STATEMENT EXECUTE FUNCTION %s',
                   'mmr_sync_' || c.id || '_upd', c.source, fn);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS mmr_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s', 'mmr_sync_' || c.id || '_del',
                   c.source, fn);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s',
                   'mmr_sync_' || c.id || '_trunc', c.source, fn);
    PERFORM mmr._citus_triggers(c.source, false, v_citus);  -- Citus hook (019-citus.sql)
END
$$;

-- (Re)create the collection's view: every source column plus one column per active space,
-- named after the space.  security_invoker: the caller's grants and RLS apply.  Only the view mmr
-- created for this collection (its oid is in mmr._collection.view_relid) is ever dropped: a
-- relation of the chosen name that mmr did not create is left alone and the call fails.
CREATE OR REPLACE FUNCTION mmr._rebuild_view(p_collection_id int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    s mmr._space;
    cols text := '';
    joins text := '';
    i int := 0;
    v_relid oid;
    v_schema name;
    v_name name;
BEGIN
    SELECT * INTO STRICT c FROM mmr._collection WHERE id = p_collection_id;
    IF c.view_name IS NULL THEN
        RETURN;
    END IF;
    FOR s IN SELECT * FROM mmr._space WHERE collection_id = c.id AND active ORDER BY id LOOP
        i := i + 1;
        cols := cols || format(', %I.embedding AS %I', 'e' || i, s.name);
        joins := joins || format(E'\n  LEFT JOIN mmr.%I %I ON %s', mmr._emb_name(s.id), 'e' || i,
                                 mmr._key_join(c, 'e' || i, 's'));
    END LOOP;
    -- Our view, where it is now (the user may have renamed it or its schema).
    SELECT n.nspname, v.relname INTO v_schema, v_name
      FROM pg_class v JOIN pg_namespace n ON n.oid = v.relnamespace
     WHERE v.oid = c.view_relid AND v.relkind = 'v';
    IF FOUND THEN
        c.view_schema := v_schema;
        c.view_name := v_name;
        EXECUTE format('DROP VIEW %s', c.view_relid::regclass);
    ELSIF EXISTS (SELECT 1 FROM pg_class v JOIN pg_namespace n ON n.oid = v.relnamespace
                   WHERE n.nspname = c.view_schema AND v.relname = c.view_name) THEN
        RAISE EXCEPTION 'relation %.% already exists and was not created by pg_mmretrieval for '
                        'collection %, so it cannot be the collection''s view',
                        quote_ident(c.view_schema), quote_ident(c.view_name), quote_literal(c.name)
            USING ERRCODE = 'duplicate_table',
                  HINT = 'pg_mmretrieval never replaces a relation it did not create: rename or '
                         'drop that relation and run mmr.refresh_view(collection), or register '
                         'the table with view_name => ''another_name''.';
    END IF;
    EXECUTE format('CREATE VIEW %I.%I WITH (security_invoker = true) AS SELECT s.*%s '
                   'FROM %s s%s', c.view_schema, c.view_name, cols, c.source, joins);
    v_relid := format('%I.%I', c.view_schema, c.view_name)::regclass::oid;
    UPDATE mmr._collection x SET view_relid = v_relid, view_schema = c.view_schema,
                                 view_name = c.view_name
     WHERE x.id = c.id;
    -- security_invoker: reading through the view checks the caller's rights on the source and
    -- embedding tables (and their RLS), so the view itself may be readable by everyone.
    EXECUTE format('GRANT SELECT ON %s TO PUBLIC', v_relid::regclass);
END
$$;
