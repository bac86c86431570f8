-- Hybrid search: PostgreSQL full-text search over the collection's text columns plus any number
-- of vector legs, fused by RRF / CombSUM / CombMNZ / average rank (FUSION.md §2.1-2.2).
--
-- Lexical index: mmr.create_text_index(collection, config) builds a GIN index on the source
-- table over the expression
--     to_tsvector('<config>'::regconfig, coalesce(col1::text, '') || ' ' || coalesce(col2::text, '') ...)
-- (the collection's text columns in order) and records the configuration; the lexical leg of
-- mmr.hybrid_search builds exactly the same expression, so the planner uses that index.
-- Without the index the leg still works (a scan of the source table).

GRANT SELECT ON mmr._text_index TO PUBLIC;

-- The tsvector expression over the collection's text columns (alias NULL: bare column names,
-- as in an index definition).
CREATE OR REPLACE FUNCTION mmr._tsv_expr(c mmr._collection, p_config regconfig, p_alias text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF cardinality(c.text_columns) = 0 THEN
        RAISE EXCEPTION 'collection % has no text columns for lexical search', quote_literal(c.name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Declare text_columns in mmr.create_collection, or search vector legs only '
                         '(query_text => NULL).';
    END IF;
    RETURN format('pg_catalog.to_tsvector(%L::regconfig, %s)', p_config::text,
                  (SELECT string_agg(format('coalesce(%s::text, %L)',
                                            CASE WHEN p_alias IS NULL THEN format('%I', t)
                                                 ELSE format('%I.%I', p_alias, t) END, ''),
                                     ' || '' '' || ' ORDER BY i)
                     FROM unnest(c.text_columns) WITH ORDINALITY u(t, i)));
END
$$;

CREATE OR REPLACE FUNCTION mmr._text_config(c mmr._collection, p_params jsonb)
RETURNS regconfig
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((p_params ->> 'text_config')::regconfig,
                    (SELECT t.config FROM mmr._text_index t WHERE t.collection_id = c.id),
                    'english'::regconfig)
$$;

-- Create (or re-create with another configuration) the lexical GIN index (administrative).
CREATE OR REPLACE FUNCTION mmr.create_text_index(collection text, config regconfig DEFAULT 'english')
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    old regclass;
    nsp name;
    rel name;
    idx text;
BEGIN
    SELECT t.index_name INTO old FROM mmr._text_index t WHERE t.collection_id = c.id;
    IF old IS NOT NULL THEN
        EXECUTE format('DROP INDEX IF EXISTS %s', old);
    END IF;
    SELECT n.nspname, k.relname INTO nsp, rel FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
     WHERE k.oid = c.source;
    idx := left(rel, 40) || '_mmr_tsv_' || c.id;
    EXECUTE format('CREATE INDEX %I ON %s USING gin ((%s))', idx, c.source,
                   mmr._tsv_expr(c, config, NULL));
    INSERT INTO mmr._text_index AS t (collection_id, config, index_name)
    VALUES (c.id, config, format('%I.%I', nsp, idx)::regclass)
    ON CONFLICT (collection_id) DO UPDATE SET config = EXCLUDED.config, index_name = EXCLUDED.index_name;
    RETURN format('%I.%I', nsp, idx)::regclass;
END
$$;

CREATE OR REPLACE FUNCTION mmr.drop_text_index(collection text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    old regclass;
BEGIN
    DELETE FROM mmr._text_index t WHERE t.collection_id = c.id RETURNING t.index_name INTO old;
    IF old IS NOT NULL THEN
        EXECUTE format('DROP INDEX IF EXISTS %s', old);
    END IF;
END
$$;

-- The lexical leg: (key, score) of the $2 best matches of websearch_to_tsquery($9).
CREATE OR REPLACE FUNCTION mmr._lexical_sql(c mmr._collection, p_config regconfig, p_filter jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tsv text := mmr._tsv_expr(c, p_config, 's');
    where_sql text := mmr._filter_sql(c, p_filter, '$3');
BEGIN
    -- The leg reads every text column: a clear 42501 naming the one the caller may not read
    -- (086-column-privileges.sql), rather than the bare "permission denied for table".
    PERFORM mmr._require_columns_read(c, c.text_columns, 'the lexical leg of hybrid_search');
    RETURN format('SELECT %s AS key, pg_catalog.ts_rank_cd(%s, tq.q)::float8 AS score FROM %s s, '
                  'pg_catalog.websearch_to_tsquery(%L::regconfig, $9) tq(q) WHERE %s @@ tq.q%s '
                  'ORDER BY score DESC, key LIMIT $2',
                  mmr._key_json(c, 's'), tsv, c.source, p_config::text, tsv,
                  CASE WHEN where_sql IS NULL THEN '' ELSE ' AND ' || where_sql END);
END
$$;

CREATE OR REPLACE FUNCTION mmr._hybrid_plan(
    c mmr._collection, p_query_text text, p_spaces text[], p_vectors @extschema:vector@.vector[],
    p_k int, p_fusion text, p_weights float8[], p_params jsonb, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p mmr._search_plan;
    prm jsonb := coalesce(p_params, '{}');
    legs text[] := '{}';
    s mmr._space;
    nlegs int;
    n int;
    i int;
BEGIN
    PERFORM mmr._check_params(prm, '{rrf_k,norm,candidates,text_config}', 'hybrid_search');
    PERFORM mmr._check_fusion(p_fusion);
    PERFORM mmr._check_limit('k', p_k);
    PERFORM mmr._check_limit('legs', coalesce(cardinality(p_spaces), 0), 'the number of spaces');
    PERFORM mmr._check_weights(p_weights);
    IF coalesce(cardinality(p_spaces), 0) <> coalesce(cardinality(p_vectors), 0) THEN
        RAISE EXCEPTION 'spaces and vectors must pair up (% spaces, % vectors)',
                        coalesce(cardinality(p_spaces), 0), coalesce(cardinality(p_vectors), 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    nlegs := coalesce(cardinality(p_spaces), 0)
             + CASE WHEN nullif(btrim(p_query_text), '') IS NULL THEN 0 ELSE 1 END;
    IF nlegs = 0 THEN
        RAISE EXCEPTION 'hybrid_search needs a query text or at least one (space, vector) leg'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_weights IS NOT NULL AND cardinality(p_weights) <> nlegs THEN
        RAISE EXCEPTION 'weights must have one entry per leg (%: lexical first, then the spaces), not %',
                        nlegs, cardinality(p_weights)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := mmr._candidates(prm, p_k, greatest(2 * p_k, 40));
    p.n := n; p.k := p_k; p.filter := p_filter; p.weights := p_weights; p.qtext := p_query_text;
    p.nums := ARRAY[mmr._check_rrf_k(mmr._num(prm, 'rrf_k', 60))];
    p.vecs := coalesce(p_vectors, '{}');
    IF nullif(btrim(p_query_text), '') IS NOT NULL THEN
        PERFORM mmr._check_query_text(p_query_text, mmr._text_config(c, prm));
        legs := legs || mmr._lexical_sql(c, mmr._text_config(c, prm), p_filter);
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_spaces), 0) LOOP
        s := mmr._space_row(c.id, c.name, p_spaces[i]);
        PERFORM mmr._prepare_search(s, p_vectors[i], n, p_ef_search, p_max_scan_tuples, c,
                                    p_filter);
        legs := legs || format('SELECT %s AS key, %s AS score FROM (%s) l', mmr._key_json(c, 'l'),
                               mmr._score_expr(s.distance, 'l.dist'),
                               mmr._leg_sql(c, s, format('$1[%s]', i), '$2', p_filter));
        IF p.space IS NULL THEN
            p.space := s.name;
            p.qvec := p_vectors[i];
        END IF;
    END LOOP;
    p.sql := format('WITH legs AS (%s) SELECT f.key, f.score FROM (%s) f ORDER BY f.score DESC, f.key LIMIT $4',
                    (SELECT string_agg(format('SELECT %s AS leg, x.key, row_number() OVER (ORDER BY x.score DESC, x.key) AS rank, x.score FROM (%s) x',
                                              u.i, u.l), ' UNION ALL ' ORDER BY u.i)
                       FROM unnest(legs) WITH ORDINALITY u(l, i)),
                    mmr._fusion_sql(p_fusion, coalesce(prm ->> 'norm', 'minmax')));
    RETURN p;
END
$$;

CREATE OR REPLACE FUNCTION mmr.hybrid_search(
    collection text,
    query_text text,
    spaces text[] DEFAULT '{}',
    vectors @extschema:vector@.vector[] DEFAULT '{}',
    k int DEFAULT 10,
    fusion text DEFAULT 'rrf',
    weights float8[] DEFAULT NULL,
    params jsonb DEFAULT '{}',
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
    c mmr._collection;
    p mmr._search_plan;
    f text := lower(coalesce(fusion, 'rrf'));
    prm jsonb := coalesce(params, '{}');
    nlegs int := coalesce(cardinality(spaces), 0);
    has_text boolean := nullif(btrim(query_text), '') IS NOT NULL;
    n int;
    i int;
    sp mmr._space;
    legs text[] := '{}';
    lk jsonb[];
    ls float8[];
    a_key jsonb[] := '{}';
    a_leg int[] := '{}';
    a_rank int[] := '{}';
    a_score float8[] := '{}';
    rrf_k float8;
    norm text;
BEGIN
    -- Spaces and a query text but no vectors: each space's leg searches by the query text
    -- encoded with that space's encoder (mmr.embed, 066-embed.sql), once per call.
    IF coalesce(cardinality(vectors), 0) = 0 AND nlegs > 0 AND has_text THEN
        vectors := mmr._embed_each(collection, spaces, query_text);
    END IF;
    -- Fast path (no filter, no reranker, rrf/combsum/combmnz, valid arguments): each leg is one
    -- small statement (the vector legs cached per space) collected into arrays, and the fusion
    -- is a static statement whose plan PL/pgSQL keeps; the general path below plans one large
    -- statement per call.  Same formulas, candidates, ranks and tie-breaks as there.
    IF filter IS NULL AND rerank IS NULL AND mmr._fast_path_allowed(max_scan_tuples) AND k BETWEEN 1 AND 1000
       AND (ef_search IS NULL OR ef_search BETWEEN 1 AND 1000)
       AND f IN ('rrf', 'combsum', 'combmnz') AND nlegs = coalesce(cardinality(vectors), 0)
       AND (weights IS NULL OR cardinality(weights) = nlegs + has_text::int) AND nlegs <= 16
       AND nlegs + has_text::int > 0 AND jsonb_typeof(prm) = 'object'
       AND prm - 'rrf_k' - 'norm' - 'candidates' = '{}'
       AND (NOT prm ? 'rrf_k' OR jsonb_typeof(prm -> 'rrf_k') = 'number')
       AND (NOT prm ? 'candidates' OR jsonb_typeof(prm -> 'candidates') = 'number')
       AND coalesce(prm ->> 'norm', 'minmax') IN ('minmax', 'zscore', 'none') THEN
        SELECT * INTO c FROM mmr._collection x WHERE x.name = collection;
        IF FOUND AND (NOT has_text OR cardinality(c.text_columns) > 0) THEN
            -- the same checks as the general path (mmr._hybrid_plan), with its errors
            PERFORM mmr._check_weights(weights);
            rrf_k := mmr._check_rrf_k(coalesce((prm ->> 'rrf_k')::float8, 60));
            n := mmr._candidates(prm, k, greatest(2 * k, 40));
            IF has_text THEN
                PERFORM mmr._check_query_text(query_text, mmr._text_config(c, prm));
            END IF;
            FOR i IN 1 .. nlegs LOOP
                SELECT x.* INTO sp FROM mmr._space x
                 WHERE x.collection_id = c.id AND x.name = spaces[i] AND x.active
                   AND x.statements IS NOT NULL;
                EXIT WHEN NOT FOUND OR vectors[i] IS NULL
                          OR @extschema:vector@.vector_dims(vectors[i]) <> sp.dimensions
                          OR NOT mmr._norm_ok(vectors[i], sp.distance);
                legs := legs || (sp.statements ->> 'leg_agg');
            END LOOP;
            IF cardinality(legs) = nlegs THEN
                PERFORM mmr._raise_ef_search(n, ef_search);
                IF has_text THEN
                    EXECUTE format('SELECT array_agg(x.key ORDER BY x.score DESC, x.key), '
                                   'array_agg(x.score ORDER BY x.score DESC, x.key) FROM (%s) x',
                                   mmr._lexical_sql(c, mmr._text_config(c, prm), NULL))
                       INTO lk, ls
                      USING NULL::@extschema:vector@.vector[], n, NULL::jsonb, NULL::int,
                            NULL::jsonb, NULL::float8[], NULL::float8[], NULL::jsonb, query_text;
                    a_key := coalesce(lk, '{}');
                    a_score := coalesce(ls, '{}');
                    a_leg := array_fill(1, ARRAY[cardinality(a_key)]);
                    a_rank := ARRAY(SELECT generate_series(1, cardinality(a_key)));
                END IF;
                FOR i IN 1 .. nlegs LOOP
                    SELECT l.keys, l.scores INTO lk, ls
                      FROM mmr._leg_agg(legs[i], vectors[i], n) l;
                    a_key := a_key || lk;
                    a_score := a_score || ls;
                    a_leg := a_leg || array_fill(i + has_text::int, ARRAY[cardinality(lk)]);
                    a_rank := a_rank || ARRAY(SELECT generate_series(1, cardinality(lk)));
                END LOOP;
                IF f = 'rrf' THEN
                    RETURN QUERY
                        SELECT u.key, sum(coalesce(weights[u.leg], 1) / (rrf_k + u.rank))::float8
                          FROM unnest(a_key, a_leg, a_rank) u(key, leg, rank)
                         GROUP BY u.key ORDER BY 2 DESC, 1 LIMIT k;
                ELSE
                    norm := coalesce(prm ->> 'norm', 'minmax');
                    RETURN QUERY
                        SELECT z.key, (sum(coalesce(weights[z.leg], 1) * z.s)
                                       * CASE WHEN f = 'combmnz' THEN count(DISTINCT z.leg)
                                              ELSE 1 END)::float8
                          FROM (SELECT u.key, u.leg,
                                       CASE norm
                                           WHEN 'minmax' THEN (u.sc - min(u.sc) OVER w)
                                                / (max(u.sc) OVER w - min(u.sc) OVER w + 1e-12)
                                           WHEN 'zscore' THEN (u.sc - avg(u.sc) OVER w)
                                                / (coalesce(stddev_pop(u.sc) OVER w, 0) + 1e-12)
                                           ELSE u.sc END AS s
                                  FROM unnest(a_key, a_leg, a_score) u(key, leg, sc)
                                WINDOW w AS (PARTITION BY u.leg)) z
                         GROUP BY z.key ORDER BY 2 DESC, 1 LIMIT k;
                END IF;
                RETURN;
            END IF;
        END IF;
    END IF;
    c := mmr._collection_row(collection);
    p := mmr._hybrid_plan(c, query_text, spaces, vectors, mmr._rerank_depth(k, rerank, rerank_depth),
                          fusion, weights, params, filter, ef_search, max_scan_tuples);
    IF rerank IS NULL THEN
        RETURN QUERY EXECUTE p.sql USING p.vecs, p.n, p.filter, p.k, p.exclude, p.weights, p.nums,
                                         p.aux, p.qtext;
    ELSE
        RETURN QUERY SELECT * FROM mmr._execute(p, collection, k, rerank, rerank_params);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION mmr.explain_hybrid(
    collection text,
    query_text text,
    spaces text[] DEFAULT '{}',
    vectors @extschema:vector@.vector[] DEFAULT '{}',
    k int DEFAULT 10,
    fusion text DEFAULT 'rrf',
    weights float8[] DEFAULT NULL,
    params jsonb DEFAULT '{}',
    filter jsonb DEFAULT NULL,
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
    p mmr._search_plan;
    plan jsonb;
BEGIN
    p := mmr._hybrid_plan(c, query_text, spaces, vectors, k, fusion, weights, params, filter, NULL, NULL);
    EXECUTE format('EXPLAIN (FORMAT JSON, ANALYZE %s) %s',
                   CASE WHEN run_analyze THEN 'true' ELSE 'false' END, p.sql)
       INTO plan USING p.vecs, p.n, p.filter, p.k, p.exclude, p.weights, p.nums, p.aux, p.qtext;
    RETURN plan;
END
$$;
