-- Schema changes of registered tables (issue 12, item 7).  The catalog names columns; the
-- generated sync function, the statement cache, the queue and embedding tables and the view
-- name them too.  An event trigger (ddl_command_end) checks every ALTER TABLE of a registered
-- table, in the same transaction:
--   * a renamed key, image, text or space column is FOLLOWED: catalog, the key columns of the
--     queue, embedding and multi-vector tables, the keys of dead letters, the sync function,
--     the statement cache and the view's column are renamed with it;
--   * dropping a registered column, changing a key column's type, or changing a content column
--     to a type its space cannot read is REFUSED (the ALTER fails and is rolled back).
-- Any other change (other columns, table or schema rename: the catalog holds the table's oid)
-- passes untouched; DDL on unregistered tables returns after one catalog look-up.

-- Attribute numbers of registered columns (sql/incremental/004-50-ddl.sql), kept from the names.
CREATE OR REPLACE FUNCTION mmr._attnums(p_rel regclass, p_columns name[])
RETURNS int2[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(a.attnum ORDER BY u.i), '{}')
      FROM unnest(p_columns) WITH ORDINALITY u(col, i)
      LEFT JOIN pg_attribute a ON a.attrelid = p_rel AND a.attname = u.col AND a.attnum > 0
                              AND NOT a.attisdropped
$$;

CREATE OR REPLACE FUNCTION mmr._collection_attnums_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.key_columns IS DISTINCT FROM OLD.key_columns
       OR NEW.image_column IS DISTINCT FROM OLD.image_column
       OR NEW.text_columns IS DISTINCT FROM OLD.text_columns THEN
        NEW.key_attnums := mmr._attnums(NEW.source, NEW.key_columns);
        NEW.image_attnum := (mmr._attnums(NEW.source, ARRAY[NEW.image_column]::name[]))[1];
        NEW.text_attnums := mmr._attnums(NEW.source, NEW.text_columns);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER _collection_attnums
    BEFORE INSERT OR UPDATE ON mmr._collection
    FOR EACH ROW EXECUTE FUNCTION mmr._collection_attnums_trigger();

CREATE OR REPLACE FUNCTION mmr._space_attnums_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.source_column IS DISTINCT FROM OLD.source_column THEN
        NEW.source_attnum := (SELECT (mmr._attnums(c.source, ARRAY[NEW.source_column]::name[]))[1]
                                FROM mmr._collection c WHERE c.id = NEW.collection_id);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER _space_attnums
    BEFORE INSERT OR UPDATE ON mmr._space
    FOR EACH ROW EXECUTE FUNCTION mmr._space_attnums_trigger();

-- The current name of registered column p_attnum of collection c, after an ALTER TABLE; raises
-- when it was dropped.  p_role says what the column is, for the message.
CREATE OR REPLACE FUNCTION mmr._guard_column(c mmr._collection, p_attnum int2, p_name name,
                                             p_role text)
RETURNS name
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name name;
BEGIN
    IF p_attnum IS NULL THEN
        RETURN p_name;  -- not resolved when registered (older catalog): nothing to compare
    END IF;
    SELECT attname INTO v_name FROM pg_attribute
     WHERE attrelid = c.source AND attnum = p_attnum AND NOT attisdropped;
    IF v_name IS NULL THEN
        RAISE EXCEPTION 'column % of table % is the % of collection % and cannot be dropped',
                        quote_ident(p_name), c.source, p_role, quote_literal(c.name)
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = CASE WHEN p_role LIKE 'key%'
                              THEN format('Drop the collection first (SELECT mmr.drop_collection(%L)), '
                                          'then register the table again.', c.name)
                              ELSE format('Drop the spaces that read it (mmr.drop_space) or the '
                                          'collection (SELECT mmr.drop_collection(%L)) first, then '
                                          'register the table again without this column.', c.name)
                         END;
    END IF;
    RETURN v_name;
END
$$;

-- Raise unless column p_attnum of the collection's table has an acceptable type (p_ok: one of
-- p_types, or any string type when p_types is NULL).
CREATE OR REPLACE FUNCTION mmr._guard_type(c mmr._collection, p_attnum int2, p_types regtype[],
                                           p_role text, p_need text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
BEGIN
    IF p_attnum IS NULL THEN
        RETURN;
    END IF;
    SELECT x.attname, x.atttypid, format_type(x.atttypid, x.atttypmod) AS typ, t.typcategory
      INTO a FROM pg_attribute x JOIN pg_type t ON t.oid = x.atttypid
     WHERE x.attrelid = c.source AND x.attnum = p_attnum;
    IF (CASE WHEN p_types IS NULL THEN a.typcategory <> 'S'
             ELSE a.atttypid::regtype <> ALL (p_types) END) THEN
        RAISE EXCEPTION 'column % of table % is the % of collection %, which cannot become %',
                        quote_ident(a.attname), c.source, p_role, quote_literal(c.name), a.typ
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('It must stay %s. To change it, drop the collection first '
                                '(SELECT mmr.drop_collection(%L)), alter the table, then register '
                                'it again.', p_need, c.name);
    END IF;
END
$$;

-- Check one registered table after an ALTER TABLE and follow renames of its registered columns.
CREATE OR REPLACE FUNCTION mmr._follow_columns(c mmr._collection)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name name;
    keys name[] := c.key_columns;
    texts name[] := c.text_columns;
    image name := c.image_column;
    key_renames jsonb := '{}';
    renamed boolean := false;
    s mmr._space;
    t regclass;
    i int;
BEGIN
    FOR i IN 1 .. cardinality(c.key_columns) LOOP
        v_name := mmr._guard_column(c, c.key_attnums[i], c.key_columns[i], 'key column');
        PERFORM mmr._guard_type(c, c.key_attnums[i], ARRAY[c.key_types[i]], 'key column',
                                format('%s (the queue and embedding tables store the key)',
                                       c.key_types[i]));
        IF v_name <> c.key_columns[i] THEN
            IF v_name IN ('embedding', 'content_hash', 'model_id', 'updated_at', 'part')
               OR v_name LIKE 'mmr\_%' THEN
                RAISE EXCEPTION 'key column % of collection % cannot be renamed to %',
                                quote_ident(c.key_columns[i]), quote_literal(c.name),
                                quote_ident(v_name)
                    USING ERRCODE = 'invalid_table_definition',
                          HINT = 'pg_mmretrieval''s tables have columns of that name: key columns '
                                 'may not be named embedding, content_hash, model_id, updated_at, '
                                 'part or mmr_*.';
            END IF;
            key_renames := key_renames || jsonb_build_object(c.key_columns[i], v_name);
            keys[i] := v_name;
        END IF;
    END LOOP;
    IF c.image_column IS NOT NULL THEN
        image := mmr._guard_column(c, c.image_attnum, c.image_column, 'image column');
        PERFORM mmr._guard_type(c, c.image_attnum,
                                CASE WHEN c.image_kind = 'bytea' THEN '{bytea}'::regtype[]
                                     ELSE '{text,varchar}'::regtype[] END,
                                'image column',
                                CASE WHEN c.image_kind = 'bytea' THEN 'bytea'
                                     ELSE 'text or varchar' END);
    END IF;
    FOR i IN 1 .. coalesce(cardinality(c.text_columns), 0) LOOP
        texts[i] := mmr._guard_column(c, c.text_attnums[i], c.text_columns[i], 'text column');
        PERFORM mmr._guard_type(c, c.text_attnums[i], NULL, 'text column',
                                'a string type (text, varchar)');
    END LOOP;
    FOR s IN SELECT * FROM mmr._space x WHERE x.collection_id = c.id AND x.source_attnum IS NOT NULL
              ORDER BY x.id LOOP
        PERFORM mmr._guard_column(c, s.source_attnum, s.source_column,
                               format('source column of space %s', quote_literal(s.name)));
    END LOOP;

    renamed := keys IS DISTINCT FROM c.key_columns OR texts IS DISTINCT FROM c.text_columns
               OR image IS DISTINCT FROM c.image_column;
    IF renamed THEN
        UPDATE mmr._collection x SET key_columns = keys, text_columns = texts, image_column = image
         WHERE x.id = c.id;
        -- the internal tables carry the key under the source's column names
        FOR t IN SELECT c.queue_table
                 UNION ALL SELECT x.embedding_table FROM mmr._space x WHERE x.collection_id = c.id
                 UNION ALL SELECT m.embedding_table FROM mmr._multivector m
                            WHERE m.collection_id = c.id AND m.embedding_table IS NOT NULL LOOP
            FOR i IN 1 .. cardinality(keys) LOOP
                IF keys[i] <> c.key_columns[i] THEN
                    EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', t, c.key_columns[i],
                                   keys[i]);
                END IF;
            END LOOP;
        END LOOP;
        IF cardinality(keys) > 1 AND key_renames <> '{}' THEN
            -- composite keys are jsonb objects named by column
            UPDATE mmr._failed f
               SET key = (SELECT jsonb_object_agg(coalesce(key_renames ->> e.key, e.key), e.value)
                            FROM jsonb_each(f.key) e)
             WHERE f.collection_id = c.id AND jsonb_typeof(f.key) = 'object';
        END IF;
    END IF;
    -- spaces: the new column names (the statement cache is recomputed by its trigger)
    UPDATE mmr._space x SET source_column = a2.attname
      FROM pg_attribute a2
     WHERE x.collection_id = c.id AND a2.attrelid = c.source AND a2.attnum = x.source_attnum
       AND a2.attname <> x.source_column;
    IF renamed THEN
        UPDATE mmr._space x SET statements = NULL WHERE x.collection_id = c.id;
        PERFORM mmr._rebuild_sync(c.id);
    END IF;
    PERFORM mmr._follow_view(c.id);
