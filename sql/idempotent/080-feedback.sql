-- Reranking hooks, plain search with reranking, Rocchio feedback, MMR diversification and
-- dialog (multi-turn) queries.
--
-- A reranker is a SQL function
--     f(collection text, space text, query vector, keys jsonb[], scores float8[], params jsonb)
--     RETURNS TABLE (key jsonb, score float8)
-- that receives the candidates best first and returns them (or a subset) in their new order.
-- Register it with mmr.register_reranker(name, 'f(text,text,vector,jsonb[],float8[],jsonb)');
-- every search function takes rerank => name, rerank_depth => n, rerank_params => jsonb.

CREATE OR REPLACE FUNCTION mmr.register_reranker(name text, function regprocedure,
                                                 description text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    args regtype[];
BEGIN
    IF register_reranker.name IS NULL OR btrim(register_reranker.name) = '' THEN
        RAISE EXCEPTION 'reranker name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM mmr._check_name('reranker', register_reranker.name);
    SELECT ARRAY(SELECT unnest(p.proargtypes::oid[]::regtype[])) INTO args FROM pg_proc p
     WHERE p.oid = register_reranker.function;
    IF args IS DISTINCT FROM ARRAY['text', 'text', '@extschema:vector@.vector', 'jsonb[]', 'float8[]',
                                   'jsonb']::regtype[]
       OR NOT (SELECT p.proretset FROM pg_proc p WHERE p.oid = register_reranker.function) THEN
        RAISE EXCEPTION 'function % does not have the reranker signature', register_reranker.function
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A reranker is f(collection text, space text, query vector, keys jsonb[], '
                         'scores float8[], params jsonb) RETURNS TABLE (key jsonb, score float8).';
    END IF;
    INSERT INTO mmr._reranker AS r (name, function, description)
    VALUES (register_reranker.name, register_reranker.function, register_reranker.description)
    ON CONFLICT (name) DO UPDATE SET function = EXCLUDED.function, description = EXCLUDED.description;
END
$$;

CREATE OR REPLACE FUNCTION mmr.unregister_reranker(name text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ DELETE FROM mmr._reranker r WHERE r.name = unregister_reranker.name $$;

CREATE OR REPLACE VIEW mmr.rerankers AS
SELECT r.name, r.function, r.description, r.created_at FROM mmr._reranker r;
GRANT SELECT ON mmr.rerankers TO PUBLIC;

-- Candidate keys ($1 jsonb[]) with their position (u.ord) and typed key columns (t.*).
CREATE OR REPLACE FUNCTION mmr._candidates_sql(c mmr._collection)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('unnest($1, $2) WITH ORDINALITY u(key, score, ord), LATERAL (SELECT %s) t',
                  mmr._key_from_json(c, 'u.key'))
$$;

-- Exact rescoring at full precision: the distance of the query to each candidate's embedding
-- cast to `vector` (after a halfvec candidate search), in this space or params.exact_space
-- (e.g. a full-precision copy of a quantised space).  Candidates missing there are dropped.
CREATE OR REPLACE FUNCTION mmr.rerank_exact(collection text, space text,
                                            query @extschema:vector@.vector, keys jsonb[],
                                            scores float8[], params jsonb)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, coalesce(params ->> 'exact_space', space));
BEGIN
    PERFORM mmr._check_vector(query, s.dimensions, s.distance, 'the query vector');
    RETURN QUERY EXECUTE format(
        'SELECT u.key, %s AS score FROM %s JOIN %s e ON %s ORDER BY score DESC, u.ord',
        mmr._score_expr(s.distance, format('e.embedding::@extschema:vector@.vector OPERATOR(@extschema:vector@.%s) $3',
                                           mmr._distance_op(s.distance))),
        mmr._candidates_sql(c), s.embedding_table, mmr._key_join(c, 'e', 't'))
      USING keys, scores, query;
END
$$;

-- Caption-based reranking: score = (1−w)·score + w·sim(caption embedding, caption query) with
-- params caption_space (required), caption_query (a vector; default the query), weight (0.5).
CREATE OR REPLACE FUNCTION mmr.rerank_caption(collection text, space text,
                                              query @extschema:vector@.vector, keys jsonb[],
                                              scores float8[], params jsonb)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    cs mmr._space;
    cq @extschema:vector@.vector := coalesce(mmr._jvec(params -> 'caption_query'), query);
    w float8 := mmr._check_real('caption weight', mmr._num(params, 'weight', 0.5), 0, 1, false,
                                'weight blends the caption similarity in: 0 <= weight <= 1.');
BEGIN
    PERFORM mmr._check_scores(scores);
    IF params ->> 'caption_space' IS NULL THEN
        RAISE EXCEPTION 'reranker caption needs rerank_params {"caption_space": "..."}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cs := mmr._space_row(c.id, collection, params ->> 'caption_space');
    PERFORM mmr._check_vector(cq, cs.dimensions, cs.distance, 'the caption query');
    RETURN QUERY EXECUTE format(
        'SELECT u.key, ((1 - $4) * u.score + $4 * coalesce(%s, 0))::float8 AS score '
        'FROM %s LEFT JOIN %s e ON %s ORDER BY score DESC, u.ord',
        mmr._sim(cs, 'e', '$3'), mmr._candidates_sql(c), cs.embedding_table,
        mmr._key_join(c, 'e', 't'))
      USING keys, scores, cq, w;
END
$$;

-- Diversification by Maximal Marginal Relevance (Carbonell and Goldstein 1998) of the candidates
-- (relevance = their scores, similarity = cosine of their embeddings in the space); params
-- lambda (0.5).  Registered as 'diversify' and, deprecated, as 'mmr'.
CREATE OR REPLACE FUNCTION mmr.rerank_diversify(collection text, space text,
                                          query @extschema:vector@.vector, keys jsonb[],
                                          scores float8[], params jsonb)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    ks jsonb[];
    ss float8[];
    embs @extschema:vector@.vector[];
    sims float8[];
    ord int[];
BEGIN
    PERFORM mmr._check_scores(scores);
    EXECUTE format('SELECT array_agg(u.key ORDER BY u.ord), array_agg(u.score ORDER BY u.ord), '
                   'array_agg(e.embedding::@extschema:vector@.vector ORDER BY u.ord) '
                   'FROM %s JOIN %s e ON %s',
                   mmr._candidates_sql(c), s.embedding_table, mmr._key_join(c, 'e', 't'))
       INTO ks, ss, embs USING keys, scores;
    IF ks IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(x.r ORDER BY x.i) INTO sims
      FROM (SELECT a.i, array_agg(mmr.vec_cos(a.v, b.v) ORDER BY b.j) AS r
              FROM unnest(embs) WITH ORDINALITY a(v, i), unnest(embs) WITH ORDINALITY b(v, j)
             GROUP BY a.i) x;
    ord := mmr.mmr_order(ss, sims, mmr._check_real('MMR lambda', mmr._num(params, 'lambda', 0.5),
                                                   0, 1, false,
                                                   'lambda weighs relevance against diversity: '
                                                   '0 <= lambda <= 1 (default 0.5).'));
    RETURN QUERY SELECT ks[o.i], ss[o.i] FROM unnest(ord) WITH ORDINALITY o(i, pos) ORDER BY o.pos;
END
$$;

-- Deprecated alias of mmr.rerank_diversify (its old name; removed in the next release).
CREATE OR REPLACE FUNCTION mmr.rerank_mmr(collection text, space text,
                                          query @extschema:vector@.vector, keys jsonb[],
                                          scores float8[], params jsonb)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM mmr.rerank_diversify(collection, space, query, keys, scores, params) $$;

COMMENT ON FUNCTION mmr.rerank_mmr(text, text, @extschema:vector@.vector, jsonb[], float8[], jsonb)
    IS 'deprecated: use mmr.rerank_diversify';

INSERT INTO mmr._reranker (name, function, description) VALUES
    ('exact', 'mmr.rerank_exact(text,text,@extschema:vector@.vector,jsonb[],float8[],jsonb)'::regprocedure,
     'exact full-precision rescoring (params: exact_space)'),
    ('caption', 'mmr.rerank_caption(text,text,@extschema:vector@.vector,jsonb[],float8[],jsonb)'::regprocedure,
     'blend with caption-space similarity (params: caption_space, caption_query, weight)'),
    ('diversify', 'mmr.rerank_diversify(text,text,@extschema:vector@.vector,jsonb[],float8[],jsonb)'::regprocedure,
     'maximal marginal relevance diversification (params: lambda)'),
    ('mmr', 'mmr.rerank_diversify(text,text,@extschema:vector@.vector,jsonb[],float8[],jsonb)'::regprocedure,
     'deprecated name of ''diversify'' (maximal marginal relevance diversification; params: lambda)')
ON CONFLICT (name) DO UPDATE SET function = EXCLUDED.function, description = EXCLUDED.description;

-- Embeddings of rows given by a JSON array of keys (rows without one are skipped).
CREATE OR REPLACE FUNCTION mmr._embeddings_of(c mmr._collection, s mmr._space, p_keys jsonb)
RETURNS @extschema:vector@.vector[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out_ @extschema:vector@.vector[];
BEGIN
    IF p_keys IS NULL OR jsonb_typeof(p_keys) <> 'array' THEN
        RAISE EXCEPTION 'expected a JSON array of keys, not %', p_keys
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM mmr._check_limit('feedback_keys', jsonb_array_length(p_keys), 'the number of keys');
    EXECUTE format('SELECT array_agg(e.embedding::@extschema:vector@.vector ORDER BY u.ord) '
                   'FROM jsonb_array_elements($1) WITH ORDINALITY u(key, ord), '
                   'LATERAL (SELECT %s) t JOIN %s e ON %s',
                   mmr._key_from_json(c, 'u.key'), s.embedding_table, mmr._key_join(c, 'e', 't'))
       INTO out_ USING p_keys;
    RETURN coalesce(out_, '{}');
END
$$;

-- Rocchio relevance feedback: q' = n(α·q + β·mean(relevant) − γ·mean(non-relevant)), then a
-- single-vector search with q'.  params: alpha (1), beta (0.75), gamma (0.15), fb_docs (10),
-- relevant / nonrelevant (JSON arrays of keys; without relevant, the first fb_docs rows of the
-- initial search are taken as relevant: pseudo-relevance feedback).
CREATE OR REPLACE FUNCTION mmr.rocchio_search(
    collection text,
    space text,
    query @extschema:vector@.vector,
    k int DEFAULT 10,
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
SET hnsw.iterative_scan = strict_order
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    prm jsonb := coalesce(params, '{}');
    rel @extschema:vector@.vector[];
    nonrel @extschema:vector@.vector[];
    fb int;
    q2 @extschema:vector@.vector;
BEGIN
    PERFORM mmr._check_params(prm, '{alpha,beta,gamma,fb_docs,relevant,nonrelevant}', 'rocchio_search');
    fb := mmr._check_limit('fb_docs', mmr._num(prm, 'fb_docs', 10), 'params.fb_docs');
    PERFORM mmr._rerank_depth(k, rerank, rerank_depth);
    IF prm ? 'relevant' THEN
        rel := mmr._embeddings_of(c, s, prm -> 'relevant');
    ELSE
        PERFORM mmr._prepare_search(s, query, fb, ef_search, max_scan_tuples, c, filter);
        EXECUTE format('SELECT array_agg(e.embedding::@extschema:vector@.vector ORDER BY l.dist) '
                       'FROM (%s) l JOIN %s e ON %s',
                       mmr._leg_sql(c, s, '$1[1]', '$2', filter), s.embedding_table,
                       mmr._key_join(c, 'l', 'e'))
           INTO rel USING ARRAY[query], fb, filter;
    END IF;
    IF prm ? 'nonrelevant' THEN
        nonrel := mmr._embeddings_of(c, s, prm -> 'nonrelevant');
    END IF;
    q2 := mmr.rocchio_query(query, rel, nonrel, mmr._num(prm, 'alpha', 1), mmr._num(prm, 'beta', 0.75),
                            mmr._num(prm, 'gamma', 0.15));
    RETURN QUERY SELECT * FROM mmr._execute(
        mmr._single_plan(c, s, q2, mmr._rerank_depth(k, rerank, rerank_depth), filter, NULL,
                         ef_search, max_scan_tuples),
        collection, k, rerank, rerank_params);
END
$$;

-- Diversified search: the first `candidates` rows, reordered greedily by Maximal Marginal
-- Relevance (λ weighs relevance against diversity).
CREATE OR REPLACE FUNCTION mmr.diversify_search(
    collection text,
    space text,
    query @extschema:vector@.vector,
    k int DEFAULT 10,
    lambda float8 DEFAULT 0.5,
    candidates int DEFAULT 50,
    filter jsonb DEFAULT NULL,
    ef_search int DEFAULT NULL,
    max_scan_tuples int DEFAULT NULL)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM mmr._search_general(collection, space, query, k, filter, ef_search,
                                      max_scan_tuples, 'diversify',
                                      greatest(mmr._check_limit('candidates', candidates), k),
                                      jsonb_build_object('lambda', mmr._check_real(
                                          'MMR lambda', lambda, 0, 1, false,
                                          'lambda weighs relevance against diversity: '
                                          '0 <= lambda <= 1 (default 0.5).')))
$$;

-- Deprecated alias of mmr.diversify_search (its old name, which was also the schema's; removed
-- in the next release).
CREATE OR REPLACE FUNCTION mmr.mmr_search(
    collection text,
    space text,
    query @extschema:vector@.vector,
    k int DEFAULT 10,
    lambda float8 DEFAULT 0.5,
    candidates int DEFAULT 50,
    filter jsonb DEFAULT NULL,
    ef_search int DEFAULT NULL,
    max_scan_tuples int DEFAULT NULL)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM mmr.diversify_search(collection, space, query, k, lambda, candidates, filter,
                                       ef_search, max_scan_tuples)
$$;

COMMENT ON FUNCTION mmr.mmr_search(text, text, @extschema:vector@.vector, int, float8, int, jsonb,
                                   int, int)
    IS 'deprecated: use mmr.diversify_search';

-- Dialog (multi-turn) query from the embeddings of the turns (caption, then answers...):
-- q = n(Σ w_i·n(v_i)) with params weighting = mean (default) | last | decay (w_i = decay^(T−i),
-- decay 0.5).  ChatIR's zero-shot baseline instead encodes the joined text of the turns
-- ("caption, q1 a1, ...") once: do that client side and call mmr.search.
CREATE OR REPLACE FUNCTION mmr.dialog_search(
    collection text,
    space text,
    turns @extschema:vector@.vector[],
    k int DEFAULT 10,
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
SET hnsw.iterative_scan = strict_order
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    prm jsonb := coalesce(params, '{}');
    mode_ text := coalesce(prm ->> 'weighting', 'mean');
    nt int := coalesce(cardinality(turns), 0);
    w float8[];
    q @extschema:vector@.vector;
BEGIN
    PERFORM mmr._check_params(prm, '{weighting,decay}', 'dialog_search');
    IF nt = 0 THEN
        RAISE EXCEPTION 'turns must hold at least one vector' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM mmr._check_limit('turns', nt, 'the number of turns');
    PERFORM mmr._rerank_depth(k, rerank, rerank_depth);
    IF mode_ = 'decay' THEN
        PERFORM mmr._check_real('decay', mmr._num(prm, 'decay', 0.5), 0, 1, true,
                                'Turn i of T weighs decay^(T - i): 0 < decay <= 1 (default 0.5).');
    END IF;
    IF mode_ NOT IN ('mean', 'last', 'decay') THEN
        RAISE EXCEPTION 'weighting must be mean, last or decay, not %', quote_literal(mode_)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. nt LOOP
        PERFORM mmr._check_vector(turns[i], s.dimensions, s.distance, format('turn %s', i));
    END LOOP;
    w := ARRAY(SELECT CASE mode_ WHEN 'mean' THEN 1
                                 WHEN 'last' THEN (i = nt)::int
                                 ELSE power(mmr._num(prm, 'decay', 0.5), nt - i) END
                 FROM generate_series(1, nt) i ORDER BY i);
    q := mmr.vec_normalize(mmr.vec_weighted_sum(
        ARRAY(SELECT mmr.vec_normalize(t.v) FROM unnest(turns) WITH ORDINALITY t(v, i) ORDER BY t.i), w));
    RETURN QUERY SELECT * FROM mmr._execute(
        mmr._single_plan(c, s, q, mmr._rerank_depth(k, rerank, rerank_depth), filter, NULL,
                         ef_search, max_scan_tuples),
        collection, k, rerank, rerank_params);
END
$$;

-- The content of rows given by key (for client-side rerankers that score content): one row per
-- key found, in the keys' order; `content` for text-like columns, `content_bytes` for bytea.
-- Runs with the caller's rights (grants and row-level security of the table apply).
CREATE OR REPLACE FUNCTION mmr.row_contents(collection text, keys jsonb[], column_name text)
RETURNS TABLE (key jsonb, content text, content_bytes bytea)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    typ regtype := mmr._column_type(c.source, column_name);
BEGIN
    IF typ IS NULL THEN
        RAISE EXCEPTION 'table % has no column %', c.source, quote_ident(column_name)
            USING ERRCODE = 'undefined_column';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT u.key, %s, %s FROM %s JOIN %s s ON %s ORDER BY u.ord',
        CASE WHEN typ = 'bytea'::regtype THEN 'NULL::text' ELSE format('s.%I::text', column_name) END,
        CASE WHEN typ = 'bytea'::regtype THEN format('s.%I', column_name) ELSE 'NULL::bytea' END,
        mmr._candidates_sql(c), c.source, mmr._key_join(c, 's', 't'))
      USING keys, NULL::float8[];
END
$$;
