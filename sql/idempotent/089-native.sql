-- mmr.search, both overloads of mmr.composed_search and mmr.gqr_refine: the native functions
-- when this server has the library (native/pg_mmretrieval.c, the executor, and
-- native/vector_ops.c, the gqr_refine primitive; installed with
-- `make -C native install PG_CONFIG=...`; `make test` and `make demo` install it into the
-- embedded server), else the PL/pgSQL functions mmr._search_plpgsql,
-- mmr._composed_search_plpgsql, mmr._composed_search_key_plpgsql and mmr._gqr_refine_plpgsql
-- under the public names.  Each pair has the same signature, SET clauses and contract; a native
-- search function runs the plan of the SQL planner its reference asks (mmr._search_exec_plan,
-- the by-vector builders, mmr._composed_key_exec_plan) and hands every call without one to the
-- general-path function its reference calls.  The
-- native ones are used only when the library loads, its ABI is the one this schema expects, and
-- the installing role may create C functions (superuser); anything else keeps the PL/pgSQL
-- functions, with a NOTICE.  Re-run on every upgrade, so installing or removing the library
-- takes effect at the next `mmr db upgrade`.  The planners' primitives are bound the same way:
-- the statement memo (mmr._memo_get, mmr._memo_put) and mmr._kept_vector.

-- Why the native functions cannot be used here (NULL: they can).
CREATE OR REPLACE FUNCTION mmr._native_unavailable()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $mmr$
DECLARE
    expected_abi constant int := 6;
    abi int;
BEGIN
    CREATE OR REPLACE FUNCTION mmr._native_abi() RETURNS int
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS '$libdir/pg_mmretrieval', 'mmr_native_abi';
    EXECUTE 'SELECT mmr._native_abi()' INTO abi;
    IF abi <> expected_abi THEN
        RETURN format('the library''s ABI is %s, this schema needs %s (rebuild native/)', abi,
                      expected_abi);
    END IF;
    RETURN NULL;
EXCEPTION WHEN undefined_file OR undefined_function OR insufficient_privilege THEN
    RETURN SQLERRM;
END
$mmr$;

-- The text-rewriting binder of earlier releases (it edited pg_get_functiondef() output).
DROP FUNCTION IF EXISTS mmr._bind_function(regprocedure, text, text);

-- mmr.search's first signature (7 arguments) is replaced by the one declared below (reranking
-- added); existing calls keep working because the new arguments have defaults.
DROP FUNCTION IF EXISTS mmr.search(text, text, @extschema:vector@.vector, int, jsonb, int, int);

