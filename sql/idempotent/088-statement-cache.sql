-- Statement cache: the SQL text of the unfiltered single-vector searches of each space version,
-- stored in mmr._space.statements (revision 0003).  A BEFORE trigger recomputes it whenever a
-- space row is written, and this file recomputes it for every row on every upgrade (so a change
-- of the builders below reaches existing spaces).  The fast paths of mmr.search and
-- mmr.composed_search run it with one catalog look-up and no string building; filters,
-- rerankers and multi-leg methods build their statement per call.
--
--   search       $1 vector, $2 k                          (mmr._search_sql)
--   single       $1 vector[] (query in $1[1]), $4 k        (mmr._single_sql)
--   single_excl  as single, $5 the jsonb key to exclude
--   score_sum,   $1 vector[] (reference, modifier), $2 candidates per leg, $4 k, $5 a key to
--   product      exclude or NULL                            (mmr._pair_sql)
--   score_sum_checked, product_checked: the same, returning no row unless both legs returned
--                $2 candidates (the fast path scans without iterative scans)
--   gqr_union_checked  GQR's candidate pool on this space (mmr._gqr_union_sql, checked): $1
--                vector[] (primary, complementary), $2 candidates per leg, $5 NULL
--   leg_agg      $1 vector, $2 n -> (keys jsonb[], scores float8[]) of the n nearest rows,
--                best first (a vector leg of mmr.hybrid_search)
--   sims_of      $1 jsonb[] keys, $2 vector -> float8[] scores of those rows to $2 (NULL where
--                a row has no embedding)
--   embedding_of $1 a jsonb key -> that row's embedding as a full-precision vector

CREATE OR REPLACE FUNCTION mmr._space_statements(s mmr._space)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
BEGIN
    SELECT * INTO c FROM mmr._collection WHERE id = s.collection_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object('search', mmr._search_sql(c, s, NULL),
                              'single', mmr._single_sql(c, s, NULL, false),
                              'single_excl', mmr._single_sql(c, s, NULL, true),
                              'score_sum', mmr._pair_sql(c, s, NULL, 'score_sum'),
                              'product', mmr._pair_sql(c, s, NULL, 'product'),
                              'score_sum_checked', mmr._pair_sql(c, s, NULL, 'score_sum', true),
                              'product_checked', mmr._pair_sql(c, s, NULL, 'product', true),
                              'gqr_union_checked', mmr._gqr_union_sql(c, s, s, NULL, true),
                              'leg_agg', format(
                                  'SELECT array_agg(x.key ORDER BY x.dist, x.key), '
                                  'array_agg(%s ORDER BY x.dist, x.key) FROM '
                                  '(SELECT %s AS key, %s AS dist FROM %s e ORDER BY %s LIMIT $2) x',
                                  mmr._score_expr(s.distance, 'x.dist'), mmr._key_json(c, 'e'),
                                  mmr._dist(s, 'e', '$1'), s.embedding_table,
                                  mmr._dist(s, 'e', '$1')),
                              'sims_of', format(
                                  'SELECT array_agg(%s ORDER BY u.ord) '
                                  'FROM unnest($1::jsonb[]) WITH ORDINALITY u(key, ord) '
                                  'CROSS JOIN LATERAL (SELECT %s) t LEFT JOIN %s e ON %s',
                                  mmr._sim(s, 'e', '$2'), mmr._key_from_json(c, 'u.key'),
                                  s.embedding_table, mmr._key_join(c, 'e', 't')),
                              'embedding_of', format(
                                  'SELECT e.embedding::@extschema:vector@.vector FROM %s e, '
                                  'LATERAL (SELECT %s) t WHERE %s', s.embedding_table,
                                  mmr._key_from_json(c, '$1'), mmr._key_join(c, 'e', 't')));
END
$$;

CREATE OR REPLACE FUNCTION mmr._space_statements_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.statements := mmr._space_statements(NEW);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER _space_statements
    BEFORE INSERT OR UPDATE ON mmr._space
    FOR EACH ROW EXECUTE FUNCTION mmr._space_statements_trigger();

UPDATE mmr._space SET statements = NULL;

-- The plan of a composed search on the fast path: single-vector methods (image_only,
-- text_only, weighted, slerp) and the two-leg score_sum/product, with every argument valid;
-- else NULL, and the general path (mmr._composed_plan) runs and raises the explanatory error.
-- Same formulas and defaults as there.  p.n: rows per leg (ef_search is raised to it).
CREATE OR REPLACE FUNCTION mmr._fast_plan(s mmr._space, p_ref @extschema:vector@.vector,
                                          p_mod @extschema:vector@.vector, p_method text,
                                          p_params jsonb, p_k int, p_exclude jsonb)
RETURNS mmr._search_plan
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m text := lower(coalesce(p_method, 'weighted'));
    prm jsonb := coalesce(p_params, '{}');
    p mmr._search_plan;
