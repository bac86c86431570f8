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
--   leg_agg      $1 vector, $2 n -> (keys jsonb[], scores float8[]) of the n nearest rows,
--                best first (a vector leg of mmr.hybrid_search)
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
                              'leg_agg', format(
                                  'SELECT array_agg(x.key ORDER BY x.dist, x.key), '
                                  'array_agg(%s ORDER BY x.dist, x.key) FROM '
                                  '(SELECT %s AS key, %s AS dist FROM %s e ORDER BY %s LIMIT $2) x',
                                  mmr._score_expr(s.distance, 'x.dist'), mmr._key_json(c, 'e'),
                                  mmr._dist(s, 'e', '$1'), s.embedding_table,
                                  mmr._dist(s, 'e', '$1')),
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
       OR (s.distance = 'cosine' AND NOT @extschema:vector@.vector_norm(p_ref) > 0) THEN
        RETURN NULL;
    END IF;
    p.k := p_k; p.n := p_k + 1; p.exclude := p_exclude; p.space := s.name;
    IF m = 'image_only' AND prm = '{}' THEN
        p.vecs := ARRAY[p_ref];
    ELSIF p_mod IS NULL OR @extschema:vector@.vector_dims(p_mod) <> s.dimensions
          OR (s.distance = 'cosine' AND NOT @extschema:vector@.vector_norm(p_mod) > 0) THEN
        RETURN NULL;
    ELSIF m = 'text_only' AND prm = '{}' THEN
        p.vecs := ARRAY[p_mod];
    ELSIF m IN ('weighted', 'slerp') AND prm - 'alpha' = '{}'
          AND (NOT prm ? 'alpha' OR jsonb_typeof(prm -> 'alpha') = 'number') THEN
        p.vecs := ARRAY[CASE m WHEN 'weighted'
                             THEN mmr.vec_lerp(p_ref, p_mod, coalesce((prm ->> 'alpha')::float8, 0.5))
                             ELSE mmr.vec_slerp(p_ref, p_mod, coalesce((prm ->> 'alpha')::float8, 0.5))
                        END];
    ELSIF m IN ('score_sum', 'product') AND prm - 'candidates' = '{}'
          AND (NOT prm ? 'candidates' OR jsonb_typeof(prm -> 'candidates') = 'number') THEN
        p.vecs := ARRAY[mmr.vec_normalize(p_ref), mmr.vec_normalize(p_mod)];
        p.n := least(1000, greatest(p_k + 1, coalesce((prm ->> 'candidates')::float8::int,
                                                      greatest(4 * p_k, 40))));
        p.sql := s.statements ->> m;
        RETURN p;
    ELSE
        RETURN NULL;
    END IF;
    p.sql := s.statements ->> CASE WHEN p_exclude IS NULL THEN 'single' ELSE 'single_excl' END;
    RETURN p;
END
$$;
