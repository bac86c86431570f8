-- Score fusion and query refinement primitives (FUSION.md §1.3, §1.4, §2): pure functions used
-- by the search functions in 070/075, exposed so that they can be tested and reused.

-- RRF term of one list: w / (k + rank), ranks 1-based (Cormack et al. 2009; k = 60).
CREATE OR REPLACE FUNCTION mmr.rrf_term(rank bigint, k float8 DEFAULT 60, weight float8 DEFAULT 1)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN rank >= 1 THEN weight / (mmr._check_rrf_k(k) + rank)
            ELSE mmr._check_real('rrf_term rank', rank, 1, NULL, false,
                                 'Ranks are 1-based: the best row has rank 1.') END;

-- Harris fusion S = s_t·s_v − λ(s_t + s_v)² (BASIC, λ = 0.1).
CREATE OR REPLACE FUNCTION mmr.harris(s_t float8, s_v float8, lambda float8 DEFAULT 0.1)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN s_t * s_v - lambda * (s_t + s_v) * (s_t + s_v);

-- Min-normalisation s' = max((s − s_min)/|denominator|, 0): maps s_min to 0 and 0 to 1 when the
-- denominator is s_min itself (BASIC paper); the BASIC code divides the text score by the
-- image minimum instead (pass it as denominator).
CREATE OR REPLACE FUNCTION mmr.min_norm(s float8, s_min float8, denominator float8 DEFAULT NULL)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN greatest((s - s_min) / greatest(abs(coalesce(denominator, s_min)), 1e-12), 0);

-- PDV (Prompt Directional Vectors) fused query, FUSION.md §1.3:
--   Δ = n(f_tc) − n(f_t); f_I = n(f_i) + α_I·Δ; f_T = n(f_t) + α_T·Δ; q = n((1−β)·f_I + β·f_T).
CREATE OR REPLACE FUNCTION mmr.pdv_query(
    image @extschema:vector@.vector,
    reference_caption @extschema:vector@.vector,
    composed_text @extschema:vector@.vector,
    alpha_i float8 DEFAULT 1.4,
    alpha_t float8 DEFAULT 1.2,
    beta float8 DEFAULT 0.75)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT mmr.vec_normalize(
               mmr.vec_scale(d.fi OPERATOR(@extschema:vector@.+) mmr.vec_scale(d.delta, alpha_i), 1 - beta)
               OPERATOR(@extschema:vector@.+)
               mmr.vec_scale(d.ft OPERATOR(@extschema:vector@.+) mmr.vec_scale(d.delta, alpha_t), beta))
      FROM (SELECT n.fi, n.ft, n.ftc OPERATOR(@extschema:vector@.-) n.ft AS delta
              FROM (SELECT mmr.vec_normalize(image) AS fi, mmr.vec_normalize(reference_caption) AS ft,
                           mmr.vec_normalize(composed_text) AS ftc) n) d;
END;

-- Rocchio q' = n(α·q + β·mean(relevant) − γ·mean(non-relevant)) (SMART defaults 1, 0.75, 0.15).
CREATE OR REPLACE FUNCTION mmr.rocchio_query(
    query @extschema:vector@.vector,
    relevant @extschema:vector@.vector[],
    nonrelevant @extschema:vector@.vector[] DEFAULT NULL,
    alpha float8 DEFAULT 1,
    beta float8 DEFAULT 0.75,
    gamma float8 DEFAULT 0.15)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT mmr.vec_normalize(
               mmr.vec_scale(query, alpha)
               OPERATOR(@extschema:vector@.+)
               (CASE WHEN coalesce(cardinality(relevant), 0) = 0 THEN mmr.vec_scale(query, 0)
                     ELSE mmr.vec_scale(mmr.vec_mean(relevant), beta) END)
               OPERATOR(@extschema:vector@.-)
               (CASE WHEN coalesce(cardinality(nonrelevant), 0) = 0 THEN mmr.vec_scale(query, 0)
                     ELSE mmr.vec_scale(mmr.vec_mean(nonrelevant), gamma) END));