-- The public functions' declarations: signature, result, volatility and SET clauses, written
-- out once here, each the same as its PL/pgSQL reference function's (mmr._bind_search checks
-- that they agree), with the C symbol of the native library that implements it.
CREATE OR REPLACE FUNCTION mmr._native_functions()
RETURNS TABLE (reference regprocedure, name text, symbol text, declaration text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $mmr$
    SELECT v.reference::regprocedure, v.name, v.symbol, v.declaration FROM (VALUES
    ('mmr._search_plpgsql(text,text,@extschema:vector@.vector,int,jsonb,int,int,text,int,jsonb)',
     'search', 'mmr_search', $d$
CREATE OR REPLACE FUNCTION mmr.search(
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
STABLE
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
$d$),
    ('mmr._composed_search_plpgsql(text,text,@extschema:vector@.vector,@extschema:vector@.vector,'
     'text,int,jsonb,jsonb,int,int,text,int,jsonb)',
     'composed_search', 'mmr_composed_search', $d$
CREATE OR REPLACE FUNCTION mmr.composed_search(
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
STABLE
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
$d$),
    ('mmr._composed_search_key_plpgsql(text,text,jsonb,@extschema:vector@.vector,text,int,jsonb,'
     'jsonb,int,int,text,int,jsonb)',
     'composed_search', 'mmr_composed_search_key', $d$
CREATE OR REPLACE FUNCTION mmr.composed_search(
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
STABLE
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = off
SET hnsw.max_scan_tuples = 20000
$d$),
    ('mmr._gqr_refine_plpgsql(@extschema:vector@.vector,@extschema:vector@.vector[],float8[],'
     'float8,float8,float8,int)',
     'gqr_refine', 'mmr_gqr_refine', $d$
CREATE OR REPLACE FUNCTION mmr.gqr_refine(
    z @extschema:vector@.vector,
    d @extschema:vector@.vector[],
    s2 float8[],
    a float8 DEFAULT 0.5,
    t float8 DEFAULT 1,
    lr float8 DEFAULT 5e-3,
    steps int DEFAULT 15)
RETURNS @extschema:vector@.vector
IMMUTABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
$d$),
    ('mmr._memo_get_plpgsql(text)', '_memo_get', 'mmr_memo_get', $d$
CREATE OR REPLACE FUNCTION mmr._memo_get(key text)
RETURNS text
STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
$d$),
    ('mmr._memo_put_plpgsql(text,text)', '_memo_put', 'mmr_memo_put', $d$
CREATE OR REPLACE FUNCTION mmr._memo_put(key text, value text)
RETURNS text
VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
$d$),
    ('mmr._kept_vector_plpgsql(text,jsonb)', '_kept_vector', 'mmr_kept_value', $d$
CREATE OR REPLACE FUNCTION mmr._kept_vector(sql text, key jsonb)
RETURNS @extschema:vector@.vector
STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
$d$)) AS v(reference, name, symbol, declaration)
$mmr$;

-- Bind the public functions natively (p_native: LANGUAGE c, the library's symbol) or to their
-- PL/pgSQL reference functions (LANGUAGE plpgsql with the reference's body, prosrc, verbatim).
-- Both are the declarations above; CREATE OR REPLACE keeps each public function's OID, so
-- grants, comments and dependent objects stay.  Tests switch a database both ways.
CREATE OR REPLACE FUNCTION mmr._bind_search(p_native boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $mmr$
DECLARE
    f record;
    public_fn regprocedure;
BEGIN
    FOR f IN SELECT * FROM mmr._native_functions() LOOP
        IF p_native THEN
            EXECUTE f.declaration || format('LANGUAGE c AS %L, %L', '$libdir/pg_mmretrieval',
                                            f.symbol);
        ELSE
            EXECUTE f.declaration || format('LANGUAGE plpgsql AS %L',
                                            (SELECT p.prosrc FROM pg_proc p
                                              WHERE p.oid = f.reference));
        END IF;
        -- the declaration and its reference must agree (same contract, both bindings)
        SELECT p.oid INTO public_fn FROM pg_proc p, pg_proc r
         WHERE r.oid = f.reference AND p.pronamespace = r.pronamespace
           AND p.proname = f.name AND p.proargtypes = r.proargtypes AND p.oid <> r.oid;
        IF public_fn IS NULL OR EXISTS (
               SELECT FROM pg_proc p, pg_proc r
                WHERE p.oid = public_fn AND r.oid = f.reference
                  AND (p.prorettype, p.proretset, p.provolatile, p.proparallel, p.proisstrict,
                       p.proconfig, pg_get_function_arguments(p.oid))
                      IS DISTINCT FROM
                      (r.prorettype, r.proretset, r.provolatile, r.proparallel, r.proisstrict,
                       r.proconfig, pg_get_function_arguments(r.oid))) THEN
            RAISE EXCEPTION 'the declaration of % does not match its reference %',
                            coalesce(public_fn::text, f.symbol), f.reference
                USING ERRCODE = 'internal_error';
        END IF;
    END LOOP;
END
$mmr$;

DO $mmr$
DECLARE
    -- Citus hook (019-citus.sql): PL/pgSQL functions on a Citus database
    why text := coalesce(mmr._citus_native_unavailable(), mmr._native_unavailable());
BEGIN
    IF why IS NOT NULL THEN
        RAISE NOTICE 'pg_mmretrieval: mmr.search and mmr.composed_search run without the native '
                     'fast path: %', why;
    END IF;
    PERFORM mmr._bind_search(why IS NULL);
END
$mmr$;
