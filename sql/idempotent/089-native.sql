-- mmr.search, both overloads of mmr.composed_search and mmr.gqr_refine: the native functions
-- when this server has the library (native/pg_mmretrieval.c, installed with
-- `make -C native install PG_CONFIG=...`; `make test` and `make demo` install it into the
-- embedded server), else the PL/pgSQL functions mmr._search_plpgsql,
-- mmr._composed_search_plpgsql, mmr._composed_search_key_plpgsql and mmr._gqr_refine_plpgsql
-- under the public names.  Each pair has the same signature, SET clauses and contract; a native
-- function hands every call that is not its plain fast path to its PL/pgSQL function.  The
-- native ones are used only when the library loads, its ABI is the one this schema expects, and
-- the installing role may create C functions (superuser); anything else keeps the PL/pgSQL
-- functions, with a NOTICE.  Re-run on every upgrade, so installing or removing the library
-- takes effect at the next `mmr db upgrade`.

-- Why the native functions cannot be used here (NULL: they can).
CREATE OR REPLACE FUNCTION mmr._native_unavailable()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $mmr$
DECLARE
    expected_abi constant int := 1;
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

-- One public function from its PL/pgSQL reference function: the same definition (signature,
-- volatility, SET clauses) with the C symbol p_symbol of the native library as its body, or, when
-- p_symbol is NULL, a copy of the reference under the public name.  CREATE OR REPLACE keeps the
-- public function's OID, so grants, comments and dependent objects stay.
CREATE OR REPLACE FUNCTION mmr._bind_function(p_reference regprocedure, p_name text,
                                              p_symbol text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $mmr$
DECLARE
    def text := pg_get_functiondef(p_reference);
    ref_name text := (SELECT proname FROM pg_proc WHERE oid = p_reference);
BEGIN
    def := replace(def, format('FUNCTION mmr.%s(', ref_name), format('FUNCTION mmr.%s(', p_name));
    IF p_symbol IS NOT NULL THEN
        def := replace(def, E'\n LANGUAGE plpgsql\n', E'\n LANGUAGE c\n');
        def := left(def, strpos(def, E'\nAS $function$')) ||
               format('AS %L, %L', '$libdir/pg_mmretrieval', p_symbol);
    END IF;
    EXECUTE def;
END
$mmr$;

-- Bind the public functions natively (p_native) or to copies of their PL/pgSQL reference
-- functions.  Tests switch a database both ways.
CREATE OR REPLACE FUNCTION mmr._bind_search(p_native boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $mmr$
DECLARE
    f record;
BEGIN
    -- each reference function by name (one overload each), its public name and C symbol
    FOR f IN SELECT p.oid::regprocedure AS reference, v.name, v.symbol
               FROM (VALUES ('_search_plpgsql', 'search', 'mmr_search'),
                            ('_composed_search_plpgsql', 'composed_search', 'mmr_composed_search'),
                            ('_composed_search_key_plpgsql', 'composed_search',
                             'mmr_composed_search_key'),
                            ('_gqr_refine_plpgsql', 'gqr_refine', 'mmr_gqr_refine'))
                    AS v(ref, name, symbol)
               JOIN pg_proc p ON p.proname = v.ref AND p.pronamespace = 'mmr'::regnamespace
    LOOP
        PERFORM mmr._bind_function(f.reference, f.name,
                                   CASE WHEN p_native THEN f.symbol END);
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
