-- Bounded work (docs/security.md, "Bounded work: iteration counts, sizes and cancellation"):
-- the upper (and lower) bound of every iteration count, depth and size a caller sets, and the
-- checks that enforce them.  Each bound is one row of mmr._limits(); every search function (the
-- PL/pgSQL reference paths, and the native module through them) checks a parameter with
-- mmr._check_limit against that row, so a bound is changed in one place.  The bounds keep one
-- call's worst case to a few seconds on a small server; statement_timeout still applies.

-- name, lowest and highest allowed value, SQLSTATE when out of range (22023
-- invalid_parameter_value for a parameter, 54000 program_limit_exceeded for the size of an
-- input), and the hint.
CREATE OR REPLACE FUNCTION mmr._limits()
RETURNS TABLE (name text, lo float8, hi float8, errcode text, hint text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES
    ('k', 1, 1000, '22023',
     'An HNSW search returns at most 1000 nearest rows (hnsw.ef_search); for more, page with '
     'the collection view and your own ORDER BY.'),
    ('ef_search', 1, 1000, '22023',
     'pgvector''s hnsw.ef_search is at most 1000; the default is max(k, 40).'),
    ('max_scan_tuples', 1, 1000000, '22023',
     'max_scan_tuples bounds the tuples one filtered (iterative) scan visits; the default is '
     '20000.'),
    ('candidates', 1, 1000, '22023',
     'candidates is the number of rows each leg takes from its index, at most 1000 (one HNSW '
     'scan).'),
    ('rerank_depth', 1, 1000, '22023',
     'rerank_depth is the number of candidates the reranker sees, between k and 1000.'),
    ('steps', 0, 200, '22023',
     'GQR refines with a few gradient steps (default 15); at most 200.'),
    ('gqr_vectors', 0, 2000, '54000',
     'gqr_refine takes the candidate pool of a composed search: at most 2 x 1000 vectors.'),
    ('fb_docs', 1, 1000, '22023',
     'fb_docs is the number of top rows taken as relevant (pseudo-relevance feedback), at most '
     '1000.'),
    ('feedback_keys', 0, 1000, '54000',
     'Pass at most 1000 keys in relevant / nonrelevant.'),
    ('qe_k', 1, 1000, '22023',
     'qe_k is the number of rows of BASIC''s query expansion, at most 1000.'),
    ('turns', 1, 100, '54000',
     'A dialog query takes at most 100 turns: fold older turns into one vector client side.'),
    ('queries', 1, 64, '54000',
     'A multi-vector search takes at most 64 query vectors (ColBERT uses 32).'),
    ('parts', 0, 1000, '54000',
     'A row takes at most 1000 vectors in a multi-vector space.'),
    ('legs', 0, 16, '54000',
     'A search fuses at most 16 vector legs (spaces, caption spaces).'),
    ('embed_threads', 1, 16, '22023',
     'mmr.embed_threads is the number of ONNX Runtime intra-op threads of one backend''s '
     'encoder sessions (default 1); each backend encodes on its own.'),
    ('encoder_timeout', 1, 300, '22023',
     'mmr.encoder_timeout is the seconds mmr.embed waits for the encoder service (default 10).'),
    ('query_terms', 0, 64, '54000',
     'A lexical query takes at most 64 search terms: shorten it, or search by vector.'),
    ('query_bytes', 0, 10000, '54000',
     'A lexical query takes at most 10000 bytes of text.'),
    -- filtered search (issue 18): the rows below which a filter is scored exactly
    ('exact_filter_rows', 0, 1000000, '22023',
     'mmr.exact_filter_rows is the number of rows passing a filter below which the filtered '
     'rows are scored exactly (0: always the HNSW index); at most 1000000.'),
    ('batch_queries', 1, 1000, '54000',
     'mmr.search_batch takes at most 1000 query vectors per call: split larger batches.'),
    ('batch_rows', 1, 100000, '54000',
     'mmr.search_batch returns at most 100000 rows per call (query vectors x k): split the '
     'batch or lower k.')
$$;

-- The ranges of mmr._limits() as one constant (name -> [lo, hi]), for the checks' common case.
CREATE OR REPLACE FUNCTION mmr._limit_ranges()
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_object_agg(x.name, jsonb_build_array(x.lo, x.hi)) FROM mmr._limits() x
$$;

-- p_value checked against bound p_limit (mmr._limits), as an int; p_what names the parameter in
-- the message (default: the bound's name).  NULL is an error: callers pass their default.
CREATE OR REPLACE FUNCTION mmr._check_limit(p_limit text, p_value float8, p_what text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l record;
BEGIN
    -- the common case first, without a look-up of the bound's hint: one row of the constant
    -- mmr._limit_ranges() (folded by the planner)
    IF p_value >= (mmr._limit_ranges() -> p_limit ->> 0)::float8
       AND p_value <= (mmr._limit_ranges() -> p_limit ->> 1)::float8 THEN
        RETURN round(p_value)::int;
    END IF;
    SELECT * INTO l FROM mmr._limits() x WHERE x.name = p_limit;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_mmretrieval: no bound named %', quote_literal(p_limit)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', coalesce(p_what, p_limit)
            USING ERRCODE = 'null_value_not_allowed', HINT = l.hint;
    END IF;
    IF NOT (p_value >= l.lo AND p_value <= l.hi) THEN
        RAISE EXCEPTION '% must be between % and %, not %', coalesce(p_what, p_limit), l.lo, l.hi,
                        p_value
            USING ERRCODE = l.errcode, HINT = l.hint;
    END IF;
    RETURN round(p_value)::int;
END
$$;

-- A float parameter: finite, and within [p_min, p_max] (NULL: unbounded on that side; p_open:
-- the lower bound itself excluded).  Returns the value.
CREATE OR REPLACE FUNCTION mmr._check_real(p_what text, p_value float8, p_min float8 DEFAULT NULL,
                                           p_max float8 DEFAULT NULL, p_open boolean DEFAULT false,
                                           p_hint text DEFAULT NULL)
RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_what
            USING ERRCODE = 'null_value_not_allowed', HINT = coalesce(p_hint, '');
    END IF;
    IF p_value IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)
       OR (p_min IS NOT NULL AND (p_value < p_min OR (p_open AND p_value = p_min)))
       OR (p_max IS NOT NULL AND p_value > p_max) THEN
        RAISE EXCEPTION '% must be a finite number%, not %', p_what,
                        CASE WHEN p_min IS NOT NULL AND p_max IS NOT NULL
                             THEN format(' between %s and %s', p_min, p_max)
                             WHEN p_min IS NOT NULL AND p_open THEN format(' above %s', p_min)
                             WHEN p_min IS NOT NULL THEN format(' of at least %s', p_min)
                             WHEN p_max IS NOT NULL THEN format(' of at most %s', p_max)
                             ELSE '' END, p_value
            USING ERRCODE = 'invalid_parameter_value', HINT = coalesce(p_hint, '');
    END IF;
    RETURN p_value;
END
$$;

-- The candidates per leg of a search: params.candidates when given (checked against its
-- bound), else p_default; never below p_floor (k, or k + 1) nor above the bound.
CREATE OR REPLACE FUNCTION mmr._candidates(p jsonb, p_floor int, p_default int)
RETURNS int
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hi int := (mmr._limit_ranges() -> 'candidates' ->> 1)::int;
BEGIN
    IF p IS NOT NULL AND jsonb_typeof(p -> 'candidates') IS NOT NULL
       AND jsonb_typeof(p -> 'candidates') <> 'null' THEN
        IF jsonb_typeof(p -> 'candidates') <> 'number' THEN
            RAISE EXCEPTION 'parameter candidates must be a number, not %', p -> 'candidates'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN least(hi, greatest(p_floor, mmr._check_limit('candidates',
                                                            (p ->> 'candidates')::float8,
                                                            'params.candidates')));
    END IF;
    RETURN least(hi, greatest(p_floor, p_default));
END
$$;

-- The 1-based position of the first element of p_values that is not a finite number of at
-- least p_min (a NULL element counts as outside unless p_null_ok), or NULL when all are inside.
-- Shared by the array checks below.
CREATE OR REPLACE FUNCTION mmr._first_outside(p_values float8[], p_min float8, p_null_ok boolean)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.i::int FROM unnest(p_values) WITH ORDINALITY u(v, i)
     WHERE CASE WHEN u.v IS NULL THEN NOT p_null_ok
                ELSE NOT (u.v >= p_min AND u.v > '-Infinity'::float8
                          AND u.v < 'Infinity'::float8) END
     ORDER BY u.i LIMIT 1
$$;

-- Fusion weights: finite and not negative (NULL: all 1).
CREATE OR REPLACE FUNCTION mmr._check_weights(p_weights float8[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad int := mmr._first_outside(p_weights, 0, false);
BEGIN
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'weight % is %: weights must be finite numbers of at least 0', bad,
                        coalesce(p_weights[bad]::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'One weight per leg, e.g. ARRAY[1, 0.5]; NULL weights are all 1.';
    END IF;
END
$$;

-- RRF's k (Cormack et al. 2009: 60): finite and not negative, so k + rank (rank >= 1) is never 0.
CREATE OR REPLACE FUNCTION mmr._check_rrf_k(p_rrf_k float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT mmr._check_real('rrf_k', p_rrf_k, 0, NULL, false,
                           'RRF scores w / (rrf_k + rank); rrf_k is 60 by default (Cormack et '
                           'al. 2009) and must be at least 0.')
$$;

-- GQR's parameters (FUSION.md §2.3), for mmr.gqr_refine (both implementations) and the gqr
-- method of mmr.composed_search: at most gqr_vectors candidate vectors (p_vectors, NULL: not
-- known yet), a mixing weight a in [0, 1], a temperature above 0, a learning rate of at least 0,
-- and steps within their bound.
CREATE OR REPLACE FUNCTION mmr._check_gqr(p_vectors int, p_a float8, p_t float8, p_lr float8,
                                          p_steps float8)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_vectors IS NOT NULL THEN
        PERFORM mmr._check_limit('gqr_vectors', p_vectors, 'the number of candidate vectors');
    END IF;
    PERFORM mmr._check_real('GQR a', p_a, 0, 1, false,
                            'a mixes the two retrievers'' distributions: 0 <= a <= 1.');
    PERFORM mmr._check_real('GQR temperature', p_t, 0, NULL, true,
                            'The temperature divides the scores before softmax (default 1); 0 '
                            'would divide by zero.');
    PERFORM mmr._check_real('GQR lr', p_lr, 0, NULL, false,
                            'The learning rate of the gradient steps (default 0.005).');
    PERFORM mmr._check_limit('steps', p_steps, 'GQR steps');
END
$$;

-- The gqr method's params (the names mmr._composed_plan accepts), checked with the defaults of
-- FUSION.md §2.3; the native fast path calls it too, so both paths raise the same errors.
CREATE OR REPLACE FUNCTION mmr._check_gqr_params(p jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM mmr._check_gqr(NULL, mmr._num(p, 'a', 0.5), mmr._num(p, 'temperature', 1),
                           mmr._num(p, 'lr', 5e-3), mmr._num(p, 'steps', 15));
    PERFORM mmr._candidates(p, 1, 10);
END
$$;

-- exp(x) for x <= 0, 0 where exp would underflow (PostgreSQL raises on underflow): softmax
-- terms of scores far below the maximum.
CREATE OR REPLACE FUNCTION mmr._exp0(x float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN x < -700 THEN 0::float8 ELSE exp(x) END;

-- A stored vector (put_embeddings, put_multivectors, projections): not NULL, the space's
-- dimension, finite and not zero, in every space (a non-finite vector normalised for cosine
-- would be stored as zeros; a zero vector has no direction and no useful distance).
CREATE OR REPLACE FUNCTION mmr._check_stored_vector(p_vec @extschema:vector@.vector,
                                                    p_dimensions int, p_what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    norm float8;
BEGIN
    IF p_vec IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF @extschema:vector@.vector_dims(p_vec) <> p_dimensions THEN
        RAISE EXCEPTION '% has % dimensions, but the space has %', p_what,
                        @extschema:vector@.vector_dims(p_vec), p_dimensions
            USING ERRCODE = 'data_exception',
                  HINT = 'Encode it with the space''s encoder (see mmr.spaces.encoder).';
    END IF;
    norm := @extschema:vector@.vector_norm(p_vec);
    IF NOT (norm < 'Infinity'::float8) THEN
        RAISE EXCEPTION '% is not finite (NaN or infinite elements)', p_what
            USING ERRCODE = 'data_exception',
                  HINT = 'Check the encoder''s output: store only finite vectors.';
    END IF;
    IF norm > mmr._max_norm() THEN
        RAISE EXCEPTION '% has norm %, above the largest allowed (%)', p_what, norm,
                        mmr._max_norm()
            USING ERRCODE = 'data_exception',
                  HINT = 'Distances to such a vector overflow single precision: normalise it.';
    END IF;
    IF norm = 0 THEN
        RAISE EXCEPTION '% is a zero vector, which has no direction', p_what
            USING ERRCODE = 'data_exception',
                  HINT = 'Store a non-zero vector, or leave the row without an embedding.';
    END IF;
END
$$;

-- The largest norm of a query or stored vector: with both norms at most 1e18, no distance or
-- inner product overflows float32 (3.4e38), so no score is infinite or NaN.  Real embeddings
-- have norms near 1 (CLIP) or at most in the thousands.
CREATE OR REPLACE FUNCTION mmr._max_norm()
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 1e18::float8;

-- A query vector the fast paths accept (the general path's mmr._check_vector raises the error
-- otherwise): a norm of at most mmr._max_norm() (finite), and not zero under cosine.
CREATE OR REPLACE FUNCTION mmr._norm_ok(v @extschema:vector@.vector, p_distance text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN @extschema:vector@.vector_norm(v) <= mmr._max_norm()
       AND (p_distance <> 'cosine' OR @extschema:vector@.vector_norm(v) > 0);

-- Raise a clear error for an invalid query or stored vector.
CREATE OR REPLACE FUNCTION mmr._check_vector(p_vec @extschema:vector@.vector, p_dimensions int,
                                             p_distance text, p_what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, @extschema:vector@, pg_temp
AS $$
BEGIN
    IF p_vec IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF vector_dims(p_vec) <> p_dimensions THEN
        RAISE EXCEPTION '% has % dimensions, but the space has %', p_what, vector_dims(p_vec),
                        p_dimensions
            USING ERRCODE = 'data_exception',
                  HINT = 'Encode it with the space''s encoder (see mmr.spaces.encoder).';
    END IF;
    IF NOT (vector_norm(p_vec) <= mmr._max_norm()) THEN
        RAISE EXCEPTION '% has norm %, above the largest allowed (%)', p_what, vector_norm(p_vec),
                        mmr._max_norm()
            USING ERRCODE = 'data_exception',
                  HINT = 'Distances to such a vector overflow single precision: normalise it.';
    END IF;
    IF p_distance = 'cosine' AND vector_norm(p_vec) = 0 THEN
        RAISE EXCEPTION '% is a zero vector, which has no direction for cosine distance', p_what
            USING ERRCODE = 'data_exception';
    END IF;
END
$$;

-- A lexical query text: at most query_bytes bytes and query_terms search terms (the tsquery's
-- operands: a tsquery of n terms joined by operators has 2n - 1 nodes).
CREATE OR REPLACE FUNCTION mmr._check_query_text(p_text text, p_config regconfig)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_text IS NULL THEN
        RETURN;
    END IF;
    PERFORM mmr._check_limit('query_bytes', octet_length(p_text), 'the length of query_text in bytes');
    PERFORM mmr._check_limit('query_terms',
                             ceil(numnode(websearch_to_tsquery(p_config, p_text)) / 2.0),
                             'the number of search terms in query_text');
END
$$;

-- Candidate scores handed to a reranker (mmr.rerank_caption, mmr.rerank_mmr): finite, so that
-- no NaN or infinite score is returned.
CREATE OR REPLACE FUNCTION mmr._check_scores(p_scores float8[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad int := mmr._first_outside(p_scores, '-Infinity', true);
BEGIN
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'score % is %: candidate scores must be finite numbers', bad,
                        coalesce(p_scores[bad]::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
