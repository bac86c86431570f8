-- 007-00-search (issue 14, item 1): the types of the search planner, created once (revision
-- 0007) before the idempotent files that use them.  A later change to one is a new revision.
-- Revision 0006 shipped without them: an upgrade from it may find mmr._search_plan (created by
-- the idempotent 010-core.sql until then) and never mmr._exec_plan; both are created only when
-- missing, so the file also runs twice without error.

-- The general path's plan (mmr._composed_plan, mmr._single_plan and the hybrid, feedback and
-- multivector builders; run by mmr._execute): one statement and the values it is run with.
-- Databases installed before 0007 already have it (their 010-core.sql created it, with this
-- definition): kept as it is there.
DO $$
BEGIN
    IF to_regtype('mmr._search_plan') IS NULL THEN
        CREATE TYPE mmr._search_plan AS (
            sql text, vecs @extschema:vector@.vector[], n int, filter jsonb, k int,
            exclude jsonb, weights float8[], nums float8[], aux jsonb, qtext text,
            qvec @extschema:vector@.vector, space text);
    END IF;
END
$$;

-- The plan a fast path runs (mmr._search_exec_plan, mmr._composed_exec_plan, ...), by named
-- fields: the planner decides everything (whether the call takes the fast path, the statement,
-- its parameters, the index settings); an executor (PL/pgSQL, or the native module
-- native/pg_mmretrieval.c) only binds and runs it.
--   sql        the statement (key jsonb, score float8), its parameters the fields named in args
--   args       the names of the fields bound to $1, $2, ... (in that order)
--   query      a query vector;  vecs: query vectors (several legs)
--   n          rows per index scan;  k: rows asked for;  filter: a filter (NULL on the fast
--              paths);  exclude: a key left out
--   ef_search  hnsw.ef_search for the call (NULL: the function's own setting)
--   space_id   the space whose missing rows mmr._exec_rest explains (NULL: it says nothing)
--   rest       how a short result continues (mmr._exec_rest): 'offset' (the statement past the
--              rows it returned), 'rerun' (rest_sql when the statement returned nothing), or
--              NULL (never)
--   rest_sql   the statement 'rerun' runs
--   options    a method's numeric options (GQR: a, temperature, lr, steps)
DO $$
BEGIN
    IF to_regtype('mmr._exec_plan') IS NULL THEN
        CREATE TYPE mmr._exec_plan AS (
            sql text, args text[], query @extschema:vector@.vector,
            vecs @extschema:vector@.vector[], n int, k int, filter jsonb, exclude jsonb,
            ef_search int, space_id int, rest text, rest_sql text, options jsonb);
    END IF;
END
$$;
