-- Core helpers: catalog look-ups, SQL fragment builders for dynamic SQL, content hashes.
-- Identifiers always go through format('%I') or regclass; values through EXECUTE ... USING.

CREATE OR REPLACE FUNCTION mmr._collection_row(p_name text)
RETURNS mmr._collection
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
BEGIN
    IF p_name IS NULL THEN
        RAISE EXCEPTION 'collection name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO c FROM mmr._collection WHERE name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection % does not exist', quote_literal(p_name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'List collections with SELECT * FROM mmr.collections, or create one '
                         'with mmr.create_collection(name, source_table, ...).';
    END IF;
    RETURN c;
END
$$;

-- The space row: the active version, or the given version (active or shadow).
CREATE OR REPLACE FUNCTION mmr._space_row(p_collection_id int, p_collection text, p_space text,
                                          p_version int DEFAULT NULL)
RETURNS mmr._space
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s mmr._space;
    known text;
BEGIN
    IF p_space IS NULL THEN
        RAISE EXCEPTION 'space name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_version IS NULL THEN
        SELECT * INTO s FROM mmr._space
         WHERE collection_id = p_collection_id AND name = p_space AND active;
    ELSE
        SELECT * INTO s FROM mmr._space
         WHERE collection_id = p_collection_id AND name = p_space AND version = p_version;
    END IF;
    IF NOT FOUND THEN
        SELECT string_agg(DISTINCT quote_literal(name), ', ') INTO known
          FROM mmr._space WHERE collection_id = p_collection_id;
        RAISE EXCEPTION 'space % (version %) does not exist in collection %',
                        quote_literal(p_space), coalesce(p_version::text, 'active'),
                        quote_literal(p_collection)
            USING ERRCODE = 'undefined_object',
                  HINT = CASE WHEN known IS NULL
                              THEN 'The collection has no spaces yet: add one with mmr.add_space(...).'
                              ELSE 'Spaces of this collection: ' || known || '.' END;
    END IF;
    RETURN s;
END
$$;

-- "k1", "k2" (optionally prefixed by an alias).
CREATE OR REPLACE FUNCTION mmr._key_list(c mmr._collection, p_alias text DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(CASE WHEN p_alias IS NULL THEN format('%I', k)
                           ELSE format('%I.%I', p_alias, k) END, ', ' ORDER BY i)
      FROM unnest(c.key_columns) WITH ORDINALITY AS u(k, i)
$$;

-- l."k1" = r."k1" AND ...
CREATE OR REPLACE FUNCTION mmr._key_join(c mmr._collection, p_left text, p_right text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%I.%I = %I.%I', p_left, k, p_right, k), ' AND ' ORDER BY i)
      FROM unnest(c.key_columns) WITH ORDINALITY AS u(k, i)
$$;

-- "k1" int4, "k2" text (column definitions of the key)
CREATE OR REPLACE FUNCTION mmr._key_defs(c mmr._collection)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%I %s NOT NULL', k, t::text), ', ' ORDER BY i)
      FROM unnest(c.key_columns, c.key_types) WITH ORDINALITY AS u(k, t, i)
$$;

-- The key as jsonb: the plain value for one key column, an object for a composite key.
CREATE OR REPLACE FUNCTION mmr._key_json(c mmr._collection, p_alias text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN cardinality(c.key_columns) = 1
                THEN format('pg_catalog.to_jsonb(%I.%I)', p_alias, c.key_columns[1])
                ELSE 'pg_catalog.jsonb_build_object(' ||
                     (SELECT string_agg(format('%L, %I.%I', k, p_alias, k), ', ' ORDER BY i)
                        FROM unnest(c.key_columns) WITH ORDINALITY AS u(k, i)) || ')'
           END
$$;

-- Typed key columns from a jsonb expression (the inverse of _key_json).
CREATE OR REPLACE FUNCTION mmr._key_from_json(c mmr._collection, p_expr text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN cardinality(c.key_columns) = 1
                THEN format('(%s #>> ''{}'')::%s AS %I', p_expr, c.key_types[1]::text,
                            c.key_columns[1])
                ELSE (SELECT string_agg(format('(%s ->> %L)::%s AS %I', p_expr, k, t::text, k),
                                        ', ' ORDER BY i)
                        FROM unnest(c.key_columns, c.key_types) WITH ORDINALITY AS u(k, t, i))
           END
$$;

-- Name of the per-space embedding table and per-collection queue table (schema mmr).
CREATE OR REPLACE FUNCTION mmr._emb_name(p_space_id int)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '_emb_' || p_space_id $$;

CREATE OR REPLACE FUNCTION mmr._queue_name(p_collection_id int)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '_queue_' || p_collection_id $$;

-- Distance operator, operator class and score expression of a space.
CREATE OR REPLACE FUNCTION mmr._distance_op(p_distance text)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_distance WHEN 'cosine' THEN '<=>' WHEN 'l2' THEN '<->'
                           WHEN 'inner_product' THEN '<#>' END
$$;

CREATE OR REPLACE FUNCTION mmr._opclass(p_storage text, p_distance text)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_storage || CASE p_distance WHEN 'cosine' THEN '_cosine_ops'
                                        WHEN 'l2' THEN '_l2_ops'
                                        WHEN 'inner_product' THEN '_ip_ops' END
$$;

-- Score (higher is better) from a distance expression.
CREATE OR REPLACE FUNCTION mmr._score_expr(p_distance text, p_dist_expr text)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_distance WHEN 'cosine' THEN format('(1 - (%s))::float8', p_dist_expr)
                           ELSE format('(-(%s))::float8', p_dist_expr) END
$$;

-- Type name and category of a column of a relation (NULL when absent).
CREATE OR REPLACE FUNCTION mmr._column_type(p_rel regclass, p_column text)
RETURNS regtype LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT atttypid::regtype FROM pg_attribute
     WHERE attrelid = p_rel AND attname = p_column AND attnum > 0 AND NOT attisdropped
$$;

-- The active version of a space, for the search fast paths: all fields NULL when the names do
-- not resolve or its statement cache is not built (the general path then raises the error).
CREATE OR REPLACE FUNCTION mmr._active_space(p_collection text, p_space text)
RETURNS mmr._space
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT x.* FROM mmr._space x JOIN mmr._collection y ON y.id = x.collection_id
     WHERE y.name = p_collection AND x.name = p_space AND x.active AND x.statements IS NOT NULL;
END;

-- Raise hnsw.ef_search for the current call to the rows one index scan must return (or to the
-- caller's ef_search); the search functions' SET clauses restore it when they return.
CREATE OR REPLACE FUNCTION mmr._raise_ef_search(p_rows int, p_ef_search int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_rows > 40 OR p_ef_search IS NOT NULL THEN
        PERFORM set_config('hnsw.ef_search', greatest(p_rows, coalesce(p_ef_search, 40))::text,
                           true);
    END IF;
END
$$;

-- The fast paths scan without pgvector's iterative scan (it costs ~10 % of a plain scan).  An
-- unfiltered scan returns fewer rows than asked only when index entries among the ef_search
-- nearest are invisible (deleted or uncommitted rows) or the table is small; the fast path then
-- switches iterative scans on for the rest of the call (the caller's SET clause restores it) and
-- runs its statement again past the rows it already returned.  The first ef_search candidates of
-- a strict-order iterative scan are those of the plain scan, in the same order, and a STABLE
-- function sees one snapshot, so the offset skips exactly those rows.
CREATE OR REPLACE FUNCTION mmr._top_up_scan()
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT set_config('hnsw.iterative_scan', 'strict_order', true);
END;

CREATE OR REPLACE FUNCTION mmr._offset_sql(p_sql text, p_offset bigint)
RETURNS text
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 'SELECT * FROM (' || p_sql || ') x OFFSET ' || p_offset;
END;

-- One vector leg of a fast path (a space's cached leg_agg statement): the keys and scores of the
-- p_n nearest rows, best first; a short scan is run again past invisible index entries with
-- iterative scans on (mmr._top_up_scan).  Empty arrays when the space has no rows.
CREATE OR REPLACE FUNCTION mmr._leg_agg(p_sql text, p_query @extschema:vector@.vector, p_n int,
                                        OUT keys jsonb[], OUT scores float8[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE p_sql INTO keys, scores USING p_query, p_n;
    IF coalesce(cardinality(keys), 0) < p_n AND current_setting('hnsw.iterative_scan') = 'off' THEN
        PERFORM mmr._top_up_scan();
        EXECUTE p_sql INTO keys, scores USING p_query, p_n;
    END IF;
    keys := coalesce(keys, '{}');
    scores := coalesce(scores, '{}');
END
$$;

-- The content hash stored with every embedding: sha256 of the cell, i.e. of the UTF-8 text
-- or of the bytea.  For a path or URL image column it is the hash of the path/URL string:
-- replacing the file behind an unchanged path is not seen (re-queue it with `mmr backfill
-- --force`).  Plain SQL with qualified names: inlinable and usable in indexes.
CREATE OR REPLACE FUNCTION mmr.content_hash(content text)
RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to(content, 'UTF8'));

CREATE OR REPLACE FUNCTION mmr.content_hash(content bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.sha256(content);

-- Search parameters (a jsonb object of named values): read one, with its default.
-- A number from params, or the default; a clear error for a non-number.
CREATE OR REPLACE FUNCTION mmr._num(p jsonb, p_name text, p_default float8)
RETURNS float8
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p IS NULL OR NOT p ? p_name OR jsonb_typeof(p -> p_name) = 'null' THEN
        RETURN p_default;
    END IF;
    IF jsonb_typeof(p -> p_name) <> 'number' THEN
        RAISE EXCEPTION 'parameter % must be a number, not %', p_name, p -> p_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (p ->> p_name)::float8;
END
$$;

CREATE OR REPLACE FUNCTION mmr._bool(p jsonb, p_name text, p_default boolean)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p IS NULL OR NOT p ? p_name OR jsonb_typeof(p -> p_name) = 'null' THEN
        RETURN p_default;
    END IF;
    IF jsonb_typeof(p -> p_name) <> 'boolean' THEN
        RAISE EXCEPTION 'parameter % must be true or false, not %', p_name, p -> p_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (p ->> p_name)::boolean;
END
$$;