END
$$;

-- The collection's view names the source's columns as they were when it was created (SELECT s.*
-- is expanded then); rename its columns to follow the table's.  View column i is the table's
-- i-th column: a column in the view cannot be dropped from the table while the view exists, and
-- added columns come after the others (they join the view on mmr.refresh_view).  Renaming keeps
-- the view's oid, its grants and the user's objects that depend on it.
CREATE OR REPLACE FUNCTION mmr._follow_view(p_collection_id int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    r record;
BEGIN
    SELECT * INTO STRICT c FROM mmr._collection WHERE id = p_collection_id;
    IF c.view_name IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = c.view_relid) THEN
        -- ALTER TABLE ... DROP COLUMN ... CASCADE took the view: create it again when its name
        -- is still free (never over someone else's relation)
        IF NOT EXISTS (SELECT 1 FROM pg_class v JOIN pg_namespace n ON n.oid = v.relnamespace
                        WHERE n.nspname = c.view_schema AND v.relname = c.view_name) THEN
            BEGIN
                PERFORM mmr._rebuild_view(c.id);
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'the view of collection % could not be created again: %',
                             quote_literal(c.name), SQLERRM
                    USING HINT = 'Run mmr.refresh_view(collection) once the cause is fixed.';
            END;
        END IF;
        RETURN;
    END IF;
    FOR r IN WITH v AS (SELECT attname, row_number() OVER (ORDER BY attnum) AS i FROM pg_attribute
                         WHERE attrelid = c.view_relid AND attnum > 0 AND NOT attisdropped),
                  s AS (SELECT attname, row_number() OVER (ORDER BY attnum) AS i FROM pg_attribute
                         WHERE attrelid = c.source AND attnum > 0 AND NOT attisdropped)
             SELECT v.attname AS old, s.attname AS new
               FROM v JOIN s USING (i)
              WHERE v.i <= (SELECT count(*) FROM v)
                           - (SELECT count(*) FROM mmr._space x
                               WHERE x.collection_id = c.id AND x.active)
                AND v.attname <> s.attname
              ORDER BY v.i LOOP
        BEGIN
            EXECUTE format('ALTER VIEW %s RENAME COLUMN %I TO %I', c.view_relid::regclass, r.old,
                           r.new);
        EXCEPTION WHEN duplicate_column THEN
            RAISE EXCEPTION 'column % of table % cannot be renamed to %: the collection view % '
                            'already has a column of that name', quote_ident(r.old), c.source,
                            quote_ident(r.new), c.view_relid::regclass
                USING ERRCODE = 'duplicate_column',
                      HINT = 'A space of that name is a column of the view: choose another column '
                             'name.';
        END;
    END LOOP;
END
$$;

-- The event trigger function.  SECURITY DEFINER (owned by the installing superuser): the role
-- altering its own table needs no rights on the catalog or the queue and embedding tables.  It
-- reads only what pg_event_trigger_ddl_commands() reports and the catalog; every name reaches
-- SQL through %I or regclass.
CREATE OR REPLACE FUNCTION mmr._ddl_guard()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
BEGIN
    FOR c IN SELECT * FROM mmr._collection x
              WHERE x.source::oid IN (SELECT d.objid FROM pg_event_trigger_ddl_commands() d
                                       WHERE d.classid = 'pg_class'::regclass
                                         AND d.command_tag = 'ALTER TABLE')
              ORDER BY x.id LOOP
        PERFORM mmr._follow_columns(c);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION mmr._ddl_guard() FROM PUBLIC;

-- Event triggers need a superuser.  Another role installs without the guard (a NOTICE says
-- so): schema changes of registered tables are then the administrator's to avoid (docs/security.md).
DO $$
DECLARE
    fn oid;
BEGIN
    SELECT e.evtfoid INTO fn FROM pg_event_trigger e WHERE e.evtname = 'mmr_ddl_guard';
    IF FOUND AND fn <> 'mmr._ddl_guard()'::regprocedure THEN
        RAISE EXCEPTION 'event trigger mmr_ddl_guard exists but was not created by pg_mmretrieval'
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Rename or drop that event trigger, then run `mmr db upgrade` again.';
    ELSIF FOUND THEN
        RETURN;
    ELSIF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'pg_mmretrieval: not creating the schema-change guard (event trigger '
                     'mmr_ddl_guard): only a superuser can create event triggers'
            USING HINT = 'Renaming or dropping a registered column then breaks writes to that '
                         'table; run `mmr db upgrade` once as a superuser to add the guard.';
    ELSE
        CREATE EVENT TRIGGER mmr_ddl_guard ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE')
            EXECUTE FUNCTION mmr._ddl_guard();
    END IF;
END
$$;
