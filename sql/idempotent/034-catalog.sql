-- Collections and spaces: the administrative API.

CREATE OR REPLACE FUNCTION mmr._check_name(p_what text, p_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_name IS NULL OR p_name = '' THEN
        RAISE EXCEPTION '% name must not be empty', p_what USING ERRCODE = 'invalid_name';
    END IF;
    IF btrim(p_name, E' \t\r\n\u00a0\u2000\u2001\u2002\u2003\u2007\u200b\u3000') = '' THEN
        RAISE EXCEPTION '% name must not be blank (only white space)', p_what
            USING ERRCODE = 'invalid_name', HINT = 'Choose a name with visible characters.';
    END IF;
    IF octet_length(p_name) > 63 THEN
        RAISE EXCEPTION '% name % is longer than 63 bytes', p_what, quote_literal(p_name)
            USING ERRCODE = 'invalid_name', HINT = 'Choose a shorter name.';
    END IF;
    IF p_name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION '% name % contains control characters', p_what, quote_literal(p_name)
            USING ERRCODE = 'invalid_name';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION mmr.create_collection(
    name text,
    source regclass,
    image_column text DEFAULT NULL,
    text_columns text[] DEFAULT NULL,
    image_kind text DEFAULT NULL,
    view_name text DEFAULT NULL,
    create_view boolean DEFAULT true)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_relkind char;
    v_keys name[];
    v_types regtype[];
    v_type regtype;
    v_kind text := image_kind;
    v_col text;
    v_id int;
    v_schema name;
    v_relname name;
    v_view text := view_name;
BEGIN
    PERFORM mmr._check_name('collection', name);
    IF source IS NULL THEN
        RAISE EXCEPTION 'source table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF EXISTS (SELECT 1 FROM mmr._collection c WHERE c.name = create_collection.name) THEN
        RAISE EXCEPTION 'collection % already exists', quote_literal(name)
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or drop it first with mmr.drop_collection(name).';
    END IF;
    SELECT c.relkind, n.nspname, c.relname INTO v_relkind, v_schema, v_relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    IF v_relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table (only ordinary and partitioned tables can be collections)',
                        source
            USING ERRCODE = 'wrong_object_type';
    END IF;

    -- Key types are stored as their base types (a domain resolved to the type under it): the
    -- queue and embedding tables, and every cast of a key, then never evaluate a domain's
    -- CHECK, which is user code (docs/security.md, "The worker's role").
    SELECT array_agg(a.attname ORDER BY k.ord), array_agg(mmr._base_type(a.atttypid) ORDER BY k.ord)
      INTO v_keys, v_types
      FROM pg_index i
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = source AND i.indisprimary;
    IF v_keys && ARRAY['embedding', 'content_hash', 'model_id', 'updated_at']::name[]
       OR EXISTS (SELECT 1 FROM unnest(v_keys) k WHERE k LIKE 'mmr\_%') THEN
        RAISE EXCEPTION 'a primary-key column of % is named like a column pg_mmretrieval adds (%)',
                        source, v_keys
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Key columns may not be named embedding, content_hash, model_id, '
                         'updated_at or mmr_*.';
    END IF;
    IF v_keys IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key', source
            USING ERRCODE = 'invalid_table_definition',
                  HINT = format('pg_mmretrieval identifies rows by their primary key: add one, '
                                'e.g. ALTER TABLE %s ADD PRIMARY KEY (id).', source);
    END IF;
    PERFORM mmr._citus_check_source(source, v_keys);  -- Citus hook (019-citus.sql)

    -- Keys travel as text and are cast back to their type: a cast from text to a type whose
    -- owner is not a superuser (an enum, a composite or range type of the application) could be
    -- a user-defined function, run by whoever casts (the worker, the sync trigger's owner).
    SELECT t INTO v_type FROM unnest(v_types) t
      JOIN pg_type y ON y.oid = t JOIN pg_roles r ON r.oid = y.typowner
     WHERE NOT r.rolsuper LIMIT 1;
    IF v_type IS NOT NULL THEN
        RAISE EXCEPTION 'primary-key type % of % is not a built-in type', v_type, source
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Key the table by a built-in type (int, bigint, text, uuid, ...) or a '
                         'domain over one: casts to types an application owns may run its code.';
    END IF;

    IF image_column IS NOT NULL THEN
        v_type := mmr._column_type(source, image_column);
        IF v_type IS NULL THEN
            RAISE EXCEPTION 'table % has no column % (image_column)', source,
                            quote_ident(image_column)
                USING ERRCODE = 'undefined_column';
        END IF;
        IF v_type = 'bytea'::regtype THEN
            IF coalesce(v_kind, 'bytea') <> 'bytea' THEN
                RAISE EXCEPTION 'image column % is bytea, so image_kind must be ''bytea'', not %',
                                quote_ident(image_column), quote_literal(v_kind)
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_kind := 'bytea';
        ELSIF v_type IN ('text'::regtype, 'character varying'::regtype) THEN
            v_kind := coalesce(v_kind, 'auto');
            IF v_kind NOT IN ('path', 'url', 'auto') THEN
                RAISE EXCEPTION 'image_kind % is not valid for text column %', quote_literal(v_kind),
                                quote_ident(image_column)
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Use ''path'' (file paths), ''url'' (http/https URLs) or ''auto''.';
            END IF;
        ELSE
            RAISE EXCEPTION 'image column % has type %, which is not supported', quote_ident(image_column),
                            v_type
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Use bytea (the encoded image file) or text (a file path or URL).';
        END IF;
    ELSIF image_kind IS NOT NULL THEN
        RAISE EXCEPTION 'image_kind is given but image_column is not'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF text_columns IS NOT NULL THEN
        IF (SELECT count(DISTINCT t) <> count(*) FROM unnest(text_columns) t) THEN
            RAISE EXCEPTION 'text_columns lists a column twice: %', text_columns
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOREACH v_col IN ARRAY text_columns LOOP
            v_type := mmr._column_type(source, v_col);
            IF v_type IS NULL THEN
                RAISE EXCEPTION 'table % has no column % (text_columns)', source, quote_ident(v_col)
                    USING ERRCODE = 'undefined_column';
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_type WHERE oid = v_type AND typcategory = 'S') THEN
                RAISE EXCEPTION 'text column % has type %, which is not supported',
                                quote_ident(v_col), v_type
                    USING ERRCODE = 'datatype_mismatch',
                          HINT = 'Use text or varchar (cast other types in a generated column).';
            END IF;
            IF v_col = image_column THEN
                RAISE EXCEPTION 'column % is both the image column and a text column',
                                quote_ident(v_col)
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
    END IF;

    IF create_view THEN
        v_view := coalesce(v_view, left(v_relname, 59) || '_mmr');
        PERFORM mmr._check_name('view', v_view);
        -- the source table's own schema, by oid (a name like "MyApp" must not be case-folded)
        IF EXISTS (SELECT 1 FROM pg_class k
                    WHERE k.relnamespace = (SELECT t.relnamespace FROM pg_class t
                                             WHERE t.oid = source)
                      AND k.relname = v_view) THEN
            RAISE EXCEPTION 'relation %.% already exists, so it cannot be the collection''s view',
                            quote_ident(v_schema), quote_ident(v_view)
                USING ERRCODE = 'duplicate_table',
                      HINT = 'pg_mmretrieval never replaces a relation it did not create: pass '
                             'view_name => ''another_name'', or create_view => false.';
        END IF;
    ELSE
        v_view := NULL;
    END IF;

    INSERT INTO mmr._collection (name, source, key_columns, key_types, image_column, image_kind,
                                 text_columns, view_schema, view_name)
    VALUES (name, source, v_keys, v_types, image_column, v_kind, coalesce(text_columns, '{}'),
            CASE WHEN v_view IS NULL THEN NULL ELSE v_schema END, v_view)
    RETURNING id INTO v_id;

    EXECUTE format(
        'CREATE TABLE mmr.%I (mmr_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, '
        'mmr_space_id int NOT NULL, %s, '
        'mmr_enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(), '
        'mmr_attempts int NOT NULL DEFAULT 0, '
        'mmr_not_before timestamptz NOT NULL DEFAULT ''-infinity'', '
        -- the worker's lease columns (sql/incremental/002-worker.sql adds them to older queues,
        -- in this order: keep both in step)
        'mmr_claimed_by text, mmr_claimed_until timestamptz, '
        'mmr_claims int NOT NULL DEFAULT 0, mmr_errors jsonb NOT NULL DEFAULT ''[]'')',
        mmr._queue_name(v_id), mmr._key_defs((SELECT c FROM mmr._collection c WHERE c.id = v_id)));
    EXECUTE format('CREATE INDEX %I ON mmr.%I (mmr_space_id, %s)', mmr._queue_name(v_id) || '_key',
                   mmr._queue_name(v_id),
                   mmr._key_list((SELECT c FROM mmr._collection c WHERE c.id = v_id)));
    -- Citus hook (019-citus.sql): the queue follows the source's distribution
    PERFORM mmr._citus_follow(source, format('mmr.%I', mmr._queue_name(v_id))::regclass);
    UPDATE mmr._collection c SET queue_table = format('mmr.%I', mmr._queue_name(v_id))::regclass
     WHERE c.id = v_id;

    PERFORM mmr._grant_worker_on(v_id);
    PERFORM mmr._rebuild_sync(v_id);
    PERFORM mmr._create_triggers(v_id);
    PERFORM mmr._rebuild_view(v_id);
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION mmr.add_space(
    collection text,
    space text,
    encoder text,
    source_column text,
    dimensions int,
    distance text DEFAULT 'cosine',
    storage text DEFAULT 'vector',
    model_id text DEFAULT NULL,
    new_version boolean DEFAULT false,
    backfill boolean DEFAULT true,
    hnsw_m int DEFAULT 16,
    hnsw_ef_construction int DEFAULT 64)
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    v_modality text;
    v_version int := 1;
    v_active boolean := true;
    v_id int;
    v_emb text;
    v_max int;
    v_queued bigint := 0;