BEGIN
    IF p_ref IS NULL OR @extschema:vector@.vector_dims(p_ref) <> s.dimensions
       OR NOT mmr._norm_ok(p_ref, s.distance) THEN
        RETURN NULL;
    END IF;
    p.k := p_k; p.n := p_k + 1; p.exclude := p_exclude; p.space := s.name;
    IF m = 'image_only' AND prm = '{}' THEN
        p.vecs := ARRAY[p_ref];
    ELSIF p_mod IS NULL OR @extschema:vector@.vector_dims(p_mod) <> s.dimensions
          OR NOT mmr._norm_ok(p_mod, s.distance) THEN
        RETURN NULL;
    ELSIF m = 'text_only' AND prm = '{}' THEN
        p.vecs := ARRAY[p_mod];
    ELSIF m IN ('weighted', 'slerp') AND prm - 'alpha' = '{}'
          AND (NOT prm ? 'alpha' OR jsonb_typeof(prm -> 'alpha') = 'number') THEN
        p.vecs := ARRAY[CASE m WHEN 'weighted'
                             THEN mmr.vec_lerp(p_ref, p_mod, coalesce((prm ->> 'alpha')::float8, 0.5))
                             ELSE mmr.vec_slerp(p_ref, p_mod, coalesce((prm ->> 'alpha')::float8, 0.5))
                        END];
    ELSIF m = 'weimocir' AND prm - 'alpha' - 'beta' - 'candidates' = '{}'
          AND (NOT prm ? 'alpha' OR jsonb_typeof(prm -> 'alpha') = 'number')
          AND (NOT prm ? 'beta' OR jsonb_typeof(prm -> 'beta') = 'number')
          AND (NOT prm ? 'candidates' OR jsonb_typeof(prm -> 'candidates') = 'number') THEN
        -- WeiMoCIR without caption spaces is its query fusion alone: one vector (candidates
        -- unused, but checked against its bound as on the general path).
        PERFORM mmr._candidates(prm, p_k + 1, p_k + 1);
        p.vecs := ARRAY[mmr.vec_normalize(mmr.vec_mix(p_ref, p_mod,
                                                      coalesce((prm ->> 'alpha')::float8, 0.8)))];
    ELSIF m IN ('score_sum', 'product') AND prm - 'candidates' = '{}'
          AND (NOT prm ? 'candidates' OR jsonb_typeof(prm -> 'candidates') = 'number') THEN
        p.vecs := ARRAY[mmr.vec_normalize(p_ref), mmr.vec_normalize(p_mod)];
        p.n := mmr._candidates(prm, p_k + 1, greatest(4 * p_k, 40));
        -- the checked statement (no rows unless both legs are complete), the plain one to rerun
        p.sql := s.statements ->> (m || '_checked');
        p.aux := jsonb_build_object('sql', s.statements ->> m);
        RETURN p;
    ELSE
        RETURN NULL;
    END IF;
    p.sql := s.statements ->> CASE WHEN p_exclude IS NULL THEN 'single' ELSE 'single_excl' END;
    RETURN p;
END
$$;

-- After a fast-path statement returned p_got rows: NULL when that was complete, else the
-- statement to run next with iterative scans switched on (mmr._top_up_scan): a single-vector
-- statement continues past the rows already returned; a checked score_sum / product statement
-- returned nothing, and its plain form runs again.
CREATE OR REPLACE FUNCTION mmr._fast_rerun(p mmr._search_plan, p_got bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_got >= p.k OR (cardinality(p.vecs) > 1 AND p_got > 0) THEN
        RETURN NULL;
    END IF;
    PERFORM mmr._top_up_scan();
    RETURN CASE WHEN cardinality(p.vecs) = 1 THEN mmr._offset_sql(p.sql, p_got)
                ELSE p.aux ->> 'sql' END;
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
-- the general statement of mmr._composed_plan, but each leg is one small cached statement
-- returning keys and scores, a space scores by key only the candidates its own leg did not
-- return, and the fusion is a static statement (its plan is kept).  Vectors never leave the
-- index scans: carrying 40 embeddings per leg through arrays cost more than the look-ups.
CREATE OR REPLACE FUNCTION mmr._weimocir_fast(s mmr._space, cs mmr._space,
                                              p_ref @extschema:vector@.vector,
                                              p_refcap @extschema:vector@.vector,
                                              p_mod @extschema:vector@.vector, p_alpha float8,
                                              p_beta float8, p_n int, p_k int, p_exclude jsonb)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qi @extschema:vector@.vector := mmr.vec_normalize(mmr.vec_mix(p_ref, p_mod, p_alpha));
    qc @extschema:vector@.vector := mmr.vec_normalize(mmr.vec_mix(p_refcap, p_mod, p_alpha));
    ki jsonb[];
    si float8[];
    kc jsonb[];
    sc float8[];
    mi jsonb[];
    mc jsonb[];
    wi float8[] := '{}';
    wc float8[] := '{}';
BEGIN
    SELECT l.keys, l.scores INTO ki, si FROM mmr._leg_agg(s.statements ->> 'leg_agg', qi, p_n) l;
    SELECT l.keys, l.scores INTO kc, sc FROM mmr._leg_agg(cs.statements ->> 'leg_agg', qc, p_n) l;
    mi := mmr._keys_except(kc, ki);
    mc := mmr._keys_except(ki, kc);
    IF cardinality(mi) > 0 THEN
        EXECUTE s.statements ->> 'sims_of' INTO wi USING mi, qi;
    END IF;
    IF cardinality(mc) > 0 THEN
        EXECUTE cs.statements ->> 'sims_of' INTO wc USING mc, qc;
    END IF;
    RETURN QUERY SELECT * FROM mmr._weimocir_fuse(ki || mi, si || wi, kc || mc, sc || wc, p_beta,
                                                  p_k, p_exclude);
END
$$;
