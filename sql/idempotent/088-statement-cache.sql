-- Statement cache: the SQL text of the unfiltered single-vector searches of each space version,
-- stored in mmr._space.statements (revision 0003).  A BEFORE trigger recomputes it whenever a
-- space row is written, and this file recomputes it for every row on every upgrade (so a change
-- of the builders below reaches existing spaces).  The fast paths of mmr.search and
-- mmr.composed_search run it with one catalog look-up and no string building; filters,
-- rerankers and multi-leg methods build their statement per call.
--
--   search       $1 vector, $2 k                          (mmr._search_sql)
--   single_excl  $1 vector[] (query in $1[1]), $4 k, $5 the jsonb key to exclude
--                (mmr._single_sql; the by-key fast path when the reference is left out)
--   score_sum,   $1 vector[] (reference, modifier), $2 candidates per leg, $4 k, $5 a key to
--   product      exclude or NULL                            (mmr._pair_sql)
--   score_sum_checked, product_checked: the same, returning no row unless both legs returned
--                $2 candidates (the fast path scans without iterative scans)
--   gqr_checked, gqr  GQR on this space (mmr._gqr_fast_sql: pool, refinement, re-scoring):
--                $1 vector[] (weighted query, modifier), $2 candidates per leg, $4 k, $5 a key
--                to exclude or NULL, $6 jsonb options; checked: no row unless both legs are
--                complete
--   leg_agg      $1 vector, $2 n -> (keys jsonb[], scores float8[]) of the n nearest rows,
--                best first (a vector leg of mmr.hybrid_search)
--   embedding_of $1 a jsonb key -> that row's embedding as a full-precision vector
--   weimocir_ref, weimocir_leg_1, weimocir_leg_2, weimocir_sims_1, weimocir_sims_2: fragments
--                of WeiMoCIR's statement by reference key (mmr._weimocir_key_sql): the
--                reference's embedding by the key $6 -> 'key', leg_agg on the fused query
--                (SELECT qq.q[1] FROM qq) (or q[2]) with $2 rows, and the scores
--                (mmr._sims_of_sql) of the keys m.keys_1 (m.keys_2) to that query; the image
--                space's _1 and the caption space's _2 are combined

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
                              'single_excl', mmr._single_sql(c, s, NULL, true),
                              'score_sum', mmr._pair_sql(c, s, NULL, 'score_sum'),
                              'product', mmr._pair_sql(c, s, NULL, 'product'),
                              'score_sum_checked', mmr._pair_sql(c, s, NULL, 'score_sum', true),
                              'product_checked', mmr._pair_sql(c, s, NULL, 'product', true),
                              'gqr_checked', mmr._gqr_fast_sql(c, s, true),
                              'gqr', mmr._gqr_fast_sql(c, s, false),
                              'leg_agg', mmr._leg_agg_sql(c, s, '$1'),
                              'weimocir_leg_1', mmr._leg_agg_sql(c, s, '(SELECT qq.q[1] FROM qq)'),
                              'weimocir_leg_2', mmr._leg_agg_sql(c, s, '(SELECT qq.q[2] FROM qq)'),
                              'weimocir_sims_1', mmr._sims_of_sql(c, s, 'm.keys_1',
                                                                   '(SELECT qq.q[1] FROM qq)'),
                              'weimocir_sims_2', mmr._sims_of_sql(c, s, 'm.keys_2',
                                                                   '(SELECT qq.q[2] FROM qq)'),
                              'weimocir_ref', mmr._embedding_of_sql(c, s, '($6 -> ''key'')'),
                              'embedding_of', mmr._embedding_of_sql(c, s, '$1'));
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