BEGIN
    c := mmr._collection_row(collection);
    PERFORM mmr._citus_check_source(c.source, c.key_columns);  -- Citus hook (019-citus.sql)
    PERFORM mmr._check_name('space', space);
    IF encoder IS NULL OR btrim(encoder) = '' THEN
        RAISE EXCEPTION 'encoder must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name a registered encoder (`mmr plugins`), or ''external'' for vectors '
                         'your application computes.';
    END IF;
    IF distance IS NULL OR distance NOT IN ('cosine', 'l2', 'inner_product') THEN
        RAISE EXCEPTION 'distance % is not supported', quote_literal(distance)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''cosine'' (default), ''l2'' or ''inner_product''.';
    END IF;
    IF storage IS NULL OR storage NOT IN ('vector', 'halfvec', 'bit') THEN
        RAISE EXCEPTION 'storage % is not supported', quote_literal(storage)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''vector'', ''halfvec'' or ''bit'' (binary-quantised index, exact '
                         'rerank).';
    END IF;
    IF storage = 'bit' AND distance <> 'cosine' THEN
        RAISE EXCEPTION 'storage ''bit'' needs distance ''cosine'', not %', quote_literal(distance)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Binary quantisation keeps the sign of each dimension, which tracks the '
                         'angle between vectors: use cosine, or storage ''vector''/''halfvec''.';
    END IF;
    v_max := CASE storage WHEN 'vector' THEN 2000 ELSE 4000 END;
    IF dimensions IS NULL OR dimensions < 1 OR dimensions > v_max THEN
        RAISE EXCEPTION 'dimensions must be between 1 and % for % storage, not %', v_max, storage,
                        coalesce(dimensions::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'HNSW indexes vector up to 2000, halfvec up to 4000 dimensions (bit: '
                         '4000 here).';
    END IF;
    IF hnsw_m IS NULL OR hnsw_m NOT BETWEEN 2 AND 100
       OR hnsw_ef_construction IS NULL OR hnsw_ef_construction NOT BETWEEN 4 AND 1000
       OR hnsw_ef_construction < 2 * hnsw_m THEN
        RAISE EXCEPTION 'invalid HNSW parameters m=%, ef_construction=%', hnsw_m, hnsw_ef_construction
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'm must be 2..100 and ef_construction 4..1000 and at least 2*m.';
    END IF;

    IF encoder = 'external' THEN
        v_modality := 'external';
        IF source_column IS NOT NULL AND mmr._column_type(c.source, source_column) IS NULL THEN
            RAISE EXCEPTION 'table % has no column %', c.source, quote_ident(source_column)
                USING ERRCODE = 'undefined_column';
        END IF;
    ELSIF source_column IS NULL THEN
        RAISE EXCEPTION 'source_column must be given for encoder %', quote_literal(encoder)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the image column or one of the text columns of the collection.';
    ELSIF source_column = c.image_column THEN
        v_modality := 'image';
    ELSIF source_column = ANY (c.text_columns) THEN
        v_modality := 'text';
    ELSIF mmr._column_type(c.source, source_column) IS NULL THEN
        RAISE EXCEPTION 'table % has no column %', c.source, quote_ident(source_column)
            USING ERRCODE = 'undefined_column';
    ELSE
        RAISE EXCEPTION 'column % is not a content column of collection %', quote_ident(source_column),
                        quote_literal(collection)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Content columns: image %s, text %s (declared by mmr.create_collection).',
                                coalesce(quote_ident(c.image_column), 'none'),
                                coalesce(array_to_string(c.text_columns, ', '), 'none'));
    END IF;

    -- The encoder catalog (030-encoders.sql): a misspelled encoder, a wrong dimension or a
    -- modality the encoder lacks is refused here, not skipped later by every worker.
    IF v_modality <> 'external' THEN
        PERFORM mmr._check_encoder(encoder, dimensions, v_modality, source_column);
    END IF;

    IF mmr._column_type(c.source, space) IS NOT NULL AND c.view_name IS NOT NULL THEN
        RAISE EXCEPTION 'space name % is also a column of %, and both would be columns of the view',
                        quote_literal(space), c.source
            USING ERRCODE = 'duplicate_column', HINT = 'Choose another space name.';
    END IF;

    IF EXISTS (SELECT 1 FROM mmr._space s WHERE s.collection_id = c.id AND s.name = space) THEN
        IF NOT new_version THEN
            RAISE EXCEPTION 'space % already exists in collection %', quote_literal(space),
                            quote_literal(collection)
                USING ERRCODE = 'duplicate_object',
                      HINT = 'To change its model without downtime, add a shadow version with '
                             'new_version => true, fill it, then mmr.switch_space(...).';
        END IF;
        SELECT max(s.version) + 1 INTO v_version FROM mmr._space s
         WHERE s.collection_id = c.id AND s.name = space;
        v_active := false;
    END IF;

    INSERT INTO mmr._space (collection_id, name, version, active, encoder, source_column, modality,
                            dimensions, distance, storage, embedding_table, model_id, options)
    VALUES (c.id, space, v_version, v_active, encoder, source_column, v_modality, dimensions,
            distance, storage, 'mmr._collection'::regclass, model_id,
            jsonb_build_object('hnsw_m', hnsw_m, 'hnsw_ef_construction', hnsw_ef_construction))
    RETURNING id INTO v_id;
    v_emb := mmr._emb_name(v_id);

    EXECUTE format('CREATE TABLE mmr.%I (%s, embedding @extschema:vector@.%s(%s) NOT NULL, '
                   'content_hash bytea, model_id text NOT NULL, '
                   'updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (%s))',
                   v_emb, mmr._key_defs(c), mmr._column_storage(storage), dimensions,
                   mmr._key_list(c));
    -- Keep vectors inline (a 512-d vector is just over the TOAST threshold; detoasting made
    -- exact scans 4x slower in a pgvector report) whenever a row still fits a page.
    IF (storage IN ('vector', 'bit') AND dimensions <= 1900)
       OR (storage = 'halfvec' AND dimensions <= 3800) THEN
        EXECUTE format('ALTER TABLE mmr.%I ALTER COLUMN embedding SET STORAGE PLAIN', v_emb);
    END IF;
    EXECUTE mmr._hnsw_index_sql((SELECT x FROM mmr._space x WHERE x.id = v_id));
    -- Citus hook (019-citus.sql): co-located with the source, one HNSW index per shard
    PERFORM mmr._citus_follow(c.source, format('mmr.%I', v_emb)::regclass);
    -- An embedding row is visible exactly when the current role may read the source column
    -- (column privilege, checked once per query) and sees the source row (grants and row-level
    -- security of the source table): sql/idempotent/024-column-privileges.sql.
    PERFORM mmr._secure_embeddings(c, format('mmr.%I', v_emb)::regclass, source_column);
    UPDATE mmr._space s SET embedding_table = format('mmr.%I', v_emb)::regclass WHERE s.id = v_id;
    PERFORM mmr._grant_worker_on(c.id);

    PERFORM mmr._rebuild_sync(c.id);
    PERFORM mmr._rebuild_view(c.id);
    IF backfill AND v_modality <> 'external' THEN
        EXECUTE format('INSERT INTO mmr.%I (mmr_space_id, %s) SELECT $1, %s FROM %s s WHERE s.%I IS NOT NULL',
                       mmr._queue_name(c.id), mmr._key_list(c), mmr._key_list(c, 's'), c.source,
                       source_column)
          USING v_id;
        GET DIAGNOSTICS v_queued = ROW_COUNT;
        PERFORM pg_notify('mmr_queue', c.id::text);
    END IF;
    -- A shadow version, or a new space with a large backfill, is filled in bulk: its index is
    -- built once when the fill ends (sql/idempotent/028-bulk.sql).
    IF new_version AND NOT v_active
       OR mmr._bulk_worthwhile((SELECT x FROM mmr._space x WHERE x.id = v_id), v_queued) THEN
        PERFORM mmr._begin_bulk_fill((SELECT x FROM mmr._space x WHERE x.id = v_id));
    END IF;
    RETURN format('mmr.%I', v_emb)::regclass;
END
$$;

CREATE OR REPLACE FUNCTION mmr.switch_space(collection text, space text, version int DEFAULT NULL,
                                            force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    target mmr._space;
    pending bigint;
BEGIN
    c := mmr._collection_row(collection);
    IF version IS NULL THEN
        SELECT * INTO target FROM mmr._space s
         WHERE s.collection_id = c.id AND s.name = space AND NOT s.active
         ORDER BY s.version DESC LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'space % of collection % has no shadow version to switch to',
                            quote_literal(space), quote_literal(collection)
                USING ERRCODE = 'undefined_object',
                      HINT = 'Add one with mmr.add_space(..., new_version => true).';
        END IF;
    ELSE
        target := mmr._space_row(c.id, collection, space, version);
    END IF;
    IF target.active THEN
        RETURN;
    END IF;
    EXECUTE format('SELECT count(*) FROM %s WHERE mmr_space_id = $1', c.queue_table)
       INTO pending USING target.id;
    IF pending > 0 AND NOT force THEN
        RAISE EXCEPTION 'version % of space % is still filling: % items queued', target.version,
                        quote_literal(space), pending
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run `mmr worker` until the queue is empty, or pass force => true.';
    END IF;
    -- Lock the catalog rows so concurrent switches serialise; then flip in one transaction.
    PERFORM 1 FROM mmr._space s WHERE s.collection_id = c.id AND s.name = space FOR UPDATE;
    -- A version filled in bulk gets its index here, before it serves searches (028-bulk.sql).
    PERFORM mmr._finish_bulk_fill(target.id);
    UPDATE mmr._space s SET active = false WHERE s.collection_id = c.id AND s.name = space AND s.active;
    UPDATE mmr._space s SET active = true WHERE s.id = target.id;
    PERFORM mmr._rebuild_view(c.id);
END
$$;

CREATE OR REPLACE FUNCTION mmr._drop_space_row(s mmr._space)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
BEGIN
    SELECT * INTO STRICT c FROM mmr._collection WHERE id = s.collection_id;
    DELETE FROM mmr._space WHERE id = s.id;
    EXECUTE format('DELETE FROM %s WHERE mmr_space_id = $1', c.queue_table) USING s.id;
    PERFORM mmr._rebuild_sync(c.id);
    PERFORM mmr._rebuild_view(c.id);
    EXECUTE format('DROP TABLE IF EXISTS mmr.%I', mmr._emb_name(s.id));
END
$$;

CREATE OR REPLACE FUNCTION mmr.drop_space(collection text, space text, version int DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    s mmr._space;
BEGIN
    c := mmr._collection_row(collection);
    PERFORM mmr._citus_sequential(c.source);  -- Citus hook (019-citus.sql)
    IF version IS NULL THEN
        PERFORM mmr._space_row(c.id, collection, space, NULL)
          WHERE NOT EXISTS (SELECT 1 FROM mmr._space x WHERE x.collection_id = c.id AND x.name = space);
        FOR s IN SELECT * FROM mmr._space x WHERE x.collection_id = c.id AND x.name = space
                  ORDER BY x.active LOOP
            PERFORM mmr._drop_space_row(s);
        END LOOP;
        RETURN;
    END IF;
    s := mmr._space_row(c.id, collection, space, version);
    IF s.active AND EXISTS (SELECT 1 FROM mmr._space x
                             WHERE x.collection_id = c.id AND x.name = space AND x.id <> s.id) THEN
        RAISE EXCEPTION 'version % of space % is the active one', version, quote_literal(space)
            USING ERRCODE = 'object_in_use',
                  HINT = 'Switch to another version first (mmr.switch_space), or drop every '
                         'version by leaving version NULL.';
    END IF;
    PERFORM mmr._drop_space_row(s);
END
$$;

CREATE OR REPLACE FUNCTION mmr.drop_collection(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    s mmr._space;
    t text;
BEGIN
    c := mmr._collection_row(name);
    -- Only what mmr created: the view by its oid, the triggers calling this collection's sync
    -- function (whatever they are called now), the lexical index it recorded.
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = c.view_relid AND relkind = 'v') THEN
        EXECUTE format('DROP VIEW %s', c.view_relid::regclass);
    END IF;
    PERFORM mmr._citus_sequential(c.source);  -- Citus hook (019-citus.sql)
    PERFORM mmr._revoke_worker_on(c.id);
    t := mmr._citus_triggers(c.source, true);  -- Citus hook: DROP TRIGGER on a Citus table
    -- The source table may already be gone (DROP TABLE ... CASCADE took the triggers).
    FOR t IN SELECT g.tgname FROM pg_trigger g
              WHERE g.tgrelid = c.source AND NOT g.tgisinternal
                AND g.tgfoid = to_regprocedure(format('mmr.%I()', '_sync_' || c.id)) LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t, c.source);
    END LOOP;
    FOR t IN SELECT x.index_name::text FROM mmr._text_index x
              WHERE x.collection_id = c.id AND x.index_name IS NOT NULL
                AND EXISTS (SELECT 1 FROM pg_class WHERE oid = x.index_name) LOOP
        EXECUTE format('DROP INDEX %s', t);
    END LOOP;
    FOR s IN SELECT * FROM mmr._space x WHERE x.collection_id = c.id LOOP
        EXECUTE format('DROP TABLE IF EXISTS mmr.%I', mmr._emb_name(s.id));
    END LOOP;
    EXECUTE format('DROP TABLE IF EXISTS mmr.%I', mmr._queue_name(c.id));
    EXECUTE format('DROP FUNCTION IF EXISTS mmr.%I()', '_sync_' || c.id);
    DELETE FROM mmr._collection x WHERE x.id = c.id;
END
$$;

-- Re-create the view after columns were added to the source table.
CREATE OR REPLACE FUNCTION mmr.refresh_view(collection text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM mmr._rebuild_view((mmr._collection_row(collection)).id);
END
$$;
