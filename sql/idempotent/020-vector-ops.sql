-- Vector primitives for query-side fusion (FUSION.md §1.5).  All are IMMUTABLE and PARALLEL
-- SAFE, written as SQL-standard bodies (RETURN / BEGIN ATOMIC: names are resolved when the
-- function is created, so no SET clause is needed and the simple ones inline into queries).
-- A fused vector that is zero or not finite raises a clear error instead of reaching an index
-- (cosine distance to a zero vector is NaN and HNSW does not index it: FACTS.md §6).

-- Raise for a degenerate vector.  Takes the vector so that the planner never folds the call
-- in a CASE arm whose test it cannot decide (constant folding of an error in a dead arm).
CREATE OR REPLACE FUNCTION mmr._vector_error(p_what text, p_vec @extschema:vector@.vector)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% is a zero or non-finite vector (% dimensions), which has no direction',
                    p_what, @extschema:vector@.vector_dims(p_vec)
        USING ERRCODE = 'data_exception',
              HINT = 'Fusing opposite vectors with these weights cancels them out: change the '
                     'weights, or check the inputs.';
END
$$;

-- Dot product a·b (float8).
CREATE OR REPLACE FUNCTION mmr.vec_dot(a @extschema:vector@.vector, b @extschema:vector@.vector)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN -(a OPERATOR(@extschema:vector@.<#>) b);

-- Cosine similarity (float8).
CREATE OR REPLACE FUNCTION mmr.vec_cos(a @extschema:vector@.vector, b @extschema:vector@.vector)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 1 - (a OPERATOR(@extschema:vector@.<=>) b);

-- s · v.
CREATE OR REPLACE FUNCTION mmr.vec_scale(v @extschema:vector@.vector, s float8)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN v OPERATOR(@extschema:vector@.*)
       pg_catalog.array_fill(s::float4, ARRAY[@extschema:vector@.vector_dims(v)])::@extschema:vector@.vector;

-- v / ‖v‖, or an error for a zero or non-finite vector.
CREATE OR REPLACE FUNCTION mmr.vec_normalize(v @extschema:vector@.vector)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN @extschema:vector@.vector_norm(v) > 0
             AND @extschema:vector@.vector_norm(v) < 'Infinity'::float8
            THEN @extschema:vector@.l2_normalize(v)
            ELSE mmr._vector_error('the vector to normalise', v) END;

-- Weighted lerp n((1−w)·n(a) + w·n(b)), with one scaling instead of two: the result is
-- normalised, so the positive factor 1 − w (for w < 1) or w (for w ≥ 1) is divided out, leaving
-- n(a) + (w / (1 − w))·n(b) or ((1 − w) / w)·n(a) + n(b).  Every argument is used as a plain
-- parameter, so the whole function inlines into a query (the scaling by mmr.vec_scale, whose
-- argument here would be an expression used twice, would not): measured 11 µs a call against
-- 23 µs for n(n(a)·(1 − w) + n(b)·w) at 384 dimensions (a server-side loop).  A zero or
-- non-finite a or b, or a sum that cancels out, raises mmr._vector_error (vec_normalize).
CREATE OR REPLACE FUNCTION mmr.vec_lerp(a @extschema:vector@.vector, b @extschema:vector@.vector,
                                        w float8)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN mmr.vec_normalize(
    CASE WHEN w < 1
         THEN mmr.vec_normalize(a) OPERATOR(@extschema:vector@.+)
              (mmr.vec_normalize(b) OPERATOR(@extschema:vector@.*)
               pg_catalog.array_fill((w / (1 - w))::float4,
                                     ARRAY[@extschema:vector@.vector_dims(b)])::@extschema:vector@.vector)
         ELSE (mmr.vec_normalize(a) OPERATOR(@extschema:vector@.*)
               pg_catalog.array_fill(((1 - w) / w)::float4,
                                     ARRAY[@extschema:vector@.vector_dims(a)])::@extschema:vector@.vector)
              OPERATOR(@extschema:vector@.+) mmr.vec_normalize(b) END);

-- Un-normalised weighted sum (1−w)·a + w·b (WeiMoCIR fuses raw embeddings).
CREATE OR REPLACE FUNCTION mmr.vec_mix(a @extschema:vector@.vector, b @extschema:vector@.vector,
                                       w float8)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN mmr.vec_scale(a, 1 - w) OPERATOR(@extschema:vector@.+) mmr.vec_scale(b, w);

-- Spherical interpolation between n(a) (w=0) and n(b) (w=1); falls back to lerp when the
-- two directions are (anti)parallel (sin Ω < 1e-6).  For 0 ≤ w ≤ 1 both slerp weights are ≥ 0,
-- so n(sin((1−w)Ω)·n(a) + sin(wΩ)·n(b)) is the lerp of the same directions with weight
-- w′ = sin(wΩ) / (sin((1−w)Ω) + sin(wΩ)): computed so, the whole function inlines (one cosine
-- and one lerp; measured 2.5x faster than the formula below, which serves w outside [0, 1]).
CREATE OR REPLACE FUNCTION mmr._slerp_weight(om float8, w float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN sin(om) < 1e-6 OR NOT (w >= 0 AND w <= 1) THEN w
            ELSE sin(w * om) / (sin((1 - w) * om) + sin(w * om)) END;

CREATE OR REPLACE FUNCTION mmr._slerp_extrapolated(a @extschema:vector@.vector,
                                                   b @extschema:vector@.vector, w float8)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN sin(g.om) < 1e-6 THEN mmr.vec_lerp(a, b, w)
                ELSE mmr.vec_normalize(
                         mmr.vec_scale(g.na, sin((1 - w) * g.om) / sin(g.om))
                         OPERATOR(@extschema:vector@.+)
                         mmr.vec_scale(g.nb, sin(w * g.om) / sin(g.om))) END
      FROM (SELECT n.na, n.nb,
                   acos(least(1::float8, greatest(-1::float8, mmr.vec_dot(n.na, n.nb)))) AS om
              FROM (SELECT mmr.vec_normalize(a) AS na, mmr.vec_normalize(b) AS nb) n) g;
END;

CREATE OR REPLACE FUNCTION mmr.vec_slerp(a @extschema:vector@.vector, b @extschema:vector@.vector,
                                         w float8)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN w >= 0 AND w <= 1
            THEN mmr.vec_lerp(a, b, mmr._slerp_weight(
                     acos(least(1::float8, greatest(-1::float8,
                                                    1 - (a OPERATOR(@extschema:vector@.<=>) b)))),
                     w))
            ELSE mmr._slerp_extrapolated(a, b, w) END;

-- Σ_i w_i·v_i over arrays of vectors and weights (NULL weights: all 1).  Not normalised.
CREATE OR REPLACE FUNCTION mmr.vec_weighted_sum(vs @extschema:vector@.vector[],
                                                ws float8[] DEFAULT NULL)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN cardinality(vs) = 0 THEN NULL
                WHEN ws IS NOT NULL AND cardinality(ws) <> cardinality(vs)
                THEN mmr._vector_error('weighted sum (weights and vectors differ in number)', vs[1])
                ELSE (SELECT @extschema:vector@.sum(mmr.vec_scale(u.v, coalesce(ws[u.i], 1)))
                        FROM unnest(vs) WITH ORDINALITY AS u(v, i)) END;
END;

-- Mean of vectors.
CREATE OR REPLACE FUNCTION mmr.vec_mean(vs @extschema:vector@.vector[])
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT @extschema:vector@.avg(u.v) FROM unnest(vs) AS u(v);
END;

-- A vector from a jsonb value: a JSON array of numbers or a string in pgvector's text form.
CREATE OR REPLACE FUNCTION mmr._jvec(p jsonb)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p IS NULL OR jsonb_typeof(p) = 'null' THEN NULL
            ELSE (p #>> '{}')::@extschema:vector@.vector END;

-- Array of vectors from a JSON array of vectors.
CREATE OR REPLACE FUNCTION mmr._jvecs(p jsonb)
RETURNS @extschema:vector@.vector[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN p IS NULL OR jsonb_typeof(p) = 'null' THEN NULL
                ELSE ARRAY(SELECT mmr._jvec(e.v) FROM jsonb_array_elements(p) WITH ORDINALITY e(v, i)
                            ORDER BY e.i) END;
END;

-- P·x for P = U·Uᵀ given the orthonormal basis U as an array of vectors (BASIC §1.4).
CREATE OR REPLACE FUNCTION mmr.vec_project(basis @extschema:vector@.vector[],
                                           x @extschema:vector@.vector)
RETURNS @extschema:vector@.vector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(@extschema:vector@.sum(mmr.vec_scale(u.b, mmr.vec_dot(u.b, x))),
                    mmr.vec_scale(x, 0))
      FROM unnest(basis) AS u(b);
END;