END;

-- Greedy MMR (Carbonell & Goldstein 1998) over n candidates: rel[i] = relevance, sims = n×n
-- similarity matrix (2-D array).  Returns the 1-based candidate indexes in selection order:
--   argmax_{d∉S} λ·rel(d) − (1−λ)·max_{s∈S} sim(d, s)      (the first pick: max relevance).
CREATE OR REPLACE FUNCTION mmr.mmr_order(rel float8[], sims float8[], lambda float8 DEFAULT 0.5,
                                         k int DEFAULT NULL)
RETURNS int[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int := coalesce(cardinality(rel), 0);
    maxsim float8[];
    taken boolean[];
    picked int[] := '{}';
    best int;
    best_val float8;
    val float8;
BEGIN
    IF n = 0 THEN
        RETURN picked;
    END IF;
    IF array_ndims(sims) <> 2 OR array_length(sims, 1) <> n OR array_length(sims, 2) <> n THEN
        RAISE EXCEPTION 'sims must be a % x % matrix', n, n USING ERRCODE = 'invalid_parameter_value';
    END IF;
    maxsim := array_fill(NULL::float8, ARRAY[n]);
    taken := array_fill(false, ARRAY[n]);
    FOR step IN 1 .. least(coalesce(k, n), n) LOOP
        best := NULL;
        FOR i IN 1 .. n LOOP
            CONTINUE WHEN taken[i];
            val := CASE WHEN maxsim[i] IS NULL THEN rel[i]
                        ELSE lambda * rel[i] - (1 - lambda) * maxsim[i] END;
            IF best IS NULL OR val > best_val THEN
                best := i;
                best_val := val;
            END IF;
        END LOOP;
        taken[best] := true;
        picked := picked || best;
        FOR i IN 1 .. n LOOP
            maxsim[i] := greatest(coalesce(maxsim[i], '-Infinity'::float8), sims[i][best]);
        END LOOP;
    END LOOP;
    RETURN picked;
END
$$;

-- GQR (FUSION.md §2.3): KL(m ‖ softmax(z·D_Uᵀ/T)), its closed-form gradient
-- (1/T)·D_Uᵀ(p − m), the target m = (1−a)·softmax(s1/T) + a·softmax(s2/T), and refinement by
-- plain gradient descent (our simplification of the paper's Adam).
CREATE OR REPLACE FUNCTION mmr.softmax(s float8[], t float8 DEFAULT 1)
RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ARRAY(SELECT mmr._exp0((u.x - m.mx) / m.t) / m.z
                   FROM unnest(s) WITH ORDINALITY u(x, i),
                        (SELECT w.mx, w.t, sum(mmr._exp0((v.x - w.mx) / w.t)) AS z
                           FROM unnest(s) v(x),
                                (SELECT max(y) AS mx,
                                        mmr._check_real('the softmax temperature t', t, 0, NULL,
                                                        true, 'softmax(s / t) needs t > 0 '
                                                        '(default 1).') AS t
                                   FROM unnest(s) y) w
                          GROUP BY w.mx, w.t) m
                  ORDER BY u.i);
END;

CREATE OR REPLACE FUNCTION mmr.gqr_target(s1 float8[], s2 float8[], a float8 DEFAULT 0.5,
                                          t float8 DEFAULT 1)
RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ARRAY(SELECT (1 - a) * u.x + a * u.y
                   FROM unnest(mmr.softmax(s1, t), mmr.softmax(s2, t)) WITH ORDINALITY u(x, y, i)
                  ORDER BY u.i);
END;

CREATE OR REPLACE FUNCTION mmr.gqr_loss(z @extschema:vector@.vector, d @extschema:vector@.vector[],
                                        m float8[], t float8 DEFAULT 1)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT sum(CASE WHEN u.m > 0 THEN u.m * (ln(u.m) - ln(u.p)) ELSE 0 END)
      FROM unnest(m, mmr.softmax(ARRAY(SELECT mmr.vec_dot(z, x.v) FROM unnest(d) WITH ORDINALITY x(v, i)
                                        ORDER BY x.i), t)) AS u(m, p);
END;

CREATE OR REPLACE FUNCTION mmr.gqr_gradient(z @extschema:vector@.vector,
                                            d @extschema:vector@.vector[], m float8[],
                                            t float8 DEFAULT 1)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT @extschema:vector@.sum(mmr.vec_scale(u.v, (u.p - u.m) / t))
      FROM unnest(d, mmr.softmax(ARRAY(SELECT mmr.vec_dot(z, x.v) FROM unnest(d) WITH ORDINALITY x(v, i)
                                        ORDER BY x.i), t), m) AS u(v, p, m);
END;

-- mmr.gqr_refine's reference implementation; 089-native.sql creates mmr.gqr_refine from it (the
-- native function, the same steps in C, or a copy of this one).
CREATE OR REPLACE FUNCTION mmr._gqr_refine_plpgsql(z @extschema:vector@.vector,
                                                    d @extschema:vector@.vector[], s2 float8[],
                                                    a float8 DEFAULT 0.5, t float8 DEFAULT 1,
                                                    lr float8 DEFAULT 5e-3, steps int DEFAULT 15)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql IMMUTABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
-- PARALLEL RESTRICTED: the overflow handler below is a subtransaction.
DECLARE
    n int := cardinality(d);
BEGIN
    IF cardinality(d) IS DISTINCT FROM cardinality(s2) THEN
        RAISE EXCEPTION 'gqr_refine: % candidate vectors but % complementary scores',
                        cardinality(d), cardinality(s2) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The bounds (steps, candidate vectors), a temperature above 0, a in [0, 1], lr >= 0: one
    -- check for both implementations (the native one calls it too).
    PERFORM mmr._check_gqr(n, a, t, lr, steps);
    IF n = 0 OR steps = 0 THEN
        RETURN z;
    END IF;
    BEGIN
        RETURN mmr._gqr_steps(z, d, s2, a, t, lr, steps);
    EXCEPTION WHEN numeric_value_out_of_range THEN
        -- a float overflow (a large lr on large scores): never a non-finite query
        RAISE EXCEPTION 'gqr_refine: the refined query is not finite (%)', SQLERRM
            USING ERRCODE = 'data_exception',
                  HINT = 'Lower lr or the number of steps, or raise the temperature.';
    END;
END
$$;

-- mmr.gqr_refine itself, declared here (when it does not exist yet) so that the search files
-- call a function of an earlier file: the reference above until 089-native.sql binds it to the
-- native primitive (native/vector_ops.c) when the library loads, else to the reference's body.
DO $mmr$
BEGIN
    IF to_regprocedure('mmr.gqr_refine(@extschema:vector@.vector,@extschema:vector@.vector[],'
                       'float8[],float8,float8,float8,int)') IS NULL THEN
        CREATE FUNCTION mmr.gqr_refine(z @extschema:vector@.vector,
                                       d @extschema:vector@.vector[], s2 float8[],
                                       a float8 DEFAULT 0.5, t float8 DEFAULT 1,
                                       lr float8 DEFAULT 5e-3, steps int DEFAULT 15)
        RETURNS @extschema:vector@.vector
        LANGUAGE sql IMMUTABLE PARALLEL RESTRICTED
        SET search_path = pg_catalog, pg_temp
        AS 'SELECT mmr._gqr_refine_plpgsql($1, $2, $3, $4, $5, $6, $7)';
    END IF;
END
$mmr$;

-- The gradient steps of mmr._gqr_refine_plpgsql (arguments checked there).
CREATE OR REPLACE FUNCTION mmr._gqr_steps(z @extschema:vector@.vector,
                                          d @extschema:vector@.vector[], s2 float8[],
                                          a float8, t float8, lr float8, steps int)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
-- Gradient steps z <- z - lr * sum_i (p_i - m_i)/t * d_i keep z in z0 + span(d), so they are run
-- on the coefficients c (z = z0 + sum_i c_i d_i): the scores are s = D z0 + G c with the Gram
-- matrix G = D D^T computed once, and the only vector arithmetic left is the final sum.  Same
-- iterates as stepping z itself (to float32 rounding), at a fraction of the cost.
DECLARE
    n int := cardinality(d);
    b float8[];
    target float8[];
    g @extschema:vector@.vector[];
    c float8[];
    s float8[];
    cv @extschema:vector@.vector;
    mx float8;
    tot float8;
BEGIN
    -- checked here too: this function is callable on its own
    PERFORM mmr._check_gqr(n, a, t, lr, steps);
    IF n = 0 OR steps = 0 THEN
        RETURN z;
    END IF;
    b := ARRAY(SELECT mmr.vec_dot(z, x.v) FROM unnest(d) WITH ORDINALITY x(v, i) ORDER BY x.i);
    target := mmr.gqr_target(b, s2, a, t);
    -- Row i of G as an n-dimensional vector, so G c is n inner products in pgvector.
    g := ARRAY(SELECT ARRAY(SELECT mmr.vec_dot(x.v, y.v)
                              FROM unnest(d) WITH ORDINALITY y(v, j) ORDER BY y.j)::real[]
                      ::@extschema:vector@.vector
                 FROM unnest(d) WITH ORDINALITY x(v, i) ORDER BY x.i);
    c := array_fill(0::float8, ARRAY[n]);
    FOR step IN 1 .. steps LOOP
        cv := c::real[]::@extschema:vector@.vector;
        s := ARRAY(SELECT b[x.i] - (x.g OPERATOR(@extschema:vector@.<#>) cv)
                     FROM unnest(g) WITH ORDINALITY x(g, i) ORDER BY x.i);
        -- softmax(s / t), then c <- c - lr * (p - m) / t
        mx := s[1];
        FOR i IN 2 .. n LOOP
            IF s[i] > mx THEN
                mx := s[i];
            END IF;
        END LOOP;
        tot := 0;
        FOR i IN 1 .. n LOOP
            s[i] := mmr._exp0((s[i] - mx) / t);
            tot := tot + s[i];
        END LOOP;
        FOR i IN 1 .. n LOOP
            c[i] := c[i] - lr * (s[i] / tot - target[i]) / t;
        END LOOP;
    END LOOP;
    cv := z OPERATOR(@extschema:vector@.+) mmr.vec_weighted_sum(d, c);
    IF NOT (@extschema:vector@.vector_norm(cv) < 'Infinity'::float8) THEN
        -- NaN from infinite scores (stored vectors whose products overflow float4)
        RAISE EXCEPTION 'gqr_refine: the refined query is not finite'
            USING ERRCODE = 'data_exception',
                  HINT = 'Lower lr or the number of steps, or raise the temperature; check the '
                         'candidate vectors for huge values.';
    END IF;
    RETURN cv;
END
$$;

-- Fusion of ranked lists: the statement fragment shared by mmr.fuse and mmr.hybrid_search.
-- Input relation `legs(leg int, key jsonb, rank bigint, score float8)`; $6 = per-leg weights
-- (float8[], NULL = all 1), $7 = numeric options (rrf_k).  Methods (FUSION.md §2.1-2.2):
--   rrf        Σ w_l / (rrf_k + rank_l)
--   combsum    Σ w_l · norm_l(score)        norm: minmax (s−min)/(max−min+1e−12) or zscore
--   combmnz    combsum · |{l : d ∈ l}|
--   avgrank    −mean_l rank_l (missing ⇒ length of that list + 1)
CREATE OR REPLACE FUNCTION mmr._fusion_sql(p_method text, p_norm text DEFAULT 'minmax')
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    norm text;
BEGIN
    IF p_norm IS NULL OR p_norm NOT IN ('minmax', 'zscore', 'none') THEN
        RAISE EXCEPTION 'unknown score normalisation %', quote_literal(p_norm)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use minmax, zscore or none.';
    END IF;
    norm := CASE p_norm
        WHEN 'minmax' THEN '(l.score - min(l.score) OVER w) / (max(l.score) OVER w - min(l.score) OVER w + 1e-12)'
        WHEN 'zscore' THEN '(l.score - avg(l.score) OVER w) / (coalesce(stddev_pop(l.score) OVER w, 0) + 1e-12)'
        ELSE 'l.score' END;
    RETURN CASE lower(p_method)
        WHEN 'rrf' THEN
            'SELECT f.key, sum(coalesce($6[f.leg], 1) / ($7[1] + f.rank))::float8 AS score '
            'FROM legs f GROUP BY f.key'
        WHEN 'combsum' THEN
            format('SELECT n.key, sum(coalesce($6[n.leg], 1) * n.s)::float8 AS score FROM '
                   '(SELECT l.key, l.leg, %s AS s FROM legs l WINDOW w AS (PARTITION BY l.leg)) n '
                   'GROUP BY n.key', norm)
        WHEN 'combmnz' THEN
            format('SELECT n.key, (sum(coalesce($6[n.leg], 1) * n.s) * count(DISTINCT n.leg))::float8 AS score FROM '
                   '(SELECT l.key, l.leg, %s AS s FROM legs l WINDOW w AS (PARTITION BY l.leg)) n '
                   'GROUP BY n.key', norm)
        WHEN 'avgrank' THEN
            'SELECT a.key, (-avg(coalesce(f.rank, n.len + 1)))::float8 AS score FROM '
            '(SELECT DISTINCT key FROM legs) a CROSS JOIN '
            '(SELECT leg, count(*) AS len FROM legs GROUP BY leg) n '
            'LEFT JOIN legs f ON f.key = a.key AND f.leg = n.leg GROUP BY a.key'
        ELSE NULL END;
END
$$;

CREATE OR REPLACE FUNCTION mmr._check_fusion(p_method text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_method IS NULL OR lower(p_method) NOT IN ('rrf', 'combsum', 'combmnz', 'avgrank') THEN
        RAISE EXCEPTION 'unknown fusion method %', quote_literal(p_method)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use rrf, combsum, combmnz or avgrank.';
    END IF;
END
$$;

-- Fuse ranked lists given as jsonb: [[{"key": .., "score": ..}, ...], ...] (best first).
CREATE OR REPLACE FUNCTION mmr.fuse(runs jsonb, method text DEFAULT 'rrf', weights float8[] DEFAULT NULL,
                                    rrf_k float8 DEFAULT 60, norm text DEFAULT 'minmax')
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad jsonb;
BEGIN
    PERFORM mmr._check_fusion(method);
    PERFORM mmr._check_rrf_k(rrf_k);
    PERFORM mmr._check_weights(weights);
    IF jsonb_typeof(runs) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'runs must be a JSON array of ranked lists'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- scores given as strings ("NaN", "Infinity") would make NaN scores: refused
    SELECT x.item INTO bad
      FROM jsonb_array_elements(runs) r(list), jsonb_array_elements(r.list) x(item)
     WHERE jsonb_typeof(r.list) = 'array' AND jsonb_typeof(x.item) = 'object'
       AND jsonb_typeof(x.item -> 'score') = 'string'
       AND lower(btrim(x.item ->> 'score')) IN ('nan', 'infinity', '-infinity', 'inf', '-inf', '+inf', '+infinity')
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'runs: item % has a non-finite score', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Scores must be finite numbers.';
    END IF;
    RETURN QUERY EXECUTE
        'WITH legs AS (SELECT r.i::int AS leg, x.item -> ''key'' AS key, x.j AS rank, '
        '(x.item ->> ''score'')::float8 AS score '
        'FROM jsonb_array_elements($1) WITH ORDINALITY r(list, i), '
        'jsonb_array_elements(r.list) WITH ORDINALITY x(item, j)) '
        'SELECT q.key, q.score FROM (' || mmr._fusion_sql(method, norm) || ') q '
        'ORDER BY q.score DESC, q.key'
      USING runs, NULL::int, NULL::jsonb, NULL::int, NULL::jsonb, weights, ARRAY[rrf_k]::float8[];
END
$$;
