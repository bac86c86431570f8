-- Composed-query search (reference image + modification text), FUSION.md §1-§2.3.
--
-- The methods (mmr._composed_methods) and their plan builders, the composed fast paths, and the
-- entry points.  The plan protocol and the shared statement builders and executor are in
-- 045-search.sql.

-- Readable through row-level security only (086-column-privileges.sql): a row is visible to
-- roles that may read the whole space it aggregates.
GRANT SELECT ON mmr._projection TO PUBLIC;

GRANT SELECT ON mmr._reranker TO PUBLIC;

-- Two-leg late fusion (score_sum, product): the candidates of both legs ($1[1] the reference,
-- $1[2] the modifier, $2 rows each), each scored against both queries from the embedding its
-- leg carried; $5 an excluded key.
-- p_checked (the fast path's variant, scanned without iterative scans): the statement returns no
-- row at all unless both legs returned their $2 candidates; the caller then scans again with
-- iterative scans on (see mmr._top_up_scan).
DROP FUNCTION IF EXISTS mmr._pair_sql(mmr._collection, mmr._space, jsonb, text);

CREATE OR REPLACE FUNCTION mmr._pair_sql(c mmr._collection, s mmr._space, p_filter jsonb,
                                         p_method text, p_checked boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN format(
        'WITH l AS %s((%s) UNION ALL (%s)), '
        'u AS (SELECT DISTINCT ON (%s) %s, l.embedding FROM l), '
        'r AS (SELECT %s AS key, %s AS s1, %s AS s2 FROM u) '
        'SELECT r.key, (%s)::float8 AS score FROM r WHERE ($5 IS NULL OR r.key <> $5)%s '
        'ORDER BY score DESC, r.key LIMIT $4',
        CASE WHEN p_checked THEN 'MATERIALIZED ' ELSE '' END,
        mmr._leg_sql(c, s, '$1[1]', '$2', p_filter, true),
        mmr._leg_sql(c, s, '$1[2]', '$2', p_filter, true),
        mmr._key_list(c, 'l'), mmr._key_list(c, 'l'),
        mmr._key_json(c, 'u'), mmr._sim(s, 'u', '$1[1]'), mmr._sim(s, 'u', '$1[2]'),
        CASE p_method WHEN 'score_sum' THEN 'r.s1 + r.s2'
                      ELSE 'greatest(r.s1, 0) * greatest(r.s2, 0)' END,
        CASE WHEN p_checked THEN ' AND (SELECT count(*) FROM l) >= 2 * $2' ELSE '' END);
END
$$;

-- GQR's candidate pool U (FUSION.md §2.3): the top $2 of the primary query $1[1] on space s and
-- of the complementary query $1[2] on comp, as arrays ordered by key: keys, full-precision
-- embeddings of s, and scores in comp (-1 where a row has none); $5 a key to exclude.  With
-- p_checked the arrays are NULL unless both legs returned $2 rows (the fast path scans without
-- iterative scans and falls back to the general path when a leg comes back short).
CREATE OR REPLACE FUNCTION mmr._gqr_union_sql(c mmr._collection, s mmr._space, comp mmr._space,
                                              p_filter jsonb, p_checked boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kj text := mmr._key_json(c, 'e');
    same boolean := comp.id = s.id;  -- scores in comp come from e itself
BEGIN
    RETURN format(
        'WITH l AS MATERIALIZED ((%s) UNION ALL (%s)), u AS (SELECT DISTINCT %s FROM l) '
        'SELECT array_agg(%s ORDER BY %s), '
        'array_agg(e.embedding::@extschema:vector@.vector ORDER BY %s), '
        'array_agg(coalesce(%s, -1) ORDER BY %s) FROM u JOIN %s e ON %s %s '
        'WHERE ($5 IS NULL OR %s <> $5)%s',
        mmr._leg_sql(c, s, '$1[1]', '$2', p_filter), mmr._leg_sql(c, comp, '$1[2]', '$2', p_filter),
        mmr._key_list(c, 'l'), kj, kj, kj,
        mmr._sim(comp, CASE WHEN same THEN 'e' ELSE 'x' END, '$1[2]'), kj,
        s.embedding_table, mmr._key_join(c, 'u', 'e'),
        CASE WHEN same THEN ''
             ELSE format('LEFT JOIN %s x ON %s', comp.embedding_table, mmr._key_join(c, 'u', 'x')) END,
        kj, CASE WHEN p_checked THEN ' AND (SELECT count(*) FROM l) >= 2 * $2' ELSE '' END);
END
$$;

-- GQR's options on the fast path (mmr._composed_exec_plan): NULL unless params holds numbers
-- under GQR's own names only (alpha, a, temperature, lr, steps, candidates); else checked
-- (mmr._check_gqr_params and mmr._candidates: the general path's errors) and with the defaults
-- of FUSION.md §2.3 filled in; n: the candidates per leg.  STABLE, not IMMUTABLE: a plan with
-- constant arguments must not evaluate it (and raise its errors) for another method.
CREATE OR REPLACE FUNCTION mmr._gqr_fast_options(prm jsonb, p_k int)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(prm) <> 'object' OR EXISTS (
           SELECT FROM jsonb_each(prm) e
            WHERE e.key <> ALL ('{alpha,a,temperature,lr,steps,candidates}')
               OR jsonb_typeof(e.value) <> 'number') THEN
        RETURN NULL;
    END IF;
    PERFORM mmr._check_gqr_params(prm);
    RETURN jsonb_build_object('n', mmr._candidates(prm, p_k + 1, 10),
                              'alpha', mmr._num(prm, 'alpha', 0.5), 'a', mmr._num(prm, 'a', 0.5),
                              'temperature', mmr._num(prm, 'temperature', 1),
                              'lr', mmr._num(prm, 'lr', 5e-3),
                              'steps', mmr._num(prm, 'steps', 15)::int);
END
$$;

-- GQR's statement on one space (no caption space or query), as the general path computes it
-- (mmr._plan_gqr): the candidate pool U of $1[1] (the weighted query) and $1[2] (the modifier),
-- $2 rows each (mmr._gqr_union_sql; checked: no rows unless both legs are complete), the
-- weighted query refined by mmr.gqr_refine with the options $6, U re-scored by it, best $4.
-- $3 (filter) and $5 (a key to exclude) as for the pool.  (OFFSET 0 keeps the refinement one
-- subquery, run once: flattened, it ran for every candidate it scores.)
CREATE OR REPLACE FUNCTION mmr._gqr_fast_sql(c mmr._collection, s mmr._space, p_checked boolean)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format(
        'SELECT (pg_catalog.to_jsonb(u.keys) -> (e.i::int - 1)) AS key, '
        'mmr.vec_dot(r.q, e.v) AS score FROM (%s) u(keys, embs, s2) '
        'CROSS JOIN LATERAL (SELECT mmr.gqr_refine($1[1], u.embs, u.s2, '
        '($6 ->> ''a'')::float8, ($6 ->> ''temperature'')::float8, ($6 ->> ''lr'')::float8, '
        '($6 ->> ''steps'')::int) AS q OFFSET 0) r '
        'CROSS JOIN LATERAL unnest(u.embs) WITH ORDINALITY e(v, i) '
        'WHERE u.keys IS NOT NULL '
        'ORDER BY score DESC, key LIMIT $4',
        mmr._gqr_union_sql(c, s, s, NULL, p_checked))
$$;

-- Names of the caption spaces given in params (caption_spaces: [..] or caption_space: "..").
CREATE OR REPLACE FUNCTION mmr._caption_spaces(c mmr._collection, s mmr._space, p jsonb)
RETURNS mmr._space[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    names text[];
    out_ mmr._space[] := '{}';
    cs mmr._space;
    nm text;
BEGIN
    IF p ? 'caption_spaces' THEN
        IF jsonb_typeof(p -> 'caption_spaces') <> 'array' THEN
            RAISE EXCEPTION 'caption_spaces must be an array of space names'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        names := ARRAY(SELECT jsonb_array_elements_text(p -> 'caption_spaces'));
    ELSIF p ? 'caption_space' THEN
        names := ARRAY[p ->> 'caption_space'];
    ELSE
        RETURN out_;
    END IF;
    FOREACH nm IN ARRAY names LOOP
        cs := mmr._space_row(c.id, c.name, nm);
        IF cs.dimensions <> s.dimensions THEN
            RAISE EXCEPTION 'caption space % has % dimensions, but space % has %: they must share '
                            'one embedding space', quote_literal(cs.name), cs.dimensions,
                            quote_literal(s.name), s.dimensions
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        out_ := out_ || cs;
    END LOOP;
    RETURN out_;
END
$$;

-- Plan builders, one per composed method (registered in mmr._composed_methods, below), all
-- with one signature: each sets the query vectors p.vecs and, for a multi-leg statement, p.sql
-- (left NULL: one vector, which mmr._composed_plan runs as the HNSW statement).  mmr._composed_plan
-- has checked k, the vectors and the parameter names before calling one.

-- Method image_only.
CREATE OR REPLACE FUNCTION mmr._plan_image_only(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    p.vecs := ARRAY[p_ref];
    RETURN p;
END
$$;

-- Method text_only.
CREATE OR REPLACE FUNCTION mmr._plan_text_only(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    p.vecs := ARRAY[p_mod];
    RETURN p;
END
$$;

-- Method weighted.
CREATE OR REPLACE FUNCTION mmr._plan_weighted(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    p.vecs := ARRAY[mmr.vec_lerp(p_ref, p_mod, mmr._num(prm, 'alpha', 0.5))];
    RETURN p;
END
$$;

-- Method slerp.
CREATE OR REPLACE FUNCTION mmr._plan_slerp(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    p.vecs := ARRAY[mmr.vec_slerp(p_ref, p_mod, mmr._num(prm, 'alpha', 0.5))];
    RETURN p;
END
$$;

-- Method pdv.
CREATE OR REPLACE FUNCTION mmr._plan_pdv(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rc @extschema:vector@.vector;
BEGIN
    -- a vector, or a text encoded in the caption space (else this space): mmr.embed
    rc := mmr._jvec_or_embed(c.name, coalesce(prm ->> 'caption_space', s.name),
                             prm -> 'reference_caption');
    IF rc IS NULL AND prm ? 'caption_space' AND p_ref_key IS NOT NULL THEN
        rc := mmr._embedding_of(c, mmr._space_row(c.id, c.name, prm ->> 'caption_space'), p_ref_key);
    END IF;
    IF rc IS NULL THEN
        RAISE EXCEPTION 'method pdv needs the reference''s caption embedding'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass params {"reference_caption": [...]} (the text embedding of a '
                         'description of the reference), or a caption_space holding it when '
                         'the reference is a stored row; the modifier is the composed text.';
    END IF;
    PERFORM mmr._check_vector(rc, s.dimensions, s.distance, 'reference_caption');
    p.vecs := ARRAY[mmr.pdv_query(p_ref, rc, p_mod, mmr._num(prm, 'alpha_i', 1.4),
                                  mmr._num(prm, 'alpha_t', 1.2), mmr._num(prm, 'beta', 0.75))];
    RETURN p;
END
$$;

-- Methods score_sum and product.
CREATE OR REPLACE FUNCTION mmr._plan_pair(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    p.vecs := ARRAY[mmr.vec_normalize(p_ref), mmr.vec_normalize(p_mod)];
    p.sql := mmr._pair_sql(c, s, p_filter, m);
    RETURN p;
END
$$;

-- Method weimocir.
CREATE OR REPLACE FUNCTION mmr._plan_weimocir(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    alpha float8;
    beta float8;
    caps mmr._space[];
    cs mmr._space;
    refcaps @extschema:vector@.vector[];
    legs text[] := '{}';
    joins text := '';
    capsum text[] := '{}';
    j int;
BEGIN
    alpha := mmr._num(prm, 'alpha', 0.8);
    beta := mmr._num(prm, 'beta', 0.1);
    -- Query fusion on the (unit) stored embeddings: q = n((1−α)·v_r + α·t_m).
    p.vecs := ARRAY[mmr.vec_normalize(mmr.vec_mix(p_ref, p_mod, alpha))];
    caps := mmr._caption_spaces(c, s, prm);
    PERFORM mmr._check_limit('legs', cardinality(caps), 'the number of caption spaces');
    IF cardinality(caps) = 0 OR beta = 0 THEN
    ELSE
        -- vectors, or texts each encoded in its caption space (mmr.embed)
        refcaps := mmr._jvecs_or_embed(c.name, ARRAY(SELECT x.name FROM unnest(caps) x),
                                       prm -> 'reference_captions');
        IF refcaps IS NULL AND p_ref_key IS NOT NULL THEN
            refcaps := ARRAY(SELECT mmr._embedding_of(c, x, p_ref_key) FROM unnest(caps) x);
        END IF;
        IF refcaps IS NULL OR cardinality(refcaps) <> cardinality(caps) THEN
            RAISE EXCEPTION 'method weimocir with % caption space(s) needs as many reference '
                            'caption embeddings, got %', cardinality(caps),
                            coalesce(cardinality(refcaps), 0)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass params {"reference_captions": [[...], ...]} or search by a '
                             'stored reference key.';
        END IF;
        -- Every leg carries its embeddings; a candidate another leg found is looked up in
        -- a space only when that space's leg did not return it (a scalar sub-select that
        -- coalesce evaluates only then).
        legs := ARRAY[format('l0 AS (%s)', mmr._leg_sql(c, s, '$1[1]', '$2', p_filter, true))];
        FOR j IN 1 .. cardinality(caps) LOOP
            cs := caps[j];
            PERFORM mmr._check_vector(refcaps[j], s.dimensions, s.distance,
                                      format('reference caption %s', j));
            -- The caption branch fuses the reference's j-th caption, not its image.
            p.vecs := p.vecs || mmr.vec_normalize(mmr.vec_mix(refcaps[j], p_mod, alpha));
            legs := legs || format('l%s AS (%s)', j, mmr._leg_sql(c, cs, format('$1[%s]', j + 1),
                                                                  '$2', p_filter, true));
            joins := joins || format(' LEFT JOIN l%s ON %s', j, mmr._key_join(c, 'u', 'l' || j));
            capsum := capsum || format(
                'coalesce(%s, 0)',
                mmr._sim_of(cs, format('coalesce(l%s.embedding, (SELECT x.embedding FROM %s x WHERE %s))',
                                       j, cs.embedding_table, mmr._key_join(c, 'x', 'u')),
                            format('$1[%s]', j + 1)));
        END LOOP;
        p.nums := ARRAY[beta];
        p.sql := format(
            'WITH %s, u AS (SELECT DISTINCT %s FROM (%s) l), '
            'r AS (SELECT %s AS key, %s AS s_img, (%s) / %s AS s_cap '
            'FROM u LEFT JOIN l0 ON %s%s) '
            'SELECT r.key, ($7[1] * r.s_cap + (1 - $7[1]) * r.s_img)::float8 AS score FROM r '
            'WHERE r.s_img IS NOT NULL AND ($5 IS NULL OR r.key <> $5) '
            'ORDER BY score DESC, r.key LIMIT $4',
            array_to_string(legs, ', '), mmr._key_list(c, 'l'),
            (SELECT string_agg(format('(SELECT %s FROM l%s)', mmr._key_list(c, 'l' || (i - 1)),
                                      i - 1), ' UNION ALL ' ORDER BY i)
               FROM generate_series(1, cardinality(legs)) i),
            mmr._key_json(c, 'u'),
            mmr._sim_of(s, format('coalesce(l0.embedding, (SELECT x.embedding FROM %s x WHERE %s))',
                                  s.embedding_table, mmr._key_join(c, 'x', 'u')), '$1[1]'),
            array_to_string(capsum, ' + '), cardinality(caps),
            mmr._key_join(c, 'u', 'l0'), joins);
    END IF;
    RETURN p;
END
$$;

-- Method basic.
CREATE OR REPLACE FUNCTION mmr._plan_basic(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proj mmr._projection;
    vbar @extschema:vector@.vector;
    pv @extschema:vector@.vector;
    tbar @extschema:vector@.vector;
    qe_vecs @extschema:vector@.vector[];
    qe_sims float8[];
    w float8[];
    mode_ text;
    minsrc text;
BEGIN
    IF s.distance <> 'cosine' THEN
        RAISE EXCEPTION 'method basic needs a cosine space (unit-norm embeddings), not %',
                        s.distance USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The projection aggregates the whole space: only for roles that may read all of it
    -- (086-column-privileges.sql; its row-level security hides it from the others).
    PERFORM mmr._require_aggregate_read(c, s);
    SELECT * INTO proj FROM mmr._projection x
     WHERE x.space_id = s.id AND x.name = coalesce(prm ->> 'projection', 'basic');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'space % has no BASIC projection %', quote_literal(s.name),
                        quote_literal(coalesce(prm ->> 'projection', 'basic'))
            USING ERRCODE = 'undefined_object',
                  HINT = 'Compute and store one from positive/negative text embeddings with '
                         'pg_mmretrieval.retrieval.store_basic_projection(...) or '
                         'mmr.set_projection(...).';
    END IF;
    -- 1-2. Centering and contrastive projection of the query image.
    vbar := mmr.vec_normalize(p_ref) OPERATOR(@extschema:vector@.-) proj.mu_image;
    pv := mmr.vec_project(proj.basis, vbar);
    -- 3. Query expansion: top qe_k rows by (P v̄_r)·x̄ plus the query (sim 1), weights
    --    softmax(qe_scale·s); q_v = P·Σ w_i x̄_i.
    IF mmr._bool(prm, 'query_expansion', true) THEN
        EXECUTE format('SELECT array_agg(e.embedding::@extschema:vector@.vector ORDER BY l.dist), '
                       'array_agg(%s - $7[1] ORDER BY l.dist) FROM (%s) l JOIN %s e ON %s',
                       mmr._ip(s, 'e', '$1[1]'), mmr._leg_sql(c, s, '$1[1]', '$2', p_filter),
                       s.embedding_table, mmr._key_join(c, 'l', 'e'))
           INTO qe_vecs, qe_sims
          USING ARRAY[pv], mmr._check_limit('qe_k', mmr._num(prm, 'qe_k', 25), 'params.qe_k'), p_filter, NULL::int, NULL::jsonb,
                NULL::float8[], ARRAY[mmr.vec_dot(pv, proj.mu_image)];
        qe_vecs := ARRAY(SELECT x OPERATOR(@extschema:vector@.-) proj.mu_image
                           FROM unnest(coalesce(qe_vecs, '{}')) WITH ORDINALITY u(x, i) ORDER BY i);
        w := mmr.softmax(ARRAY(SELECT mmr._num(prm, 'qe_scale', 0.1) * x
                                 FROM unnest(1::float8 || coalesce(qe_sims, '{}')) WITH ORDINALITY u(x, i)
                                ORDER BY i));
        pv := mmr.vec_project(proj.basis, mmr.vec_weighted_sum(vbar || qe_vecs, w));
    END IF;
    tbar := mmr.vec_normalize(p_mod) OPERATOR(@extschema:vector@.-) proj.mu_text;
    PERFORM mmr._check_vector(pv, s.dimensions, s.distance, 'the projected BASIC query');
    PERFORM mmr._check_vector(tbar, s.dimensions, s.distance, 'the centred BASIC text query');
    p.vecs := ARRAY[pv, tbar, mmr.vec_scale(pv, -1), mmr.vec_scale(tbar, -1)];
    mode_ := coalesce(prm ->> 'min_norm', 'paper');
    IF mode_ NOT IN ('paper', 'code', 'none') THEN
        RAISE EXCEPTION 'min_norm must be paper, code or none, not %', quote_literal(mode_)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    minsrc := coalesce(prm ->> 'min_norm_source',
                       CASE WHEN proj.s_v_min IS NOT NULL AND proj.s_t_min IS NOT NULL
                            THEN 'stored' ELSE 'query' END);
    IF minsrc NOT IN ('stored', 'query') THEN
        RAISE EXCEPTION 'min_norm_source must be stored or query, not %', quote_literal(minsrc)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF minsrc = 'stored' AND (proj.s_v_min IS NULL OR proj.s_t_min IS NULL) THEN
        RAISE EXCEPTION 'projection % stores no minimum similarities', quote_literal(proj.name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use min_norm_source "query", or store s_v_min and s_t_min.';
    END IF;
    -- $7: [q_v·μ_v, t̄·μ_v, λ, stored s_v_min, stored s_t_min]
    p.nums := ARRAY[mmr.vec_dot(pv, proj.mu_image), mmr.vec_dot(tbar, proj.mu_image),
                    mmr._num(prm, 'lambda', 0.1), proj.s_v_min, proj.s_t_min];
    -- The per-query minimum of q·x̄ is the farthest row: the nearest to −q (one more
    -- index probe per modality), so s_min needs no scan of the whole space.
    p.sql := format(
        'WITH u AS (SELECT DISTINCT %s FROM ((%s) UNION ALL (%s)) l), '
        'mn AS (SELECT %s AS v_min, %s AS t_min), '
        'r AS (SELECT %s AS key, %s - $7[1] AS s_v, %s - $7[2] AS s_t FROM u JOIN %s e ON %s), '
        'nr AS (SELECT r.key, %s AS sv, %s AS st FROM r, mn) '
        'SELECT nr.key, mmr.harris(nr.st, nr.sv, $7[3]) AS score FROM nr '
        'WHERE $5 IS NULL OR nr.key <> $5 ORDER BY score DESC, nr.key LIMIT $4',
        mmr._key_list(c, 'l'), mmr._leg_sql(c, s, '$1[1]', '$2', p_filter),
        mmr._leg_sql(c, s, '$1[2]', '$2', p_filter),
        CASE minsrc WHEN 'stored' THEN '$7[4]' ELSE format(
            '(SELECT min(%s) - $7[1] FROM (%s) l JOIN %s e ON %s)', mmr._ip(s, 'e', '$1[1]'),
            mmr._leg_sql(c, s, '$1[3]', '10', p_filter), s.embedding_table,
            mmr._key_join(c, 'l', 'e')) END,
        CASE minsrc WHEN 'stored' THEN '$7[5]' ELSE format(
            '(SELECT min(%s) - $7[2] FROM (%s) l JOIN %s e ON %s)', mmr._ip(s, 'e', '$1[2]'),
            mmr._leg_sql(c, s, '$1[4]', '10', p_filter), s.embedding_table,
            mmr._key_join(c, 'l', 'e')) END,
        mmr._key_json(c, 'e'), mmr._ip(s, 'e', '$1[1]'), mmr._ip(s, 'e', '$1[2]'),
        s.embedding_table, mmr._key_join(c, 'u', 'e'),
        CASE mode_ WHEN 'none' THEN 'r.s_v' ELSE 'mmr.min_norm(r.s_v, mn.v_min)' END,
        CASE mode_ WHEN 'none' THEN 'r.s_t' WHEN 'code' THEN 'mmr.min_norm(r.s_t, mn.t_min, mn.v_min)'
                   ELSE 'mmr.min_norm(r.s_t, mn.t_min)' END);
    RETURN p;
END
$$;

-- Method gqr.
CREATE OR REPLACE FUNCTION mmr._plan_gqr(
    c mmr._collection, s mmr._space, p mmr._search_plan, m text, prm jsonb,
    p_ref @extschema:vector@.vector, p_mod @extschema:vector@.vector, p_k int, n int,
    p_filter jsonb, p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d_u @extschema:vector@.vector[];
    s2_u float8[];
    keys_u jsonb[];
    z @extschema:vector@.vector;
    comp mmr._space;
    compq @extschema:vector@.vector;
BEGIN
    PERFORM mmr._check_gqr_params(prm);
    -- Primary retriever: the weighted query on this space; complementary: the modifier
    -- (or params.caption_query) on params.caption_space, else on this space.
    z := mmr.vec_lerp(p_ref, p_mod, mmr._num(prm, 'alpha', 0.5));
    comp := CASE WHEN prm ? 'caption_space' THEN mmr._space_row(c.id, c.name, prm ->> 'caption_space')
                 ELSE s END;
    compq := coalesce(mmr._jvec_or_embed(c.name, comp.name, prm -> 'caption_query'), p_mod);
    PERFORM mmr._check_vector(compq, comp.dimensions, comp.distance, 'the complementary query');
    PERFORM mmr._prepare_search(s, z, n, p_ef_search, p_max_scan_tuples, c, p_filter);
    EXECUTE mmr._gqr_union_sql(c, s, comp, p_filter)
       INTO keys_u, d_u, s2_u
      USING ARRAY[z, compq], n, p_filter, NULL::int, p_exclude;
    z := mmr.gqr_refine(z, coalesce(d_u, '{}'), coalesce(s2_u, '{}'), mmr._num(prm, 'a', 0.5),
                        mmr._num(prm, 'temperature', 1), mmr._num(prm, 'lr', 5e-3),
                        mmr._num(prm, 'steps', 15)::int);
    -- Final ranking: re-score only U with the refined query.
    p.vecs := z || coalesce(d_u, '{}');
    p.aux := to_jsonb(coalesce(keys_u, '{}'));
    p.sql := 'SELECT ($8 -> (u.i::int - 2)) AS key, mmr.vec_dot($1[1], u.v) AS score '
             'FROM unnest($1) WITH ORDINALITY u(v, i) WHERE u.i > 1 '
             'ORDER BY score DESC, key LIMIT $4';
    RETURN p;
END
$$;

-- The composed-search methods, in one place: name, the parameters it takes, its plan builder
-- (mmr._plan_*, above), its default candidates per leg (NULL: max(4k, 40)), and whether the
-- fast path (the cached statements) may serve it.  Adding a method: a builder and a row here
-- (and, for the fast paths, a planner mmr._fast_plan_<name> and its line in
-- mmr._composed_fast_planner: the by-key planner mmr._composed_key_exec_plan uses it too).
CREATE OR REPLACE FUNCTION mmr._composed_methods()
RETURNS TABLE (ord int, name text, params text[], builder text, candidates int, fast boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT v.ord, v.name, v.params::text[], v.builder, v.candidates, v.fast FROM (VALUES
        (1, 'image_only', '{}', '_plan_image_only', NULL, true),
        (2, 'text_only', '{}', '_plan_text_only', NULL, true),
        (3, 'weighted', '{alpha}', '_plan_weighted', NULL, true),
        (4, 'slerp', '{alpha}', '_plan_slerp', NULL, true),
        (5, 'score_sum', '{candidates}', '_plan_pair', NULL, true),
        (6, 'product', '{candidates}', '_plan_pair', NULL, true),
        (7, 'weimocir', '{alpha,beta,candidates,caption_space,caption_spaces,reference_captions}',
         '_plan_weimocir', NULL, true),
        (8, 'pdv', '{alpha_i,alpha_t,beta,reference_caption,caption_space}',
         '_plan_pdv', NULL, false),
        (9, 'basic', '{projection,query_expansion,qe_k,qe_scale,lambda,min_norm,min_norm_source,candidates}',
         '_plan_basic', NULL, false),
        (10, 'gqr', '{alpha,a,temperature,lr,steps,candidates,caption_space,caption_query}',
         '_plan_gqr', 10, false)
    ) AS v(ord, name, params, builder, candidates, fast);
END;

-- The methods the fast paths may serve (a constant for the planner).
CREATE OR REPLACE FUNCTION mmr._composed_fast_methods()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT array_agg(x.name ORDER BY x.ord) FROM mmr._composed_methods() x WHERE x.fast;
END;

-- Build the plan of a composed-query search: the checks every method shares, the method's
-- builder (mmr._composed_methods), then its statement's index settings.  p_ref_key: the
-- reference's key when the reference is a stored row (its caption embeddings can then be read
-- from caption spaces).
CREATE OR REPLACE FUNCTION mmr._composed_plan(
    c mmr._collection, s mmr._space, p_ref @extschema:vector@.vector,
    p_mod @extschema:vector@.vector, p_method text, p_k int, p_params jsonb, p_filter jsonb,
    p_exclude jsonb, p_ref_key jsonb, p_ef_search int, p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p mmr._search_plan;
    m text := lower(coalesce(p_method, 'weighted'));
    prm jsonb := coalesce(p_params, '{}');
    meth record;
    n int;
    single boolean;
BEGIN
    PERFORM mmr._check_limit('k', p_k);
    PERFORM mmr._check_vector(p_ref, s.dimensions, s.distance, 'the reference vector');
    IF m <> 'image_only' THEN
        PERFORM mmr._check_vector(p_mod, s.dimensions, s.distance, 'the modifier vector');
    END IF;
    IF jsonb_typeof(prm) <> 'object' THEN
        PERFORM mmr._check_params(prm, '{}', 'method ' || m);
    END IF;
    SELECT x.* INTO meth FROM mmr._composed_methods() x WHERE x.name = m;
    n := mmr._candidates(prm, p_k + 1, coalesce(meth.candidates, greatest(4 * p_k, 40)));
    p.n := n; p.k := p_k; p.filter := p_filter; p.exclude := p_exclude; p.space := s.name;

    IF meth.name IS NULL THEN
        RAISE EXCEPTION 'unknown composed-search method %', quote_literal(p_method)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Methods: ' || (SELECT string_agg(x.name, ', ' ORDER BY x.ord)
                                           FROM mmr._composed_methods() x) || '.';
    END IF;
    PERFORM mmr._check_params(prm, meth.params, 'method ' || m);
    EXECUTE format('SELECT * FROM mmr.%I($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, '
                   '$13, $14)', meth.builder)
       INTO p
      USING c, s, p, m, prm, p_ref, p_mod, p_k, n, p_filter, p_exclude, p_ref_key, p_ef_search,
            p_max_scan_tuples;
    single := p.sql IS NULL;
    IF single THEN
        PERFORM mmr._check_vector(p.vecs[1], s.dimensions, s.distance, 'the fused query vector');
        p.sql := mmr._single_sql(c, s, p_filter, p_exclude IS NOT NULL);
    END IF;
    p.qvec := p.vecs[1];
    -- Index settings: every leg returns up to n rows (k+1 for a single-vector statement).
    PERFORM mmr._prepare_search(s, p.qvec, CASE WHEN single THEN p_k + 1 ELSE n END,
                                p_ef_search, p_max_scan_tuples, c, p_filter);
    RETURN p;
END
$$;

-- The by-key fast path's own method rules of earlier releases: the by-key planner
-- (mmr._composed_key_exec_plan) now plans with the by-vector planners, one rule per method.
DROP FUNCTION IF EXISTS mmr._fast_plan(mmr._space, @extschema:vector@.vector,
                                       @extschema:vector@.vector, text, jsonb, int, jsonb);

-- Replaced by mmr._exec_rest (the rest of a plan, both executors).
DROP FUNCTION IF EXISTS mmr._fast_rerun(mmr._search_plan, bigint);

-- The fast planners' one rule on method and params: the method (NULL: 'weighted') is one of
-- p_names, params (NULL: none) an object with no key but p_keys, each of them a number.  A
-- single expression (no subquery), so the planners that use it inline it.
CREATE OR REPLACE FUNCTION mmr._fast_params(p_method text, p_names text[], p_params jsonb,
                                            p_keys text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN lower(coalesce(p_method, 'weighted')) = ANY (p_names)
       AND jsonb_typeof(coalesce(p_params, '{}')) = 'object'
       AND coalesce(p_params, '{}') - p_keys = '{}'
       AND NOT jsonb_path_exists(coalesce(p_params, '{}'), '$.* ? (@.type() != "number")');

-- Two vectors a fusion (mmr.vec_lerp, mmr.vec_slerp) accepts: one dimension, non-zero norms
-- of at most mmr._max_norm().
CREATE OR REPLACE FUNCTION mmr._fusable(a @extschema:vector@.vector, b @extschema:vector@.vector)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN @extschema:vector@.vector_dims(a) = @extschema:vector@.vector_dims(b)
       AND @extschema:vector@.vector_norm(a) > 0 AND @extschema:vector@.vector_norm(b) > 0
       AND @extschema:vector@.vector_norm(a) <= mmr._max_norm()
       AND @extschema:vector@.vector_norm(b) <= mmr._max_norm();

-- The fast path of mmr.composed_search by reference vector: one small planner per fusion
-- (mmr._fast_plan_image, _weighted, _slerp, _weimocir, _pair, _gqr), named by the method table
-- (mmr._composed_fast_planner), each with mmr.composed_search's arguments.  A builder returns the
-- plan (mmr._exec_plan) when the call takes the fast path (mmr._composed_fast_call, a space
-- mmr._fast_space serves, its method's arguments all valid), else no row: the general path
-- (mmr._composed_plan) then raises the explanatory error.  Same formulas and defaults as the
-- general path.  Plain SQL functions PostgreSQL inlines: the executor (PL/pgSQL, or the native
-- module) runs the one of the call's method, a small statement with its plan kept.  No body
-- reads the fields of a plan type (a dependency Citus follows: tests/test_install.py).  A fusion
-- is guarded by conditions on the arguments alone (a CASE whose conditions come first), so that
-- a plan with constant arguments never folds the fusion of invalid ones (and raises its error).

-- The conditions every composed fast path shares: no filter or reranker, mmr._fast_path_allowed,
-- k and ef_search in range.
CREATE OR REPLACE FUNCTION mmr._composed_fast_call(p_filter jsonb, p_rerank text,
                                                   p_max_scan_tuples int, p_k int,
                                                   p_ef_search int)
RETURNS boolean
LANGUAGE sql STABLE
RETURN p_filter IS NULL AND p_rerank IS NULL AND mmr._fast_path_allowed(p_max_scan_tuples)
       AND p_k BETWEEN 1 AND 999 AND (p_ef_search IS NULL OR p_ef_search BETWEEN 1 AND 1000);

-- The plan of a single-vector method: the space's search statement with the query vector
-- p_query (NULL when the method's planner found its arguments invalid: no plan), k rows, its
-- index settings, a short scan continued past its rows.  Shared by the planners of image_only,
-- text_only, weighted, slerp and weimocir, each of which only computes its query vector (under a
-- guard on the arguments, in a subquery fenced by OFFSET 0, so that it is computed once and a
-- plan of constant arguments never folds the fusion of invalid ones) and calls this function
-- LATERAL with it.  A planner may decline more calls than the general path rejects (the general
-- path then answers them), never fewer.  The plan's fields as plain columns (those of
-- mmr._exec_plan, in its order), not the plan type: the planners select them, and a SQL body
-- that reads a plan type's fields depends on its relation (tests/test_install.py).
CREATE OR REPLACE FUNCTION mmr._fast_plan_single(
    p_collection text, p_space text, p_query @extschema:vector@.vector, p_k int, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int, p_rerank text)
RETURNS TABLE (sql text, args text[], query @extschema:vector@.vector,
               vecs @extschema:vector@.vector[], n int, k int, filter jsonb, exclude jsonb,
               ef_search int, space_id int, rest text, rest_sql text, options jsonb,
               iterative text, planning text)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.statements ->> 'search', '{query,k}'::text[], p_query,
           NULL::@extschema:vector@.vector[], p_k, p_k, NULL::jsonb, NULL::jsonb,
           mmr._ef_for(p_k + 1, p_ef_search), s.id, 'offset', NULL::text, NULL::jsonb,
           NULL::text, NULL::text
      FROM mmr._fast_space(p_collection, p_space) s
     WHERE mmr._composed_fast_call(p_filter, p_rerank, p_max_scan_tuples, p_k, p_ef_search)
       AND p_query IS NOT NULL AND mmr._query_ok(s.dimensions, s.distance, p_query);
END;

-- image_only (the reference) and text_only (the modifier, with a valid reference: the general
-- path checks it).
CREATE OR REPLACE FUNCTION mmr._fast_plan_image(
    p_collection text, p_space text, p_ref @extschema:vector@.vector,
    p_mod @extschema:vector@.vector, p_method text, p_k int, p_params jsonb, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int, p_rerank text, p_rerank_depth int,
    p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT p.*
      FROM (SELECT CASE WHEN coalesce(p_params, '{}') <> '{}' THEN NULL
                        WHEN lower(coalesce(p_method, 'weighted')) = 'image_only' THEN p_ref
                        WHEN lower(coalesce(p_method, 'weighted')) = 'text_only'
                             AND mmr._fusable(p_ref, p_mod) THEN p_mod END AS q
             OFFSET 0) f,
           LATERAL mmr._fast_plan_single(p_collection, p_space, f.q, p_k, p_filter, p_ef_search,
                                         p_max_scan_tuples, p_rerank) p;
END;

-- weighted: mmr.vec_lerp(reference, modifier, alpha).
CREATE OR REPLACE FUNCTION mmr._fast_plan_weighted(
    p_collection text, p_space text, p_ref @extschema:vector@.vector,
    p_mod @extschema:vector@.vector, p_method text, p_k int, p_params jsonb, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int, p_rerank text, p_rerank_depth int,
    p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT p.*
      FROM (SELECT CASE WHEN mmr._fast_params(p_method, '{weighted}', p_params, '{alpha}')
                             AND mmr._fusable(p_ref, p_mod)
                        THEN mmr.vec_lerp(p_ref, p_mod,
                                          coalesce((p_params ->> 'alpha')::float8, 0.5)) END AS q
             OFFSET 0) f,
           LATERAL mmr._fast_plan_single(p_collection, p_space, f.q, p_k, p_filter, p_ef_search,
                                         p_max_scan_tuples, p_rerank) p;
END;

-- slerp: mmr.vec_slerp(reference, modifier, alpha).
CREATE OR REPLACE FUNCTION mmr._fast_plan_slerp(
    p_collection text, p_space text, p_ref @extschema:vector@.vector,
    p_mod @extschema:vector@.vector, p_method text, p_k int, p_params jsonb, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int, p_rerank text, p_rerank_depth int,
    p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT p.*
      FROM (SELECT CASE WHEN mmr._fast_params(p_method, '{slerp}', p_params, '{alpha}')
                             AND mmr._fusable(p_ref, p_mod)
                        THEN mmr.vec_slerp(p_ref, p_mod,
                                           coalesce((p_params ->> 'alpha')::float8, 0.5)) END AS q
             OFFSET 0) f,
           LATERAL mmr._fast_plan_single(p_collection, p_space, f.q, p_k, p_filter, p_ef_search,
                                         p_max_scan_tuples, p_rerank) p;
END;

-- weimocir without caption spaces: its query fusion alone, n((1-alpha)*reference +
-- alpha*modifier) (candidates unused, but checked against its bound as on the general path).
CREATE OR REPLACE FUNCTION mmr._fast_plan_weimocir(
    p_collection text, p_space text, p_ref @extschema:vector@.vector,
    p_mod @extschema:vector@.vector, p_method text, p_k int, p_params jsonb, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int, p_rerank text, p_rerank_depth int,
    p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT p.*
      FROM (SELECT CASE WHEN mmr._fast_params(p_method, '{weimocir}', p_params,
                                                  '{alpha,beta,candidates}')
                             AND mmr._fusable(p_ref, p_mod)
                             AND mmr._candidates(p_params, p_k + 1, p_k + 1) IS NOT NULL
                        THEN mmr.vec_normalize(mmr.vec_mix(
                                 p_ref, p_mod, coalesce((p_params ->> 'alpha')::float8, 0.8)))
                   END AS q
             OFFSET 0) f,
           LATERAL mmr._fast_plan_single(p_collection, p_space, f.q, p_k, p_filter, p_ef_search,
                                         p_max_scan_tuples, p_rerank) p;
END;

-- score_sum and product: the space's checked two-leg statement (no rows unless both legs are
-- complete; then its plain form reruns with iterative scans), both queries normalised.
CREATE OR REPLACE FUNCTION mmr._fast_plan_pair(
    p_collection text, p_space text, p_ref @extschema:vector@.vector,
    p_mod @extschema:vector@.vector, p_method text, p_k int, p_params jsonb, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int, p_rerank text, p_rerank_depth int,
    p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.statements ->> (a.m || '_checked'), '{vecs,n,filter,k,exclude}'::text[],
           NULL::@extschema:vector@.vector, f.vecs, f.n, p_k, NULL::jsonb, NULL::jsonb,
           mmr._ef_for(f.n, p_ef_search), NULL::int, 'rerun', s.statements ->> a.m, NULL::jsonb,
           NULL::text, NULL::text
      FROM mmr._fast_space(p_collection, p_space) s,
           (SELECT lower(coalesce(p_method, 'weighted')) AS m) a,
           (SELECT CASE WHEN g.ok THEN ARRAY[mmr.vec_normalize(p_ref), mmr.vec_normalize(p_mod)]
                   END AS vecs,
                   CASE WHEN g.ok THEN mmr._candidates(p_params, p_k + 1, greatest(4 * p_k, 40))
                   END AS n
              FROM (SELECT mmr._fast_params(p_method, '{score_sum,product}', p_params,
                                            '{candidates}')
                           AND mmr._fusable(p_ref, p_mod) AS ok OFFSET 0) g
             OFFSET 0) f
     WHERE mmr._composed_fast_call(p_filter, p_rerank, p_max_scan_tuples, p_k, p_ef_search)
       AND f.vecs IS NOT NULL AND @extschema:vector@.vector_dims(p_ref) = s.dimensions;
END;

-- gqr on this space alone (no caption space or query): the space's cached GQR statement
-- (candidate pool, refinement by mmr.gqr_refine, re-scoring), options checked and completed by
-- mmr._gqr_fast_options; when a leg of the pool came back short (no rows), its plain form with
-- iterative scans.
CREATE OR REPLACE FUNCTION mmr._fast_plan_gqr(
    p_collection text, p_space text, p_ref @extschema:vector@.vector,
    p_mod @extschema:vector@.vector, p_method text, p_k int, p_params jsonb, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int, p_rerank text, p_rerank_depth int,
    p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.statements ->> 'gqr_checked', '{vecs,n,filter,k,exclude,options}'::text[],
           NULL::@extschema:vector@.vector, ARRAY[f.q, p_mod],
           (g.o ->> 'n')::int, p_k, NULL::jsonb, NULL::jsonb,
           mmr._ef_for((g.o ->> 'n')::int, p_ef_search), NULL::int, 'rerun',
           s.statements ->> 'gqr', g.o, NULL::text, NULL::text
      FROM mmr._fast_space(p_collection, p_space) s,
           (SELECT mmr._gqr_fast_options(coalesce(p_params, '{}'), p_k) AS o OFFSET 0) g,
           LATERAL (SELECT CASE WHEN lower(coalesce(p_method, 'weighted')) = 'gqr'
                                     AND g.o IS NOT NULL AND mmr._fusable(p_ref, p_mod)
                                THEN mmr.vec_lerp(p_ref, p_mod, (g.o ->> 'alpha')::float8)
                           END AS q OFFSET 0) f
     WHERE mmr._composed_fast_call(p_filter, p_rerank, p_max_scan_tuples, p_k, p_ef_search)
       AND g.o IS NOT NULL AND f.q IS NOT NULL
       AND @extschema:vector@.vector_dims(p_ref) = s.dimensions;
END;

-- The planner of mmr.composed_search's fast path by reference vector for a method (any
-- spelling: lower(coalesce(method, 'weighted'))): its builder's name, NULL when no fast path
-- serves it (the general path does).  A method of mmr._composed_methods() only.
CREATE OR REPLACE FUNCTION mmr._composed_fast_planner(p_method text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT v.builder
      FROM (VALUES ('image_only', '_fast_plan_image'), ('text_only', '_fast_plan_image'),
                   ('weighted', '_fast_plan_weighted'), ('slerp', '_fast_plan_slerp'),
                   ('weimocir', '_fast_plan_weimocir'), ('score_sum', '_fast_plan_pair'),
                   ('product', '_fast_plan_pair'), ('gqr', '_fast_plan_gqr')) v(method, builder)
      JOIN mmr._composed_methods() x ON x.name = v.method
     WHERE v.method = lower(coalesce(p_method, 'weighted'));
END;

-- The plan of a composed search by reference vector on the fast path (same arguments as
-- mmr.composed_search), or no row: the method's builder (mmr._composed_fast_planner) run.  The
-- PL/pgSQL binding's planner (one static statement per builder, each with its plan kept by
-- PL/pgSQL); the native executor looks the builder up and runs it itself.
CREATE OR REPLACE FUNCTION mmr._composed_exec_plan(
    p_collection text, p_space text, p_ref @extschema:vector@.vector,
    p_mod @extschema:vector@.vector, p_method text, p_k int, p_params jsonb, p_filter jsonb,
    p_ef_search int, p_max_scan_tuples int, p_rerank text, p_rerank_depth int,
    p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE mmr._composed_fast_planner(p_method)
    WHEN '_fast_plan_image' THEN
        RETURN QUERY SELECT * FROM mmr._fast_plan_image(
            p_collection, p_space, p_ref, p_mod, p_method, p_k, p_params, p_filter, p_ef_search,
            p_max_scan_tuples, p_rerank, p_rerank_depth, p_rerank_params);
    WHEN '_fast_plan_weighted' THEN
        RETURN QUERY SELECT * FROM mmr._fast_plan_weighted(
            p_collection, p_space, p_ref, p_mod, p_method, p_k, p_params, p_filter, p_ef_search,
            p_max_scan_tuples, p_rerank, p_rerank_depth, p_rerank_params);
    WHEN '_fast_plan_slerp' THEN
        RETURN QUERY SELECT * FROM mmr._fast_plan_slerp(
            p_collection, p_space, p_ref, p_mod, p_method, p_k, p_params, p_filter, p_ef_search,
            p_max_scan_tuples, p_rerank, p_rerank_depth, p_rerank_params);
    WHEN '_fast_plan_weimocir' THEN
        RETURN QUERY SELECT * FROM mmr._fast_plan_weimocir(
            p_collection, p_space, p_ref, p_mod, p_method, p_k, p_params, p_filter, p_ef_search,
            p_max_scan_tuples, p_rerank, p_rerank_depth, p_rerank_params);
    WHEN '_fast_plan_pair' THEN
        RETURN QUERY SELECT * FROM mmr._fast_plan_pair(
            p_collection, p_space, p_ref, p_mod, p_method, p_k, p_params, p_filter, p_ef_search,
            p_max_scan_tuples, p_rerank, p_rerank_depth, p_rerank_params);
    WHEN '_fast_plan_gqr' THEN
        RETURN QUERY SELECT * FROM mmr._fast_plan_gqr(
            p_collection, p_space, p_ref, p_mod, p_method, p_k, p_params, p_filter, p_ef_search,
            p_max_scan_tuples, p_rerank, p_rerank_depth, p_rerank_params);
    ELSE
        RETURN;  -- no fast path for the method: the general path
    END CASE;
END
$$;

-- The keys of a not in b (multiset difference, by hashing: x <> ALL (array) compares every pair
-- of jsonb keys).
CREATE OR REPLACE FUNCTION mmr._keys_except(a jsonb[], b jsonb[])
RETURNS jsonb[]
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT ARRAY(SELECT x FROM unnest(a) x EXCEPT ALL SELECT y FROM unnest(b) y);
END;

-- WeiMoCIR's fusion of its two legs (image space: keys ki, scores si; caption space: kc, sc;
-- each leg's candidates completed with the other leg's, scored by key): beta·caption +
-- (1 − beta)·image over the image-space candidates, best k, p_exclude left out.
CREATE OR REPLACE FUNCTION mmr._weimocir_fuse(ki jsonb[], si float8[], kc jsonb[], sc float8[],
                                              p_beta float8, p_k int, p_exclude jsonb)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT i.k, (p_beta * ((coalesce(c.s, 0)) / 1) + (1 - p_beta) * i.s)::float8
      FROM unnest(ki, si) i(k, s)
      LEFT JOIN unnest(kc, sc) c(k, s) ON c.k = i.k
     WHERE i.s IS NOT NULL AND (p_exclude IS NULL OR i.k <> p_exclude)
     ORDER BY 2 DESC, 1 LIMIT p_k;
END;

-- WeiMoCIR with one caption space on the fast path (mmr.composed_search by stored key, no
-- filter or reranker, both spaces stored as `vector`): the same candidates, formula and order as
-- the general statement of mmr._composed_plan, as one statement put together from the two
-- spaces' cached fragments (088-statement-cache.sql; p_image and p_caption: their statements),
-- which reads the reference itself, so that its planner does no per-call work but read the memo
-- (mmr._composed_key_exec_plan): the CTE qq reads the reference's embedding in both spaces
-- ($6 -> 'key') and fuses each with the modifier $1[1] (n((1 - alpha) r + alpha m), alpha
-- $6 ->> 'alpha'), and has no row unless both stored vectors are valid for the spaces
-- (p_dimensions, p_distance: mmr._query_ok; the planner checked the modifier); each leg ((SELECT qq.q[1] FROM qq) on the image
-- space, q[2] on the caption space, $2 rows each) returns keys and scores, a space scores by key
-- only the candidates its own leg did not return (mmr._keys_except), and mmr._weimocir_fuse
-- fuses them with beta ($6 ->> 'beta'), best $4, $5 left out.  Vectors never leave the
-- statement.  With p_checked the statement returns no row unless both legs returned their $2
-- candidates (it scans without iterative scans); the plain form, which then runs with them
-- (mmr._exec_rest), hands a call whose reference is not valid (no such row, no caption
-- embedding, a zero vector) to the general path with the call's arguments ($6 -> 'general'), which raises
-- the explanatory error.  The fused queries reach the legs as uncorrelated subqueries of a
-- MATERIALIZED CTE (computed once, InitPlans the index scans take as their ordering value) and
-- the reference's two reads are scalar subqueries, not a join: Citus plans each on its own
-- (tests/test_citus.py), where a LATERAL reference to the fusion or a join of the two
-- distributed tables on the key expression was refused ("complex joins are only supported
-- when all distributed tables are co-located and joined on their distribution columns").  m's
-- OFFSET 0 keeps the planner from pulling m up into the query, which would copy each
-- mmr._keys_except call to every use of its column (4 calls, not 2: 0.07 ms of the 0.5 ms after
-- the index scans, by auto_explain and a loop over the statement's generic plan on the 20k x 384
-- benchmark).  A text of the two spaces alone: the native executor keeps one plan per pair of
-- spaces.
CREATE OR REPLACE FUNCTION mmr._weimocir_key_sql(p_image jsonb, p_caption jsonb,
                                                 p_checked boolean, p_dimensions int,
                                                 p_distance text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN format(
    'WITH qq AS MATERIALIZED (%1$s) '
    'SELECT f.key, f.score FROM qq qr, (%2$s) li(ki, si), (%3$s) lc(kc, sc), '
    'LATERAL (SELECT mmr._keys_except(coalesce(lc.kc, ''{}''), coalesce(li.ki, ''{}'')) AS keys_1, '
    'mmr._keys_except(coalesce(li.ki, ''{}''), coalesce(lc.kc, ''{}'')) AS keys_2 OFFSET 0) m, '
    'LATERAL (%4$s) wi(w), LATERAL (%5$s) wc(w), '
    'LATERAL mmr._weimocir_fuse(coalesce(li.ki, ''{}'') || m.keys_1, '
    'coalesce(li.si, ''{}'') || coalesce(wi.w, ''{}''), coalesce(lc.kc, ''{}'') || m.keys_2, '
    'coalesce(lc.sc, ''{}'') || coalesce(wc.w, ''{}''), ($6 ->> ''beta'')::float8, $4, $5) f%6$s',
    format('SELECT ARRAY[mmr.vec_normalize(mmr.vec_mix(r.ie, $1[1], ($6 ->> ''alpha'')::float8)), '
           'mmr.vec_normalize(mmr.vec_mix(r.ce, $1[1], ($6 ->> ''alpha'')::float8))] AS q '
           'FROM (SELECT (%1$s) AS ie, (%2$s) AS ce OFFSET 0) r '
           'WHERE mmr._query_ok(%3$s, %4$L, r.ie) AND mmr._query_ok(%3$s, %4$L, r.ce)',
           p_image ->> 'weimocir_ref', p_caption ->> 'weimocir_ref', p_dimensions, p_distance),
    p_image ->> 'weimocir_leg_1', p_caption ->> 'weimocir_leg_2', p_image ->> 'weimocir_sims_1',
    p_caption ->> 'weimocir_sims_2',
    CASE WHEN p_checked THEN ' WHERE cardinality(li.ki) >= $2 AND cardinality(lc.kc) >= $2'
         ELSE ' UNION ALL SELECT g.key, g.score FROM mmr._composed_search_key_general('
              '$6 #>> ''{general,collection}'', $6 #>> ''{general,space}'', $6 -> ''key'', '
              '$1[1], ''weimocir'', $4, $6 #> ''{general,params}'', NULL, '
              '($6 #>> ''{general,ef_search}'')::int) g WHERE NOT EXISTS (SELECT FROM qq)' END);

DROP FUNCTION IF EXISTS mmr._weimocir_key_sql(jsonb, jsonb, boolean);

-- Replaced by mmr._weimocir_key_sql's statement (one implementation for both executors).
DROP FUNCTION IF EXISTS mmr._weimocir_fast(mmr._space, mmr._space, @extschema:vector@.vector,
                                           @extschema:vector@.vector, @extschema:vector@.vector,
                                           float8, float8, int, int, jsonb);

-- mmr.composed_search's general path with the reference as a vector: every call its planner
-- (mmr._composed_exec_plan, or the method's builder natively) gave no plan; mmr._composed_plan
-- checks the arguments and raises the explanatory errors.  Both executors call it once the
-- planner said no: the native module directly, the PL/pgSQL binding from
-- mmr._composed_search_plpgsql.
CREATE OR REPLACE FUNCTION mmr._composed_search_general(
    collection text,
    space text,
    reference @extschema:vector@.vector,
    modifier @extschema:vector@.vector,
    method text DEFAULT 'weighted',
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
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    p mmr._search_plan;
BEGIN
    p := mmr._composed_plan(c, s, reference, modifier, method,
                            mmr._rerank_depth(k, rerank, rerank_depth), params, filter, NULL, NULL,
                            ef_search, max_scan_tuples);
    IF rerank IS NULL THEN
        RETURN QUERY EXECUTE p.sql USING p.vecs, p.n, p.filter, p.k, p.exclude, p.weights, p.nums,
                                         p.aux, p.qtext;
    ELSE
        RETURN QUERY SELECT * FROM mmr._execute(p, collection, k, rerank, rerank_params);
    END IF;
END
$$;

-- mmr.composed_search with the reference as a vector: the reference implementation (the
-- PL/pgSQL binding): the fast path when its planner (mmr._composed_exec_plan) gives a plan, else
-- the general path (mmr._composed_search_general); 089-native.sql creates the public function
-- from it (natively or as a copy), as for mmr.search.
CREATE OR REPLACE FUNCTION mmr._composed_search_plpgsql(
    collection text,
    space text,
    reference @extschema:vector@.vector,
    modifier @extschema:vector@.vector,
    method text DEFAULT 'weighted',
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
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    x mmr._exec_plan;
    got bigint;
BEGIN
    -- Fast path (mmr._composed_exec_plan decides): the space's cached statements; anything
    -- else, or any invalid argument, takes the general path, which raises the explanatory
    -- errors.
    SELECT * INTO x FROM mmr._composed_exec_plan(collection, space, reference, modifier, method,
                                                 k, params, filter, ef_search, max_scan_tuples,
                                                 rerank, rerank_depth, rerank_params);
    IF x.sql IS NOT NULL THEN
        IF x.ef_search IS NOT NULL THEN
            PERFORM set_config('hnsw.ef_search', x.ef_search::text, true);
        END IF;
        RETURN QUERY SELECT * FROM mmr._exec_statement(x);
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got < x.k AND x.rest IS NOT NULL THEN
            RETURN QUERY SELECT * FROM mmr._exec_rest(x, got);
        END IF;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM mmr._composed_search_general(
        collection, space, reference, modifier, method, k, params, filter, ef_search,
        max_scan_tuples, rerank, rerank_depth, rerank_params);
END
$$;

-- The conditions every by-key fast path shares (mmr._composed_key_exec_plan): those of every
-- composed fast path (mmr._composed_fast_call), a reference key, a method the fast paths serve
-- (mmr._composed_fast_methods), and exclude_reference absent or a boolean.
CREATE OR REPLACE FUNCTION mmr._composed_key_fast_call(p_filter jsonb, p_rerank text,
                                                       p_max_scan_tuples int, p_k int,
                                                       p_ef_search int, p_ref_key jsonb,
                                                       p_method text, p_params jsonb)
RETURNS boolean
LANGUAGE sql STABLE
RETURN mmr._composed_fast_call(p_filter, p_rerank, p_max_scan_tuples, p_k, p_ef_search)
       AND p_ref_key IS NOT NULL
       AND lower(coalesce(p_method, 'weighted')) = ANY (mmr._composed_fast_methods())
       AND (NOT coalesce(p_params, '{}') ? 'exclude_reference'
            OR jsonb_typeof(p_params -> 'exclude_reference') = 'boolean');

-- The key a by-key plan leaves out of the results (its exclude argument): the reference's,
-- unless params.exclude_reference is false (a boolean, by mmr._composed_key_fast_call).
CREATE OR REPLACE FUNCTION mmr._composed_key_exclude(p_params jsonb, p_ref_key jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_params -> 'exclude_reference' = 'false'::jsonb THEN NULL ELSE p_ref_key END;

-- WeiMoCIR with one caption space by key: {alpha, beta} (defaults 0.8 and 0.1) when the method
-- is weimocir and its params are those the by-key statement serves (a caption_space string;
-- among exclude_reference, alpha, beta, candidates and caption_space; alpha, beta and
-- candidates numbers), else NULL.  One rule for both branches of mmr._composed_key_exec_plan:
-- a call with such params takes its WeiMoCIR branch or no plan (the by-vector planner declines
-- params with a caption space).  The casts behind the CASE's conditions, and the object's type
-- before its keys (an AND evaluates on past a NULL): a plan with constant arguments (a custom
-- plan) folds them only for params of this shape, and no params raise here.
CREATE OR REPLACE FUNCTION mmr._weimocir_key_weights(p_method text, p_params jsonb)
RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN lower(coalesce(p_method, 'weighted')) = 'weimocir'
                 AND jsonb_typeof(p_params) = 'object'
                 AND jsonb_typeof(p_params -> 'caption_space') = 'string'
                 AND p_params - 'exclude_reference' - 'alpha' - 'beta' - 'candidates'
                     - 'caption_space' = '{}'
                 AND (NOT p_params ? 'alpha' OR jsonb_typeof(p_params -> 'alpha') = 'number')
                 AND (NOT p_params ? 'beta' OR jsonb_typeof(p_params -> 'beta') = 'number')
                 AND (NOT p_params ? 'candidates'
                      OR jsonb_typeof(p_params -> 'candidates') = 'number')
            THEN ARRAY[coalesce((p_params ->> 'alpha')::float8, 0.8),
                       coalesce((p_params ->> 'beta')::float8, 0.1)] END;

-- The two spaces of WeiMoCIR by key, as plain columns (not the catalog's row type,
-- tests/test_install.py): the active space p_space (cached statements, stored as `vector`) and
-- the caption space p_caption of its collection (active, cached statements, `vector`, the same
-- dimension), with the memo key of the statement's texts: the two rows' versions (xmin, ctid; a
-- new statement cache is a new row version).  No row otherwise.  The statements (compressed)
-- are decompressed only where a caller reads them (on a memo miss).  A plain SQL function the
-- planner inlines.
CREATE OR REPLACE FUNCTION mmr._weimocir_key_spaces(p_collection text, p_space text,
                                                    p_caption text)
RETURNS TABLE (dimensions int, distance text, image_statements jsonb, caption_statements jsonb,
               memo_key text)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.dimensions, s.distance, s.statements, x.statements,
           format('weimocir_key %s %s %s %s ', s.id, s.xmin || ' ' || s.ctid, x.id,
                  x.xmin || ' ' || x.ctid)
      FROM mmr._space s
      JOIN mmr._collection c ON c.id = s.collection_id
      JOIN mmr._space x ON x.collection_id = s.collection_id
     WHERE c.name = p_collection AND s.name = p_space AND s.active
       AND s.statements IS NOT NULL AND s.storage = 'vector'
       AND x.name = p_caption AND x.active AND x.statements IS NOT NULL
       AND x.storage = 'vector' AND x.dimensions = s.dimensions;
END;

-- One of WeiMoCIR by key's two statement texts (p_checked: the checked form), built
-- (mmr._weimocir_key_sql) and put into the statement memo under p_key || 'checked' or 'plain'
-- (mmr._weimocir_key_spaces' key): mmr._composed_key_exec_plan calls it right after the key's
-- miss (the memo keeps a put only after its key's miss, with no other miss between; the
-- PL/pgSQL binding, which memoizes nothing: on every call).  PL/pgSQL: mmr._memo_put is
-- VOLATILE, and a SQL planner calling it would not be inlined.
CREATE OR REPLACE FUNCTION mmr._weimocir_key_text(p_key text, p_image jsonb, p_caption jsonb,
                                                  p_checked boolean, p_dimensions int,
                                                  p_distance text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN mmr._memo_put(p_key || CASE WHEN p_checked THEN 'checked' ELSE 'plain' END,
                         mmr._weimocir_key_sql(p_image, p_caption, p_checked, p_dimensions,
                                               p_distance));
END
$$;

-- The by-key planner's branch for every method but WeiMoCIR with one caption space
-- (mmr._composed_key_exec_plan calls it under mmr._composed_key_fast_call, for params
-- mmr._weimocir_key_weights declines): the by-vector planner's plan (mmr._composed_exec_plan:
-- one rule and formula per method for both overloads) with the reference's embedding, read by
-- its space's cached embedding_of statement (mmr._kept_vector), as the reference.  The
-- reference is left out of the results unless exclude_reference is false
-- (mmr._composed_key_exclude): a single-vector plan then runs the space's single_excl statement
-- (k + 1 rows, the key dropped), a two-leg plan takes the key as its exclude argument.  The
-- plan as a record whose columns the caller names (those of mmr._exec_plan, in its order): a
-- SQL body selecting the fields of a function returning the plan type depends on its relation
-- (tests/test_install.py), and RETURN NEXT of the plan costs less per call than the RETURN
-- QUERY a TABLE result would need.  ROWS 1 (it
-- returns at most one): estimated at the default 1000 rows, the generic plan of a prepared
-- statement calling the planner with constant names and the other arguments as parameters
-- (bench/key_planner.py's) cost more than its custom plans plus their planning, and PostgreSQL
-- planned the inlined planner on every call (1.55 against 0.25 ms a call).
CREATE OR REPLACE FUNCTION mmr._composed_key_vector_plan(
    p_collection text, p_space text, p_ref_key jsonb, p_mod @extschema:vector@.vector,
    p_method text, p_k int, p_params jsonb, p_filter jsonb, p_ef_search int,
    p_max_scan_tuples int, p_rerank text, p_rerank_depth int, p_rerank_params jsonb)
RETURNS SETOF record
LANGUAGE plpgsql STABLE ROWS 1
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s mmr._space := mmr._active_space(p_collection, p_space);
    excl jsonb := mmr._composed_key_exclude(p_params, p_ref_key);
    ref @extschema:vector@.vector;
    v mmr._exec_plan;
BEGIN
    IF s.id IS NULL OR (s.statements ->> 'embedding_of') IS NULL THEN
        RETURN;
    END IF;
    ref := mmr._kept_vector(s.statements ->> 'embedding_of', p_ref_key);
    -- a short single-vector scan continues past its rows, a checked two-leg statement that
    -- returned nothing reruns in its plain form (mmr._exec_rest)
    SELECT * INTO v FROM mmr._composed_exec_plan(
        p_collection, p_space, ref, p_mod, p_method, p_k,
        coalesce(p_params, '{}') - 'exclude_reference', p_filter, p_ef_search,
        p_max_scan_tuples, p_rerank, p_rerank_depth, p_rerank_params);
    IF v.sql IS NULL THEN
        RETURN;
    END IF;
    IF excl IS NOT NULL THEN
        IF v.args = '{query,k}' THEN
            v.sql := s.statements ->> 'single_excl';
            v.args := '{vecs,n,filter,k,exclude}';
            v.vecs := ARRAY[v.query];
            v.query := NULL;
            v.n := v.k + 1;  -- ef_search is already raised to k + 1 rows
        END IF;
        v.exclude := excl;
    END IF;
    RETURN NEXT v;
END
$$;

-- The planner of mmr.composed_search's fast path with the reference as a stored row's key (same
-- arguments as that overload; one rule for both executors): a plan (mmr._exec_plan) when the
-- call takes the fast path, no row otherwise (the general path,
-- mmr._composed_search_key_general, then decides and raises the explanatory errors).  The fast
-- path: mmr._composed_key_fast_call (no filter or reranker, mmr._fast_path_allowed, k and
-- ef_search in range, a method the fast paths serve, exclude_reference absent or a boolean).
-- Two branches, by the params (mmr._weimocir_key_weights), each a one-time condition of the kept
-- plan:
--   WeiMoCIR with one caption space  this function's own statement: both spaces
--       (mmr._weimocir_key_spaces: stored as `vector`, one dimension), beta not 0, a valid
--       modifier; mmr._weimocir_key_sql's statement (checked and plain), whose texts the
--       statement memo keeps per pair of space row versions (mmr._memo_get; on a miss
--       mmr._weimocir_key_text builds and puts them).  The statement reads the reference's two
--       embeddings and fuses the queries itself (with alpha, the key and, for a reference it
--       finds invalid, the call's arguments for the general path, in its options), so this
--       branch does no per-call work but the memo's;
--   every other method  mmr._composed_key_vector_plan (PL/pgSQL): the by-vector planner's plan
--       with the stored embedding as the reference.
-- A plain SQL function PostgreSQL inlines into the executor's kept statement: WeiMoCIR by key is
-- planned without a PL/pgSQL call (mmr._candidates aside) on a memo hit.  Each read is a
-- subquery fenced by OFFSET 0 (x, w), so that it runs once, not once per use of its result; x
-- computes the plan's values only for a call that passed every condition: n
-- (mmr._candidates, which raises for bad candidates) and each text read and, on a miss, built
-- in turn (a memo put follows its own key's miss).  What a plan of constant arguments (a custom
-- plan) could fold is kept from it: mmr._candidates reads the params through w.  No body reads
-- the fields of a plan type (tests/test_install.py).
CREATE OR REPLACE FUNCTION mmr._composed_key_exec_plan(
    p_collection text, p_space text, p_ref_key jsonb, p_mod @extschema:vector@.vector,
    p_method text, p_k int, p_params jsonb, p_filter jsonb, p_ef_search int,
    p_max_scan_tuples int, p_rerank text, p_rerank_depth int, p_rerank_params jsonb)
RETURNS SETOF mmr._exec_plan
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT x.checked, '{vecs,n,filter,k,exclude,options}'::text[],
           NULL::@extschema:vector@.vector, ARRAY[p_mod], x.n, p_k, NULL::jsonb,
           mmr._composed_key_exclude(p_params, p_ref_key), mmr._ef_for(x.n, p_ef_search),
           NULL::int, 'rerun', x.plain,
           jsonb_build_object('alpha', x.ab[1], 'beta', x.ab[2], 'key', p_ref_key,
                              'general', jsonb_build_object('collection', p_collection,
                                                            'space', p_space,
                                                            'params', p_params,
                                                            'ef_search', p_ef_search)),
           NULL::text, NULL::text
      FROM (SELECT w.ab,
                   mmr._candidates(w.params, p_k + 1, greatest(4 * p_k, 40)) AS n,
                   coalesce(mmr._memo_get(s.memo_key || 'checked'),
                            mmr._weimocir_key_text(s.memo_key, s.image_statements,
                                                   s.caption_statements, true, s.dimensions,
                                                   s.distance)) AS checked,
                   coalesce(mmr._memo_get(s.memo_key || 'plain'),
                            mmr._weimocir_key_text(s.memo_key, s.image_statements,
                                                   s.caption_statements, false, s.dimensions,
                                                   s.distance)) AS plain
              FROM (SELECT mmr._weimocir_key_weights(p_method, p_params) AS ab,
                           p_params AS params
                    OFFSET 0) w,
                   mmr._weimocir_key_spaces(p_collection, p_space,
                                            p_params ->> 'caption_space') s
             WHERE mmr._composed_key_fast_call(p_filter, p_rerank, p_max_scan_tuples, p_k,
                                               p_ef_search, p_ref_key, p_method, p_params)
               AND w.ab[2] <> 0
               AND mmr._query_ok(s.dimensions, s.distance, p_mod)
            OFFSET 0) x
    UNION ALL
    SELECT p.*
      FROM mmr._composed_key_vector_plan(p_collection, p_space, p_ref_key, p_mod, p_method, p_k,
                                         p_params, p_filter, p_ef_search, p_max_scan_tuples,
                                         p_rerank, p_rerank_depth, p_rerank_params)
           AS p(sql text, args text[], query @extschema:vector@.vector,
                vecs @extschema:vector@.vector[], n int, k int, filter jsonb, exclude jsonb,
                ef_search int, space_id int, rest text, rest_sql text, options jsonb,
                iterative text, planning text)
     WHERE mmr._composed_key_fast_call(p_filter, p_rerank, p_max_scan_tuples, p_k, p_ef_search,
                                       p_ref_key, p_method, p_params)
       AND mmr._weimocir_key_weights(p_method, p_params) IS NULL;
END;

-- mmr.composed_search's general path with the reference as a stored row's key: every call its
-- planner (mmr._composed_key_exec_plan) gave no plan; mmr._composed_plan checks the arguments and
-- raises the explanatory errors.  The reference is left out of the results unless
-- params.exclude_reference is false (CIRR protocol).  Both executors call it once the planner
-- said no: the native module directly, the PL/pgSQL binding from
-- mmr._composed_search_key_plpgsql.
CREATE OR REPLACE FUNCTION mmr._composed_search_key_general(
    collection text,
    space text,
    reference_key jsonb,
    modifier @extschema:vector@.vector,
    method text DEFAULT 'weighted',
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
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    prm jsonb := coalesce(params, '{}');
    p mmr._search_plan;
BEGIN
    p := mmr._composed_plan(c, s, mmr._embedding_of(c, s, reference_key), modifier, method,
                            mmr._rerank_depth(k, rerank, rerank_depth), prm - 'exclude_reference',
                            filter,
                            CASE WHEN mmr._bool(prm, 'exclude_reference', true) THEN reference_key END,
                            reference_key, ef_search, max_scan_tuples);
    IF rerank IS NULL THEN
        RETURN QUERY EXECUTE p.sql USING p.vecs, p.n, p.filter, p.k, p.exclude, p.weights, p.nums,
                                         p.aux, p.qtext;
    ELSE
        RETURN QUERY SELECT * FROM mmr._execute(p, collection, k, rerank, rerank_params);
    END IF;
END
$$;

-- mmr.composed_search with the reference as a stored row's key (left out of the results unless
-- params.exclude_reference is false): the reference implementation (the PL/pgSQL binding): the
-- fast path when its planner (mmr._composed_key_exec_plan) gives a plan, else the general path
-- (mmr._composed_search_key_general); 089-native.sql creates the public function from it.
CREATE OR REPLACE FUNCTION mmr._composed_search_key_plpgsql(
    collection text,
    space text,
    reference_key jsonb,
    modifier @extschema:vector@.vector,
    method text DEFAULT 'weighted',
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
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    x mmr._exec_plan;
    got bigint;
BEGIN
    SELECT * INTO x FROM mmr._composed_key_exec_plan(collection, space, reference_key, modifier,
                                                     method, k, params, filter, ef_search,
                                                     max_scan_tuples, rerank, rerank_depth,
                                                     rerank_params);
    IF x.sql IS NOT NULL THEN
        IF x.ef_search IS NOT NULL THEN
            PERFORM set_config('hnsw.ef_search', x.ef_search::text, true);
        END IF;
        RETURN QUERY SELECT * FROM mmr._exec_statement(x);
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got < x.k AND x.rest IS NOT NULL THEN
            RETURN QUERY SELECT * FROM mmr._exec_rest(x, got);
        END IF;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM mmr._composed_search_key_general(
        collection, space, reference_key, modifier, method, k, params, filter, ef_search,
        max_scan_tuples, rerank, rerank_depth, rerank_params);
END
$$;

-- EXPLAIN (FORMAT JSON) of the statement a composed search runs.
CREATE OR REPLACE FUNCTION mmr.explain_composed(
    collection text,
    space text,
    reference @extschema:vector@.vector,
    modifier @extschema:vector@.vector,
    method text DEFAULT 'weighted',
    k int DEFAULT 10,
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
    s mmr._space := mmr._space_row(c.id, collection, space);
    p mmr._search_plan;
    plan jsonb;
BEGIN
    p := mmr._composed_plan(c, s, reference, modifier, method, k, params, filter, NULL, NULL, NULL, NULL);
    EXECUTE format('EXPLAIN (FORMAT JSON, ANALYZE %s) %s',
                   CASE WHEN run_analyze THEN 'true' ELSE 'false' END, p.sql)
       INTO plan USING p.vecs, p.n, p.filter, p.k, p.exclude, p.weights, p.nums, p.aux, p.qtext;
    RETURN plan;
END
$$;

-- Store a BASIC projection for a space (administrative).  basis: the k orthonormal eigenvectors
-- U (P = U·Uᵀ) computed from centred positive/negative text embeddings (the Python helper
-- pg_mmretrieval.retrieval.basic_projection does the eigendecomposition); mu_text: mean of the
-- positive corpus; mu_image: the image mean (NULL: the mean of the space's stored embeddings).
CREATE OR REPLACE FUNCTION mmr.set_projection(
    collection text,
    space text,
    basis @extschema:vector@.vector[],
    mu_text @extschema:vector@.vector,
    mu_image @extschema:vector@.vector DEFAULT NULL,
    s_v_min float8 DEFAULT NULL,
    s_t_min float8 DEFAULT NULL,
    name text DEFAULT 'basic',
    params jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._space_row(c.id, collection, space);
    bad int;
BEGIN
    PERFORM mmr._check_name('projection', coalesce(set_projection.name, 'basic'));
    IF basis IS NULL OR cardinality(basis) = 0 THEN
        RAISE EXCEPTION 'basis must hold at least one vector' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT u.i INTO bad FROM unnest(basis) WITH ORDINALITY u(b, i)
     WHERE u.b IS NULL OR @extschema:vector@.vector_dims(u.b) <> s.dimensions LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'basis vector % does not have the space''s % dimensions', bad, s.dimensions
            USING ERRCODE = 'data_exception';
    END IF;
    IF mu_image IS NULL THEN
        EXECUTE format('SELECT @extschema:vector@.avg(embedding::@extschema:vector@.vector) FROM %s',
                       s.embedding_table) INTO mu_image;
        IF mu_image IS NULL THEN
            RAISE EXCEPTION 'space % is empty: pass mu_image', quote_literal(space)
                USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    IF @extschema:vector@.vector_dims(mu_image) <> s.dimensions
       OR @extschema:vector@.vector_dims(mu_text) <> s.dimensions THEN
        RAISE EXCEPTION 'mu_image and mu_text must have % dimensions', s.dimensions
            USING ERRCODE = 'data_exception';
    END IF;
    FOR bad IN 1 .. cardinality(basis) LOOP
        PERFORM mmr._check_stored_vector(basis[bad], s.dimensions, format('basis vector %s', bad));
    END LOOP;
    INSERT INTO mmr._projection AS x (space_id, name, basis, mu_image, mu_text, s_v_min, s_t_min, params)
    VALUES (s.id, coalesce(set_projection.name, 'basic'), set_projection.basis, mu_image,
            set_projection.mu_text, set_projection.s_v_min, set_projection.s_t_min,
            coalesce(set_projection.params, '{}'))
    ON CONFLICT (space_id, name) DO UPDATE
       SET basis = EXCLUDED.basis, mu_image = EXCLUDED.mu_image, mu_text = EXCLUDED.mu_text,
           s_v_min = EXCLUDED.s_v_min, s_t_min = EXCLUDED.s_t_min, params = EXCLUDED.params,
           created_at = now();
END
$$;
