-- Search: the statement builders every search shares, the executor of a plan (mmr._execute),
-- plain vector search (mmr.search, explain_search, search_batch), external embeddings, and the
-- catalog views.  Filters are translated and planned in 040-filter.sql.
--
-- Every search function builds a "plan" (mmr._search_plan: one SQL statement and its
-- parameters) and runs it with mmr._execute, which also applies a registered reranker.  The
-- statement's parameters are always, in this order:
--   $1 vector[] query vectors   $2 int candidates per leg   $3 jsonb filter   $4 int k
--   $5 jsonb key to exclude     $6 float8[] leg weights     $7 float8[] numeric options
--   $8 jsonb auxiliary data     $9 text query text
-- Single-vector methods are one `ORDER BY embedding <op> $1[1] LIMIT` statement (the HNSW
-- shape); multi-leg methods take each leg's candidates from its index and fuse them in the
-- same statement (no per-row round trips).

-- The plan types (mmr._search_plan, mmr._exec_plan) are created in sql/incremental/007-00-search.sql.

-- Reject unknown parameter names (typos would otherwise silently use defaults).
CREATE OR REPLACE FUNCTION mmr._check_params(p jsonb, p_known text[], p_what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text;
BEGIN
    IF p IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(p) <> 'object' THEN
        RAISE EXCEPTION 'params must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(quote_literal(k), ', ') INTO bad FROM jsonb_object_keys(p) k
     WHERE k <> ALL (p_known);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION '% does not take parameter(s) %', p_what, bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known parameters: ' || array_to_string(p_known, ', ') || '.';
    END IF;
END
$$;

-- The query vector as the SQL expression to compare with a space's embedding column.
CREATE OR REPLACE FUNCTION mmr._qexpr(s mmr._space, p_expr text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE s.storage WHEN 'halfvec'
                THEN format('(%s)::@extschema:vector@.halfvec(%s)', p_expr, s.dimensions)
                ELSE p_expr END
$$;

-- Distance and similarity (score, higher is better) of alias.embedding to a query expression.
CREATE OR REPLACE FUNCTION mmr._dist(s mmr._space, p_alias text, p_expr text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%I.embedding OPERATOR(@extschema:vector@.%s) %s', p_alias,
                  mmr._distance_op(s.distance), mmr._qexpr(s, p_expr))
$$;

CREATE OR REPLACE FUNCTION mmr._sim(s mmr._space, p_alias text, p_expr text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT mmr._score_expr(s.distance, mmr._dist(s, p_alias, p_expr))
$$;

-- Similarity (score) of an embedding expression to a query expression.
CREATE OR REPLACE FUNCTION mmr._sim_of(s mmr._space, p_embedding text, p_expr text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT mmr._score_expr(s.distance, format('(%s) OPERATOR(@extschema:vector@.%s) %s', p_embedding,
                                              mmr._distance_op(s.distance), mmr._qexpr(s, p_expr)))
$$;

-- Inner product of alias.embedding with a query expression (float8).
CREATE OR REPLACE FUNCTION mmr._ip(s mmr._space, p_alias text, p_expr text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('(-(%I.embedding OPERATOR(@extschema:vector@.<#>) %s))::float8', p_alias,
                  mmr._qexpr(s, p_expr))
$$;

-- One index leg: the key columns and distance of the p_limit rows nearest to p_expr, in the
-- HNSW shape (with p_embedding, also the row's embedding, read by the index scan anyway, so the
-- fusion needs no second look-up).  The filter (a jsonb in $3) joins the source table; a
-- selective one is scored exactly (mmr._filtered_from, 040-filter.sql).
DROP FUNCTION IF EXISTS mmr._leg_sql(mmr._collection, mmr._space, text, text, jsonb);

CREATE OR REPLACE FUNCTION mmr._leg_sql(c mmr._collection, s mmr._space, p_expr text,
                                        p_limit text, p_filter jsonb,
                                        p_embedding boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dist text := mmr._dist(s, 'e', p_expr);
    cols text := mmr._key_list(c, 'e') || CASE WHEN p_embedding THEN ', e.embedding' ELSE '' END;
BEGIN
    IF p_filter IS NULL THEN
        RETURN format('SELECT %s, %s AS dist FROM %s e ORDER BY %s LIMIT %s',
                      cols, dist, s.embedding_table, dist, p_limit);
    END IF;
    RETURN format('SELECT %s, %s AS dist FROM %s ORDER BY %s LIMIT %s',
                  cols, dist, mmr._filtered_from(c, s, p_filter), dist, p_limit);
END
$$;

-- Single-vector statement: the k nearest rows to $1[1] in the HNSW shape; when a key may be
-- excluded ($5), k + 1 rows are fetched and the excluded one dropped.
DROP FUNCTION IF EXISTS mmr._single_sql(mmr._collection, mmr._space, jsonb);

CREATE OR REPLACE FUNCTION mmr._single_sql(c mmr._collection, s mmr._space, p_filter jsonb,
                                           p_exclude boolean)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dist text := mmr._dist(s, 'e', '$1[1]');
    inner_sql text;
BEGIN
    inner_sql := format('SELECT %s AS key, %s AS score FROM %s ORDER BY %s LIMIT %s',
                        mmr._key_json(c, 'e'), mmr._score_expr(s.distance, dist),
                        mmr._filtered_from(c, s, p_filter), dist,
                        CASE WHEN p_exclude THEN '$4 + 1' ELSE '$4' END);
    IF NOT p_exclude AND p_filter IS NULL THEN
        RETURN inner_sql;
    END IF;
    IF NOT p_exclude THEN
        -- re-sorted: a filter's index plan scans in pgvector's relaxed order (_prepare_search)
        RETURN format('SELECT x.key, x.score FROM (%s) x ORDER BY x.score DESC', inner_sql);
    END IF;
    RETURN format('SELECT x.key, x.score FROM (%s) x WHERE x.key <> $5 '
                  'ORDER BY x.score DESC LIMIT $4', inner_sql);
END
$$;

-- One vector leg as arrays: the keys and scores of the $2 rows nearest to p_query (an SQL
-- expression: '$1' for the cached leg_agg statement, '(SELECT qq.q[1] FROM qq)' for a leg of
-- WeiMoCIR's by-key statement), best first (NULL arrays when the space has no rows).
CREATE OR REPLACE FUNCTION mmr._leg_agg_sql(c mmr._collection, s mmr._space, p_query text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('SELECT array_agg(x.key ORDER BY x.dist, x.key), '
                  'array_agg(%s ORDER BY x.dist, x.key) FROM '
                  '(SELECT %s AS key, %s AS dist FROM %s e ORDER BY %s LIMIT $2) x',
                  mmr._score_expr(s.distance, 'x.dist'), mmr._key_json(c, 'e'),
                  mmr._dist(s, 'e', p_query), s.embedding_table, mmr._dist(s, 'e', p_query))
$$;

-- The scores (float8[], in the order of the keys; NULL where a row has no embedding, and for no
-- keys) of the rows whose keys the jsonb[] expression p_keys holds to the query expression
-- p_query.
CREATE OR REPLACE FUNCTION mmr._sims_of_sql(c mmr._collection, s mmr._space, p_keys text,
                                            p_query text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('SELECT array_agg(%s ORDER BY u.ord) '
                  'FROM unnest(%s::jsonb[]) WITH ORDINALITY u(key, ord) '
                  'CROSS JOIN LATERAL (SELECT %s) t LEFT JOIN %s e ON %s',
                  mmr._sim(s, 'e', p_query), p_keys, mmr._key_from_json(c, 'u.key'),
                  s.embedding_table, mmr._key_join(c, 'e', 't'))
$$;

-- The statement reading the stored embedding of the row whose jsonb key the expression p_key
-- holds, as a full-precision vector (no row when there is none).
CREATE OR REPLACE FUNCTION mmr._embedding_of_sql(c mmr._collection, s mmr._space, p_key text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('SELECT e.embedding::@extschema:vector@.vector FROM %s e, '
                  'LATERAL (SELECT %s) t WHERE %s', s.embedding_table,
                  mmr._key_from_json(c, p_key), mmr._key_join(c, 'e', 't'))
$$;

-- The stored embedding of a row (by its jsonb key) in a space, as a full-precision vector.
CREATE OR REPLACE FUNCTION mmr._embedding_of(c mmr._collection, s mmr._space, p_key jsonb,
                                             p_required boolean DEFAULT true)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v @extschema:vector@.vector;
BEGIN
    IF p_key IS NULL THEN
        RAISE EXCEPTION 'reference key must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    EXECUTE mmr._embedding_of_sql(c, s, '$1') INTO v USING p_key;
    IF v IS NULL AND p_required THEN
        RAISE EXCEPTION 'row % of collection % has no embedding in space %', p_key,
                        quote_literal(c.name), quote_literal(s.name)
            USING ERRCODE = 'no_data_found',
                  HINT = 'Check the key, and that the worker has embedded the row (mmr status).';
    END IF;
    RETURN v;
END
$$;

-- Run a plan; with a reranker, its first rerank_depth rows go through it and the best k return.
CREATE OR REPLACE FUNCTION mmr._execute(p mmr._search_plan, p_collection text, p_k int,
                                        p_rerank text, p_rerank_params jsonb)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
    ks jsonb[];
    ss float8[];
BEGIN
    IF p_rerank IS NULL THEN
        RETURN QUERY EXECUTE p.sql USING p.vecs, p.n, p.filter, p.k, p.exclude, p.weights, p.nums,
                                         p.aux, p.qtext;
        RETURN;
    END IF;
    IF p_rerank_params IS NOT NULL AND jsonb_typeof(p_rerank_params) <> 'object' THEN
        RAISE EXCEPTION 'rerank_params must be a JSON object, not %', jsonb_typeof(p_rerank_params)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: rerank_params => ''{"lambda": 0.7}''.';
    END IF;
    SELECT r.function INTO fn FROM mmr._reranker r WHERE r.name = p_rerank;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reranker % is not registered', quote_literal(p_rerank)
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM mmr.rerankers lists them; add one with '
                         'mmr.register_reranker(name, function).';
    END IF;
    EXECUTE 'SELECT array_agg(q.key ORDER BY q.ord), array_agg(q.score ORDER BY q.ord) FROM ('
            || 'SELECT x.key, x.score, row_number() OVER () AS ord FROM (' || p.sql || ') x) q'
       INTO ks, ss
      USING p.vecs, p.n, p.filter, p.k, p.exclude, p.weights, p.nums, p.aux, p.qtext;
    -- A reranker returns the candidates in their new order (best first).
    RETURN QUERY EXECUTE format('SELECT r.key, r.score::float8 FROM %s($1, $2, $3, $4, $5, $6) '
                                'WITH ORDINALITY r(key, score, ord) ORDER BY r.ord LIMIT $7',
                                fn::oid::regproc)
      USING p_collection, p.space, p.qvec, coalesce(ks, '{}'), coalesce(ss, '{}'),
            coalesce(p_rerank_params, '{}'::jsonb) || jsonb_build_object('query_text', p.qtext),
            p_k;
END
$$;

CREATE OR REPLACE FUNCTION mmr._rerank_depth(p_k int, p_rerank text, p_depth int)
RETURNS int
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM mmr._check_limit('k', p_k);
    IF p_rerank IS NULL THEN
        RETURN p_k;
    END IF;
    IF p_depth IS NOT NULL AND (p_depth < p_k OR p_depth > mmr._check_limit('rerank_depth', p_depth)) THEN
        RAISE EXCEPTION 'rerank_depth must be between k (%) and 1000, not %', p_k, p_depth
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN coalesce(p_depth, least(1000, greatest(p_k, 100)));
END
$$;

-- A single-vector plan (the HNSW shape) for a query vector.
CREATE OR REPLACE FUNCTION mmr._single_plan(c mmr._collection, s mmr._space,
                                            p_query @extschema:vector@.vector, p_k int,
                                            p_filter jsonb, p_exclude jsonb, p_ef_search int,
                                            p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p mmr._search_plan;
BEGIN
    PERFORM mmr._prepare_search(s, p_query, least(p_k + 1, 1000), p_ef_search, p_max_scan_tuples,
                                c, p_filter);
    p.sql := mmr._single_sql(c, s, p_filter, p_exclude IS NOT NULL);
    p.vecs := ARRAY[p_query]; p.qvec := p_query; p.k := p_k; p.n := p_k;
    p.filter := p_filter; p.exclude := p_exclude; p.space := s.name;
    RETURN p;
END
$$;

-- The SQL text of a search over one space (mmr._search_sql) with the query vector given by
-- expression p_q (a parameter, or a column of a lateral join: mmr.search_batch); $2 k, $3 filter.
-- Unfiltered, and under a broad filter, it keeps the only shape pgvector's HNSW index serves:
-- ORDER BY embedding <op> q LIMIT $2.  Under a selective filter (mmr._filter_plan) the rows
-- that pass are scored exactly (mmr._filtered_from, 040-filter.sql), best score first.
-- An unfiltered 'bit' space (issue 17, item 2) takes mmr._scan_rows(s, $2) candidates from its
-- Hamming index over binary_quantize(embedding)::bit(d) and reranks them exactly on the full
-- vectors (pgvector's documented binary quantisation with re-ranking); a filtered one is scored
-- exactly over the rows the filter's plan reads.
DROP FUNCTION IF EXISTS mmr._space_search_sql(mmr._collection, mmr._space, jsonb, text);

CREATE OR REPLACE FUNCTION mmr._space_search_sql(c mmr._collection, s mmr._space, p_filter jsonb,
                                                 p_q text, p_once boolean DEFAULT false)
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
    -- re-sorted: a filter's index plan scans in pgvector's relaxed order (mmr._prepare_search).
    -- The exact plan sorts by the score it computes for every passing row (the score falls as
    -- the distance grows), so each row's distance is computed once, not again for the sort.
    RETURN format('SELECT x.key, x.score FROM (SELECT %s AS key, %s AS score FROM %s ORDER BY %s '
                  'LIMIT $2) x ORDER BY x.score DESC',
                  mmr._key_json(c, 'e'), mmr._score_expr(s.distance, dist),
                  mmr._filtered_from(c, s, p_filter, p_once),
                  CASE WHEN (mmr._filter_plan(c, p_filter)).exact THEN 'score DESC' ELSE dist END);
END
$$;

-- The SQL text of a search over one space: $1 query vector, $2 k, $3 filter (p_once: its values
-- read once per execution in an index plan, for a plan kept generic; mmr._filter_sql).
DROP FUNCTION IF EXISTS mmr._search_sql(mmr._collection, mmr._space, jsonb);

CREATE OR REPLACE FUNCTION mmr._search_sql(c mmr._collection, s mmr._space, p_filter jsonb,
                                           p_once boolean DEFAULT false)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT mmr._space_search_sql(c, s, p_filter, '$1', p_once) $$;

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

-- hnsw.ef_search for a call whose index scans return p_rows rows (mmr._raise_ef_search's rule,
-- as a value for a plan: NULL when the functions' own 40 serves).
CREATE OR REPLACE FUNCTION mmr._ef_for(p_rows int, p_ef_search int)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_rows > 40 OR p_ef_search IS NOT NULL
            THEN greatest(p_rows, coalesce(p_ef_search, 40)) END;

-- A query vector a fast path accepts for a space of p_dimensions and p_distance: that dimension
-- and a valid norm (else the general path checks it and raises the explanatory error).  Columns,
-- not the space's row: a whole-row argument makes the plans that inline this build the row.
CREATE OR REPLACE FUNCTION mmr._query_ok(p_dimensions int, p_distance text,
                                         v @extschema:vector@.vector)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN @extschema:vector@.vector_dims(v) = p_dimensions AND mmr._norm_ok(v, p_distance);

-- The space a fast path may serve (active, with cached statements, not 'bit': their candidate
-- scan needs iterative scans), as plain columns: the one look-up of mmr._space the planners make
-- (mmr._search_exec_plan, mmr._composed_exec_plan).  Columns, not the table's row type: a
-- planner that took or read mmr._space's row would record a dependency on the catalog table
-- that Citus follows from every function using the plan type (tests/test_install.py).  A plain
-- SQL function the planners inline.
CREATE OR REPLACE FUNCTION mmr._fast_space(p_collection text, p_space text)
RETURNS TABLE (id int, dimensions int, distance text, statements jsonb)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.id, s.dimensions, s.distance, s.statements
      FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id
     WHERE c.name = p_collection AND s.name = p_space AND s.active
       AND s.statements IS NOT NULL AND s.storage <> 'bit';
END;

-- The statement memo (native/memo.c): text a planner built, by a key the planner
-- writes, kept for the session and the current user, forgotten on every relation cache or
-- pg_proc invalidation (DDL, ANALYZE, VACUUM, an upgrade).  mmr._memo_get(key) returns what
-- mmr._memo_put(key, value) stored (NULL: nothing); put returns its value.  A key names
-- everything the text depends on besides the catalog's relations and functions.  These are
-- the reference functions, and the PL/pgSQL binding (089-native.sql): they memoize nothing.
-- get is declared STABLE, though a put in the same statement changes what it returns: a
-- VOLATILE function would keep PostgreSQL from inlining the SQL planners that read the memo
-- (mmr._search_exec_plan) into the executor's kept statement, and no plan depends on reading
-- the memo once per statement (a get returns either nothing or what the builder would build).
CREATE OR REPLACE FUNCTION mmr._memo_get_plpgsql(key text)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION mmr._memo_put_plpgsql(key text, value text)
RETURNS text
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN value;
END
$$;

-- The public names until 089-native.sql binds them (natively, or to the references).
CREATE OR REPLACE FUNCTION mmr._memo_get(key text)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'SELECT mmr._memo_get_plpgsql($1)';

CREATE OR REPLACE FUNCTION mmr._memo_put(key text, value text)
RETURNS text
LANGUAGE sql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'SELECT mmr._memo_put_plpgsql($1, $2)';

-- mmr._kept_vector(sql, key): the one value the statement `sql` (a query of one `vector` column,
-- $1 the jsonb key) returns, NULL when it returns no row, too_many_rows when it returns more; a
-- planner's read of a stored row by a cached statement (mmr._composed_key_exec_plan: the
-- reference's embedding).  Natively (native/pg_mmretrieval.c) the statement runs with the
-- session's kept plan of its text, not parsed and planned per call as a PL/pgSQL EXECUTE is.
-- SECURITY INVOKER: it runs only what its caller could run.  This is the reference function
-- and the PL/pgSQL binding (089-native.sql).
CREATE OR REPLACE FUNCTION mmr._kept_vector_plpgsql(sql text, key jsonb)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v @extschema:vector@.vector;
    got int := 0;
BEGIN
    FOR v IN EXECUTE sql USING key LOOP
        got := got + 1;
        IF got > 1 THEN
            RAISE EXCEPTION 'query returned more than one row' USING ERRCODE = 'too_many_rows';
        END IF;
    END LOOP;
    RETURN v;
END
$$;

-- The public name until 089-native.sql binds it (natively, or to the reference).
CREATE OR REPLACE FUNCTION mmr._kept_vector(sql text, key jsonb)
RETURNS @extschema:vector@.vector
LANGUAGE sql STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'SELECT mmr._kept_vector_plpgsql($1, $2)';

-- The key of a filtered search's plan in the statement memo (mmr._memo_get): what the filter's
-- decision and the statement's text depend on besides the catalog (whose every relation or
-- function invalidation forgets the memo) and the current user (the memo is per user): the
-- space (its id: a new version or re-created collection is a new row) and its cached plain
-- statement (its embedding table, distance, storage and key expression), the
-- mmr.exact_filter_rows setting and the filter, values included (the text does not depend on
-- them, but a key by the filter's shape alone would have to prove it).
CREATE OR REPLACE FUNCTION mmr._filtered_key(p_space_id int, p_search_sql text, p_filter jsonb)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN pg_catalog.concat_ws(' ', 'filtered', p_space_id,
                            NULLIF(pg_catalog.current_setting('mmr.exact_filter_rows', true), ''),
                            p_search_sql, p_filter::text);

-- A filtered search's plan as the memo holds it, built on a miss (mmr._search_exec_plan's second
-- branch reads the memo first): {"exact", "ef_search", "sql"} from the filter's decision
-- (mmr._filter_plan, itself cached for the session in a setting) and the general path's
-- statement (mmr._search_sql: one implementation, so both paths return the same rows; for the
-- index plan with the filter's values read once per execution, as a kept generic plan needs),
-- put into the memo under p_key.  NULL when the filter does not translate or anything else
-- raises: the general path then raises the same error with its own context.
CREATE OR REPLACE FUNCTION mmr._filtered_statement(p_collection text, p_space text,
                                                   p_filter jsonb, p_key text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    s mmr._space;
    fp record;
BEGIN
    SELECT * INTO c FROM mmr._collection x WHERE x.name = p_collection;
    SELECT * INTO s FROM mmr._space x
     WHERE x.collection_id = c.id AND x.name = p_space AND x.active;
    IF s.id IS NULL THEN
        RETURN NULL;
    END IF;
    fp := mmr._filter_plan(c, p_filter);
    RETURN mmr._memo_put(p_key, jsonb_build_object(
               'exact', fp.exact, 'ef_search', fp.ef_search,
               'sql', mmr._search_sql(c, s, p_filter, NOT fp.exact))::text)::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- The planner of mmr.search's fast path (one rule for both bindings): a plan (mmr._exec_plan)
-- when the call takes the fast path, no row otherwise (the general path runs).  Without a
-- filter (no reranker, mmr._fast_path_allowed, k and ef_search in range, a space mmr._fast_space
-- serves, a query of its dimension and a valid norm): the space's cached `search` statement ($1
-- query, $2 k), ef_search raised to k (or to the caller's ef_search, as mmr._raise_ef_search),
-- and a short scan continued past its rows (mmr._exec_rest).  With a filter (issue 18; the same
-- conditions, and a filter object with conditions), a branch its kept plan runs only when a
-- filter is given (a one-time condition), so that unfiltered calls cost what they cost without
-- it: the filter's plan from the statement memo (mmr._filtered_key), or built on a miss by
-- mmr._filtered_statement (no row when the filter would raise: the general path raises it);
-- the statement with the filter as its parameter $3, and the filter's decision:
--   index plan  ef_search raised as mmr._prepare_search raises it, relaxed_order, and
--               planning 'generic': a plan the executor keeps for the session, built in the
--               HNSW shape (the statement re-sorts the rows it takes);
--   exact plan  strict_order (no index scan), and planning 'custom': the statement is planned
--               per call with the filter's values (the passing rows read through the user's
--               index for those values).
-- A result shorter than k says why when rows are queued (rest 'notice', mmr._exec_rest), as on
-- the general path.  Same arguments as mmr.search.  A plain SQL function the planner inlines:
-- the native executor keeps its plan and runs it on every call without a PL/pgSQL call (on a
-- memo hit, filtered calls too).
CREATE OR REPLACE FUNCTION mmr._search_exec_plan(
    p_collection text, p_space text, p_query @extschema:vector@.vector, p_k int,
    p_filter jsonb, p_ef_search int, p_max_scan_tuples int, p_rerank text, p_rerank_depth int,
    p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.statements ->> 'search', '{query,k}'::text[], p_query,
           NULL::@extschema:vector@.vector[], p_k, p_k, NULL::jsonb, NULL::jsonb,
           mmr._ef_for(p_k, p_ef_search), s.id, 'offset'::text, NULL::text, NULL::jsonb,
           NULL::text, NULL::text
      FROM mmr._fast_space(p_collection, p_space) s
     WHERE p_filter IS NULL AND p_rerank IS NULL AND mmr._fast_path_allowed(p_max_scan_tuples)
       AND p_k BETWEEN 1 AND 1000 AND (p_ef_search IS NULL OR p_ef_search BETWEEN 1 AND 1000)
       AND (s.statements ->> 'search') IS NOT NULL
       AND mmr._query_ok(s.dimensions, s.distance, p_query)
    UNION ALL
    SELECT m.plan ->> 'sql', '{query,k,filter}'::text[], p_query,
           NULL::@extschema:vector@.vector[], p_k, p_k, p_filter, NULL::jsonb,
           mmr._ef_for(p_k, coalesce(p_ef_search, (m.plan ->> 'ef_search')::int)), s.id,
           'notice'::text, NULL::text, NULL::jsonb,
           CASE WHEN (m.plan ->> 'exact')::boolean THEN 'strict_order' ELSE 'relaxed_order' END,
           CASE WHEN (m.plan ->> 'exact')::boolean THEN 'custom' ELSE 'generic' END
      FROM mmr._fast_space(p_collection, p_space) s,
           LATERAL (SELECT coalesce(mmr._memo_get(k.key)::jsonb,
                                    mmr._filtered_statement(p_collection, p_space, p_filter,
                                                            k.key)) AS plan
                      FROM (SELECT mmr._filtered_key(s.id, s.statements ->> 'search',
                                                     p_filter) AS key) k
                    OFFSET 0) m  -- read once, not once per reference to m.plan
     WHERE p_filter IS NOT NULL AND jsonb_typeof(p_filter) = 'object' AND p_filter <> '{}'
       AND p_rerank IS NULL AND mmr._fast_path_allowed(p_max_scan_tuples)
       AND p_k BETWEEN 1 AND 1000 AND (p_ef_search IS NULL OR p_ef_search BETWEEN 1 AND 1000)
       AND (s.statements ->> 'search') IS NOT NULL
       AND mmr._query_ok(s.dimensions, s.distance, p_query)
       AND m.plan IS NOT NULL;
END;

-- The first filtered fast-path planner (a PL/pgSQL function run on every filtered call), which
-- the previous mmr._search_exec_plan depended on.
DROP FUNCTION IF EXISTS mmr._filtered_exec_plan(text, text, @extschema:vector@.vector, int, jsonb,
                                                int, int, text, int, jsonb);

-- A plan's statement (p.sql) run with its named arguments (p.args): the argument lists the
-- planners use.  With the caller's rights, like any statement the caller could run.
CREATE OR REPLACE FUNCTION mmr._exec_statement(p mmr._exec_plan)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p.args = '{query,k}' THEN
        RETURN QUERY EXECUTE p.sql USING p.query, p.k;
    ELSIF p.args = '{query,k,filter}' THEN
        RETURN QUERY EXECUTE p.sql USING p.query, p.k, p.filter;
    ELSIF p.args = '{vecs,n,filter,k,exclude}' THEN
        RETURN QUERY EXECUTE p.sql USING p.vecs, p.n, p.filter, p.k, p.exclude;
    ELSIF p.args = '{vecs,n,filter,k,exclude,options}' THEN
        RETURN QUERY EXECUTE p.sql USING p.vecs, p.n, p.filter, p.k, p.exclude, p.options;
    ELSE
        RAISE EXCEPTION 'a plan with arguments % cannot run here', coalesce(p.args::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Plans come from the search planners (mmr._search_exec_plan, '
                         'mmr._composed_exec_plan).';
    END IF;
END
$$;

-- The HNSW shape of a plan whose planning is 'generic' (a filter's index plan): planned with
-- every other way to produce the rows in distance order switched off (sequential and bitmap
-- scans, sorts, hash and merge joins), so that the plan is the HNSW index's ordered scan joined
-- to the source row by row, whatever the filter's values or the table's statistics say; the
-- statement's final re-sort is in every plan.  The native executor builds the plan it keeps
-- with the same settings (native/pg_mmretrieval.c, build_plan); the SET clauses scope them to
-- the call.  Runs the plan's statement (the PL/pgSQL binding), or explains it (explain_search).
CREATE OR REPLACE FUNCTION mmr._exec_hnsw_shaped(p mmr._exec_plan)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET enable_incremental_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    RETURN QUERY SELECT * FROM mmr._exec_statement(p);
END
$$;

CREATE OR REPLACE FUNCTION mmr._explain_hnsw_shaped(p mmr._exec_plan, p_analyze boolean)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET enable_incremental_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    plan jsonb;
BEGIN
    IF p.args IS DISTINCT FROM '{query,k,filter}' THEN
        RAISE EXCEPTION 'a plan with arguments % cannot be explained here',
                        coalesce(p.args::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('EXPLAIN (FORMAT JSON, ANALYZE %s) %s',
                   CASE WHEN p_analyze THEN 'true' ELSE 'false' END, p.sql)
       INTO plan USING p.query, p.k, p.filter;
    RETURN plan;
END
$$;

-- The rest of a fast-path plan whose statement returned p_got rows (fewer than p.k): with
-- iterative scans on (mmr._top_up_scan), the statement past its rows (p.rest 'offset'; then, if
-- still short, mmr._notice_unsearchable says why when rows are queued), or p.rest_sql when the
-- statement returned nothing ('rerun': a checked two-leg statement whose leg came back short);
-- 'notice' (a filtered plan, which scanned with iterative scans already): only
-- mmr._notice_unsearchable.  A rare path: both executors call it.
CREATE OR REPLACE FUNCTION mmr._exec_rest(p mmr._exec_plan, p_got bigint)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    more bigint;
    q mmr._exec_plan := p;
BEGIN
    IF p.rest IS NULL OR p_got >= p.k OR (p.rest = 'rerun' AND p_got > 0) THEN
        RETURN;
    END IF;
    IF p.rest = 'notice' THEN
        -- a filtered plan scanned with iterative scans already: fewer rows pass (or are
        -- visible); say why when rows are queued, as the general path does
        IF p.space_id IS NOT NULL THEN
            PERFORM mmr._notice_unsearchable(p.space_id);
        END IF;
        RETURN;
    END IF;
    PERFORM mmr._top_up_scan();
    IF p.rest = 'offset' THEN
        q.sql := mmr._offset_sql(p.sql, p_got);
        RETURN QUERY SELECT * FROM mmr._exec_statement(q);
        GET DIAGNOSTICS more = ROW_COUNT;
        IF p_got + more < p.k AND p.space_id IS NOT NULL THEN
            PERFORM mmr._notice_unsearchable(p.space_id);  -- queued rows, no worker: say so
        END IF;
    ELSE
        q.sql := p.rest_sql;
        RETURN QUERY SELECT * FROM mmr._exec_statement(q);
    END IF;
END
$$;

-- mmr.search's general path: every call its planner (mmr._search_exec_plan) gave no plan (a
-- filter, a reranker, max_scan_tuples, an argument out of range, an unknown space, a wrong
-- dimension, a zero vector, any NULL), which this function checks and raises the explanatory
-- errors for.  Both executors call it once the planner said no: the native module directly (it
-- ran the planner itself), the PL/pgSQL binding from mmr._search_plpgsql; callers whose calls
-- never take the fast path (mmr.diversify_search: always a reranker) call it directly.
CREATE OR REPLACE FUNCTION mmr._search_general(
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
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    p mmr._search_plan;
    got bigint;
BEGIN
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

-- mmr.search's reference implementation (the PL/pgSQL binding): the fast path when its planner
-- (mmr._search_exec_plan) gives a plan, else the general path (mmr._search_general).
-- mmr.search itself is created from it by 089-native.sql: the native executor
-- (native/pg_mmretrieval.c), which runs the same planner and hands every call it gives no plan
-- to mmr._search_general, or, without the native library, a copy of this function under the
-- public name.
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
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    x mmr._exec_plan;
    got bigint;
BEGIN
    -- Fast path (mmr._search_exec_plan decides): unfiltered, the cached statement of the
    -- space, one catalog look-up, nothing else to build or check; filtered, the general path's
    -- statement with the filter's plan (memoized, mmr._filtered_statement).
    SELECT * INTO x FROM mmr._search_exec_plan(collection, space, query, k, filter, ef_search,
                                               max_scan_tuples, rerank, rerank_depth,
                                               rerank_params);
    IF x.sql IS NOT NULL THEN
        IF x.ef_search IS NOT NULL THEN
            PERFORM set_config('hnsw.ef_search', x.ef_search::text, true);
        END IF;
        IF x.iterative IS NOT NULL THEN
            PERFORM set_config('hnsw.iterative_scan', x.iterative, true);
        END IF;
        IF x.planning = 'generic' THEN
            -- (EXECUTE plans every call: the same HNSW shape as the native executor's kept plan)
            RETURN QUERY SELECT * FROM mmr._exec_hnsw_shaped(x);
        ELSIF x.args = '{query,k}' THEN
            RETURN QUERY EXECUTE x.sql USING x.query, x.k;
        ELSE
            RETURN QUERY SELECT * FROM mmr._exec_statement(x);
        END IF;
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got < x.k THEN
            RETURN QUERY SELECT * FROM mmr._exec_rest(x, got);
        END IF;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM mmr._search_general(collection, space, query, k, filter,
                                                   ef_search, max_scan_tuples, rerank,
                                                   rerank_depth, rerank_params);
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
    x mmr._exec_plan;
BEGIN
    PERFORM mmr._prepare_search(s, query, k, ef_search, max_scan_tuples, c, filter);
    -- The path mmr.search takes (its planner, mmr._search_exec_plan), and the statement as that
    -- path plans it: a filter's index plan in the HNSW shape the executors keep
    -- (mmr._explain_hnsw_shaped), anything else planned with the call's values.
    SELECT * INTO x FROM mmr._search_exec_plan(collection, space, query, k, filter, ef_search,
                                               max_scan_tuples, NULL, NULL, NULL);
    IF x.planning = 'generic' THEN
        plan := mmr._explain_hnsw_shaped(x, run_analyze);
    ELSE
        EXECUTE format('EXPLAIN (FORMAT JSON, ANALYZE %s) %s', CASE WHEN run_analyze THEN 'true' ELSE 'false' END, mmr._search_sql(c, s, filter))
           INTO plan USING query, k, filter;
    END IF;
    -- Which plan a filter got and why (040-filter.sql), next to PostgreSQL's plan.
    SELECT * INTO fp FROM mmr._filter_plan(c, filter);
    RETURN jsonb_set(plan, '{0,mmr}', jsonb_strip_nulls(jsonb_build_object(
        'path', CASE WHEN x.sql IS NOT NULL THEN 'fast' ELSE 'general' END,
        'planning', x.planning,
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
    positions bigint[];
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
    -- A key given twice, compared as the source's key (1 and "1" name the same row: compared as
    -- JSON they would pass here and then fail the INSERT's ON CONFLICT with 21000).
    EXECUTE format('SELECT x.k, x.j FROM (SELECT min(u.i) AS i, (array_agg(u.k ORDER BY u.i))[1] AS k, '
                   '(array_agg(u.i ORDER BY u.i))[2] AS j '
                   'FROM (SELECT v.k, v.i, %s FROM unnest($1) WITH ORDINALITY v(k, i)) u '
                   'GROUP BY %s HAVING count(*) > 1) x ORDER BY x.i LIMIT 1',
                   mmr._key_from_json(c, 'v.k'), mmr._key_list(c))
       INTO missing, n USING keys;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'key % appears more than once (item % names the same row)', missing, n
            USING ERRCODE = 'unique_violation',
                  HINT = 'Give each row one embedding per call.';
    END IF;
    -- Every key names a row of the source: the keys that find their row by an inner join,
    -- counted, against the number of keys (distinct: a repeated key was refused above; the key
    -- is the primary key, so a key finds at most one row).  A join, not a correlated subquery
    -- over unnest: on a Citus distributed source the join is pushed down to the shards, the
    -- subquery cannot be planned.  Only when some are missing does a second join list the
    -- positions (in keys) found, and the first key not among them is named.
    EXECUTE format('SELECT count(*) FROM unnest($1) u(k), LATERAL (SELECT %s) t '
                   'JOIN %s s ON %s',
                   mmr._key_from_json(c, 'u.k'), c.source, mmr._key_join(c, 's', 't'))
       INTO n USING keys;
    IF n <> cardinality(keys) THEN
        EXECUTE format('SELECT array_agg(u.i) FROM unnest($1) WITH ORDINALITY u(k, i), '
                       'LATERAL (SELECT %s) t JOIN %s s ON %s',
                       mmr._key_from_json(c, 'u.k'), c.source, mmr._key_join(c, 's', 't'))
           INTO positions USING keys;
        -- the first gap in the sorted positions found (a sort, not an anti-join over an
        -- unnested array, which the planner may run as a nested loop: 5 s for 20k keys)
        SELECT coalesce(min(x.j), coalesce(cardinality(positions), 0) + 1) INTO n
          FROM (SELECT f.i, row_number() OVER (ORDER BY f.i) AS j
                  FROM unnest(positions) f(i)) x
         WHERE x.i <> x.j;
        SELECT u.k INTO missing FROM unnest(keys) WITH ORDINALITY u(k, i) WHERE u.i = n;
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
