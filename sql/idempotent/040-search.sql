-- Plain vector search, external embeddings, and the catalog views.

-- The elements of a jsonb array as text (NULL elements as NULL), for a filter's in / not_in.
CREATE OR REPLACE FUNCTION mmr._jsonb_texts(p jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT pg_catalog.jsonb_array_elements_text(p))
$$;

-- Translate a jsonb filter into a WHERE clause over alias s (the source table).
--   {"col": value}                       col = value      (null: col IS NULL)
--   {"col": {"<": 5, ">=": 1}}            comparisons: = != <> < <= > >=
--   {"col": {"in": [..]}}, {"not_in": [..]}, {"is_null": true|false}
-- Values stay in the jsonb parameter ($3) and are cast to the column's type: no SQL is ever
-- built from them.
CREATE OR REPLACE FUNCTION mmr._filter_sql(c mmr._collection, p_filter jsonb, p_param text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col text;
    val jsonb;
    op text;
    arg jsonb;
    typ text;
    parts text[] := '{}';
BEGIN
    IF p_filter IS NULL OR p_filter = '{}'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_filter) <> 'object' THEN
        RAISE EXCEPTION 'filter must be a JSON object of column conditions, not %', jsonb_typeof(p_filter)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"price": {"<": 50}, "category": "shoes"}.';
    END IF;
    FOR col, val IN SELECT * FROM jsonb_each(p_filter) LOOP
        -- Values are cast to the column's base type, never to a domain: a domain's CHECK is
        -- the table owner's code and must not run as whoever searches (issue 12, item 1).
        SELECT CASE WHEN t.typtype = 'd'
                    THEN format_type(mmr._base_type(a.atttypid), t.typtypmod)
                    ELSE format_type(a.atttypid, a.atttypmod) END
          INTO typ FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = c.source AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
        IF typ IS NULL THEN
            RAISE EXCEPTION 'filter names column %, which table % does not have', quote_ident(col),
                            c.source
                USING ERRCODE = 'undefined_column';
        END IF;
        IF jsonb_typeof(val) = 'null' THEN
            parts := parts || format('s.%I IS NULL', col);
        ELSIF jsonb_typeof(val) = 'array' THEN
            RAISE EXCEPTION 'filter %: a list where a single value is expected', col
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('To match any of several values write {%s: {"in": %s}}; '
                                    'for one value, {%s: value}.', to_jsonb(col), val,
                                    to_jsonb(col));
        ELSIF jsonb_typeof(val) <> 'object' THEN
            parts := parts || format('s.%I = (%s -> %L ->> 0)::%s', col, p_param, col, typ);
        ELSE
            FOR op, arg IN SELECT * FROM jsonb_each(val) LOOP
                IF op IN ('=', '!=', '<>', '<', '<=', '>', '>=') THEN
                    IF jsonb_typeof(arg) NOT IN ('string', 'number', 'boolean') THEN
                        RAISE EXCEPTION 'filter %: operator % needs a scalar value', col, op
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    parts := parts || format('s.%I %s (%s -> %L ->> %L)::%s', col, op, p_param,
                                             col, op, typ);
                ELSIF op IN ('in', 'not_in') THEN
                    IF jsonb_typeof(arg) <> 'array' THEN
                        RAISE EXCEPTION 'filter %: operator % needs an array', col, op
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    -- mmr._jsonb_texts is IMMUTABLE: with the filter known, the planner folds
                    -- the list into a constant and estimates its rows (mmr._filter_plan)
                    parts := parts || format(
                        CASE op WHEN 'in' THEN 's.%I = ANY (mmr._jsonb_texts(%s -> %L -> %L)::%s[])'
                                ELSE 's.%I <> ALL (mmr._jsonb_texts(%s -> %L -> %L)::%s[])' END,
                        col, p_param, col, op, typ);
                ELSIF op = 'is_null' THEN
                    IF jsonb_typeof(arg) <> 'boolean' THEN
                        RAISE EXCEPTION 'filter %: is_null needs true or false', col
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    parts := parts || format(CASE WHEN arg::text = 'true' THEN 's.%I IS NULL'
                                                  ELSE 's.%I IS NOT NULL' END, col);
                ELSE
                    RAISE EXCEPTION 'filter %: unknown operator %', col, quote_literal(op)
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Operators: = != < <= > >= in not_in is_null.';
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    RETURN array_to_string(parts, ' AND ');
END
$$;

-- The SQL text of a search over one space (mmr._search_sql) with the query vector given by
-- expression p_q (a parameter, or a column of a lateral join: mmr.search_batch); $2 k, $3 filter.
-- Unfiltered, and under a broad filter, it keeps the only shape pgvector's HNSW index serves:
-- ORDER BY embedding <op> q LIMIT $2.  Under a selective filter (mmr._filter_plan) the rows
-- that pass are scored exactly (mmr._filtered_from, 045-filter-plan.sql), best score first.
-- An unfiltered 'bit' space (issue 17, item 2) takes mmr._scan_rows(s, $2) candidates from its
-- Hamming index over binary_quantize(embedding)::bit(d) and reranks them exactly on the full
-- vectors (pgvector's documented binary quantisation with re-ranking); a filtered one is scored
-- exactly over the rows the filter's plan reads.
CREATE OR REPLACE FUNCTION mmr._space_search_sql(c mmr._collection, s mmr._space, p_filter jsonb,
                                                 p_q text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    op text := mmr._distance_op(s.distance);
    qexpr text := CASE s.storage WHEN 'halfvec'
                       THEN format('%s::@extschema:vector@.halfvec(%s)', p_q, s.dimensions)
                       ELSE p_q END;
    dist text;
BEGIN
    dist := format('e.embedding OPERATOR(@extschema:vector@.%s) %s', op, qexpr);
    IF p_filter IS NULL AND s.storage = 'bit' THEN
        RETURN format('SELECT x.key, %s AS score FROM (SELECT %s AS key, %s AS dist FROM %s e '
                      'ORDER BY @extschema:vector@.binary_quantize(e.embedding)::bit(%s) '
                      'OPERATOR(@extschema:vector@.<~>) '
                      '@extschema:vector@.binary_quantize(%s)::bit(%s) LIMIT %s) x '
                      'ORDER BY x.dist LIMIT $2',
                      mmr._score_expr(s.distance, 'x.dist'), mmr._key_json(c, 'e'), dist,
                      s.embedding_table, s.dimensions, p_q, s.dimensions,
                      format('greatest($2, least($2 * %s, 1000))', mmr._bit_oversample()));
    END IF;
    IF p_filter IS NULL THEN
        RETURN format('SELECT %s AS key, %s AS score FROM %s e ORDER BY %s LIMIT $2',
                      mmr._key_json(c, 'e'), mmr._score_expr(s.distance, dist), s.embedding_table, dist);
    END IF;
    -- re-sorted: a filter's index plan scans in pgvector's relaxed order (mmr._prepare_search)
    RETURN format('SELECT x.key, x.score FROM (SELECT %s AS key, %s AS score FROM %s ORDER BY %s '
                  'LIMIT $2) x ORDER BY x.score DESC',
                  mmr._key_json(c, 'e'), mmr._score_expr(s.distance, dist),
                  mmr._filtered_from(c, s, p_filter), dist);
END
$$;

-- The SQL text of a search over one space: $1 query vector, $2 k, $3 filter.
CREATE OR REPLACE FUNCTION mmr._search_sql(c mmr._collection, s mmr._space, p_filter jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT mmr._space_search_sql(c, s, p_filter, '$1') $$;

-- Validate search arguments and set the index scan settings for this transaction step.  With
-- a filter (and its collection c), the filter's plan (mmr._filter_plan) raises ef_search for the
-- index plan unless the caller set it.
DROP FUNCTION IF EXISTS mmr._prepare_search(mmr._space, @extschema:vector@.vector, int, int, int);

CREATE OR REPLACE FUNCTION mmr._prepare_search(s mmr._space, p_query @extschema:vector@.vector,
                                               p_k int, p_ef_search int, p_max_scan_tuples int,
                                               c mmr._collection DEFAULT NULL,
                                               p_filter jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fp record;
    filter_ef int;
    relaxed boolean := false;
BEGIN
    PERFORM mmr._check_vector(p_query, s.dimensions, s.distance, 'the query vector');
    PERFORM mmr._check_limit('k', p_k);
    IF p_ef_search IS NOT NULL THEN
        PERFORM mmr._check_limit('ef_search', p_ef_search);
    END IF;
    IF p_max_scan_tuples IS NOT NULL THEN
        PERFORM mmr._check_limit('max_scan_tuples', p_max_scan_tuples);
    END IF;
    -- ef_search bounds how many rows one scan returns: never below k.  Iterative scans keep
    -- returning rows under a selective filter, up to max_scan_tuples visited tuples.
    -- A filter's index plan (mmr._filter_plan): ef_search raised with the filter's selectivity,
    -- and pgvector's relaxed order (the statements re-sort the rows they take), which keeps
    -- more of the nearest passing rows than strict order under a selective filter (measured,
    -- docs/retrieval.md "Filtered search").
    IF p_filter IS NOT NULL AND p_filter <> '{}'::jsonb THEN
        SELECT * INTO fp FROM mmr._filter_plan(c, p_filter);
        filter_ef := fp.ef_search;
        relaxed := NOT fp.exact;
    END IF;
    PERFORM mmr._raise_ef_search(mmr._scan_rows(s, p_k), coalesce(p_ef_search, filter_ef));
    PERFORM set_config('hnsw.iterative_scan',
                       CASE WHEN relaxed THEN 'relaxed_order' ELSE 'strict_order' END, true);
    IF p_max_scan_tuples IS NOT NULL THEN
        PERFORM set_config('hnsw.max_scan_tuples', p_max_scan_tuples::text, true);
    END IF;
END
$$;

-- The one condition on max_scan_tuples and the session under which a search may take its fast
-- path (the cached statement; without filter or reranker, which each search checks itself):
-- max_scan_tuples unset or equal to its default (20000, the functions' SET clause), so that
-- passing a default value never changes the path; and the fast paths not switched off for the
-- session with `SET mmr.fast_path = off` (tests compare both paths on the same data this way).
-- The native module (native/pg_mmretrieval.c) applies the same condition.
CREATE OR REPLACE FUNCTION mmr._fast_path_allowed(p_max_scan_tuples int)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(p_max_scan_tuples, 20000) = 20000
           AND coalesce(pg_catalog.current_setting('mmr.fast_path', true), '')
               NOT IN ('off', 'false', '0');
END;

-- Plain search.  Its first signature (7 arguments) is replaced by this one (reranking added);
-- existing calls keep working because the new arguments have defaults.
DROP FUNCTION IF EXISTS mmr.search(text, text, @extschema:vector@.vector, int, jsonb, int, int);

-- mmr.search's reference implementation and general path.  mmr.search itself is created from
-- it by 089-native.sql: the native fast path (native/pg_mmretrieval.c), which hands every call
-- that is not the plain fast path to this function, or, without the native library, a copy of
-- this function under the public name.
CREATE OR REPLACE FUNCTION mmr._search_plpgsql(
    collection text,
    space text,
    query @extschema:vector@.vector,
    k int DEFAULT 10,
    filter jsonb DEFAULT NULL,
    ef_search int DEFAULT NULL,
    max_scan_tuples int DEFAULT NULL,
    rerank text DEFAULT NULL,
    rerank_depth int DEFAULT NULL,
    rerank_params jsonb DEFAULT NULL)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- The SET clauses scope the index settings to the call: nothing leaks in or out.  Iterative
-- scans are off unless needed (filters; see mmr._prepare_search and the fast path's top-up):
-- they cost ~10 % of a plain HNSW scan.
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection;
    s mmr._space;
    p mmr._search_plan;
    got bigint;
    more bigint;
BEGIN
    -- Fast path (no filter, no reranker, valid arguments): the cached statement of the space
    -- (mmr._space.statements), one catalog look-up, nothing else to build or check.
    IF filter IS NULL AND rerank IS NULL AND mmr._fast_path_allowed(max_scan_tuples)
       AND k BETWEEN 1 AND 1000 AND (ef_search IS NULL OR ef_search BETWEEN 1 AND 1000) THEN
        s := mmr._active_space(collection, space);
        -- ('bit' spaces take the general path: their candidate scan needs iterative scans)
        IF s.id IS NOT NULL AND s.storage <> 'bit'
           AND @extschema:vector@.vector_dims(query) = s.dimensions
           AND mmr._norm_ok(query, s.distance) THEN
            PERFORM mmr._raise_ef_search(k, ef_search);
            RETURN QUERY EXECUTE s.statements ->> 'search' USING query, k;
            GET DIAGNOSTICS got = ROW_COUNT;
            IF got < k THEN
                PERFORM mmr._top_up_scan();
                RETURN QUERY EXECUTE mmr._offset_sql(s.statements ->> 'search', got)
                    USING query, k;
                GET DIAGNOSTICS more = ROW_COUNT;
                IF got + more < k THEN
                    PERFORM mmr._notice_unsearchable(s.id);  -- queued rows, no worker: say so
                END IF;
            END IF;
            RETURN;
        END IF;
    END IF;
    c := mmr._collection_row(collection);
    s := mmr._space_row(c.id, collection, space);
    IF rerank IS NULL THEN
        PERFORM mmr._prepare_search(s, query, k, ef_search, max_scan_tuples, c, filter);
        RETURN QUERY EXECUTE mmr._search_sql(c, s, filter) USING query, k, filter;
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got < k THEN
            PERFORM mmr._notice_unsearchable(s.id);
        END IF;
        RETURN;
    END IF;
    p := mmr._single_plan(c, s, query, mmr._rerank_depth(k, rerank, rerank_depth), filter, NULL,
                          ef_search, max_scan_tuples);
    RETURN QUERY SELECT * FROM mmr._execute(p, collection, k, rerank, rerank_params);
END
$$;

-- The plan of the statement mmr.search runs (EXPLAIN FORMAT JSON), for tests and tuning.
CREATE OR REPLACE FUNCTION mmr.explain_search(
    collection text,
    space text,
    query @extschema:vector@.vector,
    k int DEFAULT 10,
    filter jsonb DEFAULT NULL,
    ef_search int DEFAULT NULL,
    max_scan_tuples int DEFAULT NULL,
    run_analyze boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = strict_order
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    plan jsonb;
    fp record;
BEGIN
    PERFORM mmr._prepare_search(s, query, k, ef_search, max_scan_tuples, c, filter);
    EXECUTE format('EXPLAIN (FORMAT JSON, ANALYZE %s) %s', CASE WHEN run_analyze THEN 'true' ELSE 'false' END, mmr._search_sql(c, s, filter))
       INTO plan USING query, k, filter;
    -- Which plan a filter got and why (045-filter-plan.sql), next to PostgreSQL's plan.
    SELECT * INTO fp FROM mmr._filter_plan(c, filter);
    RETURN jsonb_set(plan, '{0,mmr}', jsonb_strip_nulls(jsonb_build_object(
        'filter_plan', CASE WHEN mmr._filter_sql(c, filter, '$3') IS NULL THEN 'none'
                            WHEN fp.exact THEN 'exact' ELSE 'index' END,
        'estimated_rows', fp.estimated_rows,
        'counted_rows', fp.counted_rows,
        'total_rows', fp.total_rows,
        'threshold', fp.threshold,
        'ef_search', current_setting('hnsw.ef_search')::int,
        'reason', CASE WHEN mmr._filter_sql(c, filter, '$3') IS NULL
                       THEN 'no filter: the HNSW index'
                       WHEN fp.exact
                       THEN format('about %s rows pass the filter, fewer than mmr.exact_filter_rows '
                                   '(%s): they are scored exactly',
                                   coalesce(fp.counted_rows::float8, fp.estimated_rows), fp.threshold)
                       ELSE format('about %s rows pass the filter, at least mmr.exact_filter_rows '
                                   '(%s): the HNSW index with an iterative scan',
                                   coalesce(fp.counted_rows::float8, fp.estimated_rows), fp.threshold)
                  END,
        'advice', CASE WHEN mmr._filter_sql(c, filter, '$3') IS NOT NULL THEN
                      (SELECT jsonb_agg(a.advice) FROM mmr.filter_advice(collection, filter) a
                        WHERE a.advice IS NOT NULL AND a.index_name IS NULL)
                  END)));
END
$$;

-- Many queries in one call (issue 17, item 4): the k nearest rows of each vector of `vectors`,
-- as (query_index from 1, rank from 1, key, score).  One statement: the queries are a lateral
-- join over the space's search, so each runs the same index scan as mmr.search, planned once.
CREATE OR REPLACE FUNCTION mmr.search_batch(
    collection text,
    space text,
    vectors @extschema:vector@.vector[],
    k int DEFAULT 10,
    ef_search int DEFAULT NULL)
RETURNS TABLE (query_index int, rank int, key jsonb, score float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    i int;
BEGIN
    IF vectors IS NULL THEN
        RAISE EXCEPTION 'vectors must not be NULL' USING ERRCODE = 'null_value_not_allowed',
              HINT = 'Pass an array of query vectors, e.g. ARRAY[''[...]'']::vector[].';
    END IF;
    PERFORM mmr._check_limit('batch_queries', cardinality(vectors), 'the number of query vectors');
    IF array_ndims(vectors) > 1 THEN
        RAISE EXCEPTION 'vectors must be a one-dimensional array'
            USING ERRCODE = 'array_subscript_error';
    END IF;
    FOR i IN 1 .. cardinality(vectors) LOOP
        PERFORM mmr._check_vector(vectors[i], s.dimensions, s.distance,
                                  format('query vector %s', i));
    END LOOP;
    -- k and ef_search checked, ef_search raised, iterative scans on (every query gets k rows
    -- past invisible index entries), as for one mmr.search
    PERFORM mmr._prepare_search(s, vectors[1], k, ef_search, NULL);
    PERFORM mmr._check_limit('batch_rows', cardinality(vectors)::float8 * k,
                             'the rows of the batch (query vectors x k)');
    RETURN QUERY EXECUTE format(
        'SELECT q.i::int, r.rank::int, r.key, r.score '
        'FROM unnest($1) WITH ORDINALITY q(v, i) '
        'CROSS JOIN LATERAL (SELECT y.key, y.score, row_number() OVER () AS rank '
        '                      FROM (%s) y) r ORDER BY q.i, r.rank',
        mmr._space_search_sql(c, s, NULL, 'q.v')) USING vectors, k;
END
$$;

-- Store vectors the application computed itself (spaces whose encoder is 'external').
CREATE OR REPLACE FUNCTION mmr.put_embeddings(
    collection text,
    space text,
    keys jsonb[],
    embeddings @extschema:vector@.vector[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema:vector@, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    bad record;
    missing jsonb;
    n bigint;
    vexpr text;
    bulk boolean;
BEGIN
    IF s.encoder <> 'external' THEN
        RAISE EXCEPTION 'space % is filled by encoder %, not by the application',
                        quote_literal(space), quote_literal(s.encoder)
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Only spaces added with encoder => ''external'' take vectors via put_embedding.';
    END IF;
    IF keys IS NULL OR embeddings IS NULL OR cardinality(keys) <> cardinality(embeddings) THEN
        RAISE EXCEPTION 'keys and embeddings must be arrays of the same length (% and %)',
                        coalesce(cardinality(keys)::text, 'NULL'),
                        coalesce(cardinality(embeddings)::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every space: no NULL, wrong-dimension, non-finite or zero vector (a non-finite one would
    -- be normalised to zeros under cosine); the error names the item and its key.
    FOR bad IN SELECT u.i, u.k, u.e FROM unnest(keys, embeddings) WITH ORDINALITY AS u(k, e, i)
                WHERE u.k IS NULL OR u.e IS NULL OR vector_dims(u.e) <> s.dimensions
                   OR NOT (vector_norm(u.e) > 0 AND vector_norm(u.e) <= mmr._max_norm())
                LIMIT 1 LOOP
        IF bad.k IS NULL THEN
            RAISE EXCEPTION 'item %: key must not be NULL', bad.i USING ERRCODE = 'null_value_not_allowed';
        END IF;
        PERFORM mmr._check_stored_vector(bad.e, s.dimensions, format('item %s (key %s)', bad.i, bad.k));
    END LOOP;
    SELECT u.k INTO missing FROM unnest(keys) u(k) GROUP BY u.k HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'key % appears more than once', missing USING ERRCODE = 'unique_violation';
    END IF;
    EXECUTE format('SELECT u.k FROM unnest($1) u(k) WHERE NOT EXISTS '
                   '(SELECT 1 FROM %s s, LATERAL (SELECT %s) t WHERE %s) LIMIT 1',
                   c.source, mmr._key_from_json(c, 'u.k'), mmr._key_join(c, 's', 't'))
       INTO missing USING keys;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'no row of % has key %', c.source, missing
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Insert the row first; embeddings belong to rows of the collection''s table.';
    END IF;
    vexpr := CASE WHEN s.distance = 'cosine' THEN 'l2_normalize(u.e)' ELSE 'u.e' END;
    IF s.storage = 'halfvec' THEN
        vexpr := format('(%s)::halfvec(%s)', vexpr, s.dimensions);
    END IF;
    -- Many rows into a version nobody searches through its index (inactive, or empty): no
    -- index while they are written, then one build (sql/idempotent/046-bulk.sql), all in this
    -- transaction.
    bulk := mmr._bulk_worthwhile(s, cardinality(keys)) AND mmr._begin_bulk_fill(s);
    EXECUTE format('INSERT INTO %s AS x (%s, embedding, content_hash, model_id, updated_at) '
                   'SELECT t.*, %s, NULL, ''external'', now() '
                   'FROM unnest($1, $2) u(k, e), LATERAL (SELECT %s) t '
                   'ON CONFLICT (%s) DO UPDATE SET embedding = EXCLUDED.embedding, '
                   'model_id = EXCLUDED.model_id, updated_at = EXCLUDED.updated_at',
                   s.embedding_table, mmr._key_list(c), vexpr, mmr._key_from_json(c, 'u.k'),
                   mmr._key_list(c))
      USING keys, embeddings;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF bulk THEN
        PERFORM mmr._finish_bulk_fill(s.id);
    END IF;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION mmr.put_embedding(
    collection text,
    space text,
    key jsonb,
    embedding @extschema:vector@.vector)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT FROM mmr.put_embeddings(collection, space, ARRAY[key], ARRAY[embedding])
$$;

CREATE OR REPLACE VIEW mmr.collections AS
SELECT c.name AS collection,
       c.source,
       c.key_columns,
       c.image_column,
       c.image_kind,
       c.text_columns,
       (SELECT v.oid::regclass FROM pg_class v WHERE v.oid = c.view_relid) AS view,
       c.queue_table,
       c.owner,
       c.created_at
  FROM mmr._collection c;

CREATE OR REPLACE VIEW mmr.spaces AS
SELECT c.name AS collection,
       s.name AS space,
       s.version,
       s.active,
       s.encoder,
       s.source_column,
       s.modality,
       s.dimensions,
       s.distance,
       s.storage,
       s.embedding_table,
       s.model_id,
       s.options,
       s.created_at
  FROM mmr._space s
  JOIN mmr._collection c ON c.id = s.collection_id;
