-- Filtered search that picks its plan (issue 18).
--
-- A filter that keeps few rows is best served by PostgreSQL's ordinary plan: read the rows that
-- pass through the user's index on the filtered column and score them exactly (recall 1.0).  A
-- filter that keeps many rows is best served by the HNSW index with pgvector's iterative scan.
-- One decision, mmr._filter_plan, is taken per call (and per source table and filter) and used
-- by every statement that accepts a filter: mmr.search, every composed method, hybrid legs,
-- reranking candidates, Rocchio feedback, multi-vector search.  This is the approach of Qdrant's
-- query planner (estimate the filter's cardinality; below a threshold, exact scoring over the
-- payload index) and of pgvector's README ("Filtering": exact search or a partial index for
-- selective filters; iterative index scans otherwise).
--
-- The estimate: PostgreSQL's own planner estimate of `SELECT 1 FROM source s WHERE <filter>`
-- (EXPLAIN, nothing executed; the table's statistics, the filter's values and the caller's
-- row-level security).  When it is below the threshold but within a factor of 4 of it, the
-- passing rows are counted, capped at threshold + 1 (through the user's index when there is
-- one), so an estimate a little off does not send a larger filter to the exact plan; an
-- estimate far off (statistics never gathered) can, and ANALYZE (autovacuum) fixes it.  The
-- threshold is the setting mmr.exact_filter_rows (default below; SET LOCAL it for one
-- transaction, 0 to always use the index).

-- The elements of a jsonb array as text (NULL elements as NULL), for a filter's in / not_in.
CREATE OR REPLACE FUNCTION mmr._jsonb_texts(p jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT pg_catalog.jsonb_array_elements_text(p))
$$;

-- Translate a jsonb filter into a WHERE clause over alias s (the source table).
--   {"col": value}                       col = value      (null: col IS NULL)
--   {"col": {"<": 5, ">=": 1}}            comparisons: = != <> < <= > >=
--   {"col": {"in": [..]}}, {"not_in": [..]}, {"is_null": true|false}
-- Values stay in the jsonb parameter ($3) and are cast to the column's type: no SQL is ever
-- built from them.  With p_once each value is a scalar subquery, read from the parameter once
-- per execution (an InitPlan) instead of once per row: for a plan kept generic (the filtered
-- fast path's index plan), where the value is not known when planning; measured 0.3 ms of a
-- 1.3 ms search at 50 % selectivity.  Not for a statement planned with its values (the
-- subquery hides the value from the planner's estimates, mmr._filter_plan).
DROP FUNCTION IF EXISTS mmr._filter_sql(mmr._collection, jsonb, text);

CREATE OR REPLACE FUNCTION mmr._filter_sql(c mmr._collection, p_filter jsonb, p_param text,
                                           p_once boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col text;
    val jsonb;
    op text;
    arg jsonb;
    typ text;
    parts text[] := '{}';
    vo text := CASE WHEN p_once THEN '(SELECT ' ELSE '' END;  -- around each value
    vc text := CASE WHEN p_once THEN ')' ELSE '' END;
BEGIN
    IF p_filter IS NULL OR p_filter = '{}'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_filter) <> 'object' THEN
        RAISE EXCEPTION 'filter must be a JSON object of column conditions, not %', jsonb_typeof(p_filter)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"price": {"<": 50}, "category": "shoes"}.';
    END IF;
    FOR col, val IN SELECT * FROM jsonb_each(p_filter) LOOP
        -- Values are cast to the column's base type, never to a domain: a domain's CHECK is
        -- the table owner's code and must not run as whoever searches (issue 12, item 1).
        SELECT CASE WHEN t.typtype = 'd'
                    THEN format_type(mmr._base_type(a.atttypid), t.typtypmod)
                    ELSE format_type(a.atttypid, a.atttypmod) END
          INTO typ FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = c.source AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
        IF typ IS NULL THEN
            RAISE EXCEPTION 'filter names column %, which table % does not have', quote_ident(col),
                            c.source
                USING ERRCODE = 'undefined_column';
        END IF;
        IF jsonb_typeof(val) = 'null' THEN
            parts := parts || format('s.%I IS NULL', col);
        ELSIF jsonb_typeof(val) = 'array' THEN
            RAISE EXCEPTION 'filter %: a list where a single value is expected', col
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('To match any of several values write {%s: {"in": %s}}; '
                                    'for one value, {%s: value}.', to_jsonb(col), val,
                                    to_jsonb(col));
        ELSIF jsonb_typeof(val) <> 'object' THEN
            parts := parts || format('s.%I = %s(%s -> %L ->> 0)::%s%s', col, vo, p_param, col,
                                     typ, vc);
        ELSE
            FOR op, arg IN SELECT * FROM jsonb_each(val) LOOP
                IF op IN ('=', '!=', '<>', '<', '<=', '>', '>=') THEN
                    IF jsonb_typeof(arg) NOT IN ('string', 'number', 'boolean') THEN
                        RAISE EXCEPTION 'filter %: operator % needs a scalar value', col, op
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    parts := parts || format('s.%I %s %s(%s -> %L ->> %L)::%s%s', col, op, vo,
                                             p_param, col, op, typ, vc);
                ELSIF op IN ('in', 'not_in') THEN
                    IF jsonb_typeof(arg) <> 'array' THEN
                        RAISE EXCEPTION 'filter %: operator % needs an array', col, op
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    -- mmr._jsonb_texts is IMMUTABLE: with the filter known, the planner folds
                    -- the list into a constant and estimates its rows (mmr._filter_plan)
                    -- (hoisted, the subquery is cast: `= ANY ((SELECT a))` alone would compare
                    -- with each row of the subquery, not each element of the array)
                    parts := parts || format(
                        CASE op WHEN 'in' THEN 's.%I = ANY (%smmr._jsonb_texts(%s -> %L -> %L)::%s[]%s)'
                                ELSE 's.%I <> ALL (%smmr._jsonb_texts(%s -> %L -> %L)::%s[]%s)' END,
                        col, vo, p_param, col, op, typ,
                        CASE WHEN p_once THEN format(')::%s[]', typ) ELSE '' END);
                ELSIF op = 'is_null' THEN
                    IF jsonb_typeof(arg) <> 'boolean' THEN
                        RAISE EXCEPTION 'filter %: is_null needs true or false', col
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    parts := parts || format(CASE WHEN arg::text = 'true' THEN 's.%I IS NULL'
                                                  ELSE 's.%I IS NOT NULL' END, col);
                ELSE
                    RAISE EXCEPTION 'filter %: unknown operator %', col, quote_literal(op)
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Operators: = != < <= > >= in not_in is_null.';
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    RETURN array_to_string(parts, ' AND ');
END
$$;

-- The default threshold for a source table of p_total rows, measured (docs/retrieval.md,
-- "Filtered search"; bench/filtered.py).  Scoring the passing rows exactly costs about
-- rows x (one heap fetch + one distance); an iterative HNSW scan costs about 1 / selectivity
-- index visits per passing row it returns; the two cross where rows ~ K * sqrt(total rows).
CREATE OR REPLACE FUNCTION mmr._default_exact_filter_rows(p_total float8)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least(1000000, ceil(6 * sqrt(greatest(coalesce(p_total, 0), 10000))))::bigint
$$;

-- The threshold in force: the setting mmr.exact_filter_rows, else the default for the table.
CREATE OR REPLACE FUNCTION mmr._exact_filter_rows(p_total float8)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := nullif(btrim(current_setting('mmr.exact_filter_rows', true)), '');
    n float8;
BEGIN
    IF v IS NULL THEN
        RETURN mmr._default_exact_filter_rows(p_total);
    END IF;
    BEGIN
        n := v::float8;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'mmr.exact_filter_rows must be a number of rows, not %', quote_literal(v)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'SET mmr.exact_filter_rows = 5000 (0: always the HNSW index); '
                         'RESET mmr.exact_filter_rows for the default.';
    END;
    RETURN mmr._check_limit('exact_filter_rows', n, 'mmr.exact_filter_rows');
END
$$;

-- ef_search of the index plan under a filter keeping about p_rows of p_total rows:
-- clamp(20 * sqrt(total / rows), 100, 200); 40 (pgvector's default, as unfiltered) when every
-- row passes.  Calibrated on ef ladders of the bare relaxed-order plan (bench/filtered.py
-- --ladder-only, 100k rows x 384-d, 2026-12-03: three HNSW builds with three 100-query samples,
-- two builds with a 300-query sample):
-- * recall@10 hardly depends on the selectivity from the threshold (2 %) to 100 %: the relaxed
--   iterative scan keeps about the unfiltered recall, so the floor is what buys it.  It varies a
--   lot with the build and the query sample (a few queries of low recall weigh on a mean of 100):
--   at 50 %, ef 40 gave 0.897-0.961, ef 60 0.943-0.974, ef 80 0.944-0.978 (0.940 at 20 %),
--   ef 100 0.963-0.982 (worst sample 0.958 at 20 %): 100 is the lowest ladder step that kept
--   0.95 with a margin on every sample measured.  The floor is where ef costs time: at 50 % ef 60/80/100/200 took 1.16/1.24/1.40/2.03x the time of ef 40.
-- * under selective filters a larger ef costs nothing (at 2 % ef 100-200 ran no slower than 40:
--   fewer rounds of the iterative scan) and adds a little recall, so the sqrt term raises it
--   there: 200 at 1 % and below, 142 at 2 %, 116 at 3 %.
CREATE OR REPLACE FUNCTION mmr._filter_ef_search(p_rows float8, p_total float8)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_total IS NULL OR p_total <= 0 OR p_rows IS NULL OR p_rows >= p_total
                THEN 40
                ELSE least(200, greatest(100, ceil(20 * sqrt(p_total / greatest(p_rows, 1)))))::int
           END
$$;

-- The plan of a filtered search over collection c: exact (score the passing rows) or index
-- (HNSW with an iterative scan), with the figures it was chosen from.
--
-- The figures are cached for the session in the setting mmr._filter_plan: a JSON array of at
-- most 8 entries, newest first, each keyed by md5(role, source table, the threshold setting,
-- filter) and valid while the source table's pg_class.reltuples and relpages are those it was
-- estimated under.  Those change when the table's statistics do (ANALYZE, VACUUM, autovacuum,
-- CREATE INDEX), so a filter is estimated again exactly when PostgreSQL's own estimate may have
-- moved; between, an autocommit search skips the EXPLAIN (and the capped count) it would
-- otherwise run per call.  The statements of one call (legs, candidates, the scan settings)
-- share one decision through the same cache.  A setting is the caller's to set: an entry holds
-- figures only, never SQL, and a forged one can only choose between two correct plans of the
-- caller's own query (tests/test_filtered_plan.py).  A transaction that rolls back takes its
-- entries with it (set_config is transactional).
CREATE OR REPLACE FUNCTION mmr._filter_plan(c mmr._collection, p_filter jsonb,
                                            OUT exact boolean, OUT estimated_rows float8,
                                            OUT counted_rows bigint, OUT total_rows float8,
                                            OUT threshold bigint, OUT ef_search int,
                                            OUT full_scan boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    where_sql text;
    cache_key text;
    cache jsonb;
    hit jsonb;
    tuples float4;
    pages int;
    plan jsonb;
BEGIN
    IF p_filter IS NULL OR p_filter = '{}'::jsonb THEN
        exact := false;
        threshold := mmr._exact_filter_rows(NULL);
        RETURN;
    END IF;
    -- (a setting once SET LOCAL reads '' afterwards, never NULL again: the same default)
    cache_key := md5(concat_ws(':', current_user, c.source::oid,
                               nullif(current_setting('mmr.exact_filter_rows', true), ''),
                               p_filter::text));
    SELECT cl.reltuples, cl.relpages INTO tuples, pages FROM pg_class cl WHERE cl.oid = c.source;
    cache := nullif(current_setting('mmr._filter_plan', true), '')::jsonb;
    IF jsonb_typeof(cache) = 'array' THEN
        SELECT e INTO hit FROM jsonb_array_elements(cache) e
         WHERE e ->> 'key' = cache_key AND (e ->> 'reltuples')::float4 = tuples
           AND (e ->> 'relpages')::int = pages
         LIMIT 1;
    ELSE
        cache := '[]';
    END IF;
    IF hit IS NOT NULL THEN
        exact := (hit ->> 'exact')::boolean;
        estimated_rows := (hit ->> 'estimated_rows')::float8;
        counted_rows := (hit ->> 'counted_rows')::bigint;
        total_rows := (hit ->> 'total_rows')::float8;
        -- figures only: ef_search within pgvector's bounds whatever the setting says (NULL
        -- for the exact plan: least() would make it 1000)
        ef_search := CASE WHEN hit ->> 'ef_search' IS NOT NULL
                          THEN least(1000, (hit ->> 'ef_search')::int) END;
        IF ef_search < 1 THEN
            ef_search := NULL;
        END IF;
        threshold := (hit ->> 'threshold')::bigint;
        full_scan := (hit ->> 'full_scan')::boolean;
        RETURN;
    END IF;
    where_sql := mmr._filter_sql(c, p_filter, '$3');
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM %s s WHERE %s', c.source, where_sql)
       INTO plan USING NULL::int, NULL::int, p_filter;
    estimated_rows := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::float8;
    -- no index serves the filter: finding its rows reads the whole table
    full_scan := jsonb_path_exists(plan, 'strict $.**."Node Type" ? (@ == "Seq Scan")');
    total_rows := greatest(tuples, 0);
    threshold := mmr._exact_filter_rows(total_rows);
    IF estimated_rows < threshold AND estimated_rows * 4 >= threshold THEN
        -- near the threshold: count, capped (the estimate may be stale)
        EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s s WHERE %s LIMIT $1) x',
                       c.source, where_sql)
           INTO counted_rows USING threshold + 1, NULL::int, p_filter;
    END IF;
    exact := coalesce(counted_rows, estimated_rows) < threshold;
    ef_search := CASE WHEN exact THEN NULL
                      ELSE mmr._filter_ef_search(coalesce(counted_rows, estimated_rows),
                                                 total_rows) END;
    -- newest first; an entry of the same key (estimated under other statistics) is replaced
    PERFORM set_config('mmr._filter_plan',
                       (jsonb_build_array(jsonb_build_object(
                            'key', cache_key, 'reltuples', tuples, 'relpages', pages,
                            'exact', exact, 'estimated_rows', estimated_rows,
                            'counted_rows', counted_rows, 'total_rows', total_rows,
                            'ef_search', ef_search, 'threshold', threshold,
                            'full_scan', full_scan))
                        || coalesce((SELECT jsonb_agg(x.e ORDER BY x.n)
                                       FROM (SELECT e, n
                                               FROM jsonb_array_elements(cache)
                                                    WITH ORDINALITY y(e, n)
                                              WHERE e ->> 'key' IS DISTINCT FROM cache_key
                                              ORDER BY n LIMIT 7) x), '[]'))::text,
                       false);
END
$$;

-- The FROM clause (and WHERE) of a statement over space s's embeddings (alias e) under a filter,
-- ending where ORDER BY <distance of e.embedding> LIMIT n follows:
--   no filter      <embeddings> e                                (the HNSW shape)
--   index plan     <embeddings> e JOIN <source> s ON key WHERE <filter>
--   exact plan     (SELECT keys, embedding FROM <embeddings> e JOIN <source> s ON key
--                   WHERE <filter> OFFSET 0) e
-- OFFSET 0 fences the exact plan's subquery: PostgreSQL reads the passing rows with the best
-- plan it has for them (the user's index on the filtered column, then the embedding table's
-- primary key) and sorts them by distance; the HNSW index cannot serve a fenced subquery.
-- The filter is always the statement's parameter $3; with p_once the index plan reads its
-- values once per execution (mmr._filter_sql: for a plan kept generic).
DROP FUNCTION IF EXISTS mmr._filtered_from(mmr._collection, mmr._space, jsonb);

CREATE OR REPLACE FUNCTION mmr._filtered_from(c mmr._collection, s mmr._space, p_filter jsonb,
                                              p_once boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    exact boolean;
    where_sql text;
BEGIN
    IF p_filter IS NULL OR p_filter = '{}'::jsonb THEN
        RETURN format('%s e', s.embedding_table);
    END IF;
    exact := (mmr._filter_plan(c, p_filter)).exact;  -- raises a bad filter's error (_filter_sql)
    where_sql := mmr._filter_sql(c, p_filter, '$3', p_once AND NOT exact);
    IF exact THEN
        RETURN format('(SELECT %s, e.embedding FROM %s e JOIN %s s ON %s WHERE %s OFFSET 0) e',
                      mmr._key_list(c, 'e'), s.embedding_table, c.source,
                      mmr._key_join(c, 's', 'e'), where_sql);
    END IF;
    RETURN format('%s e JOIN %s s ON %s WHERE %s', s.embedding_table, c.source,
                  mmr._key_join(c, 's', 'e'), where_sql);
END
$$;

-- The columns a filter names, with the first index of the source table that leads with each
-- (NULL: none).
CREATE OR REPLACE FUNCTION mmr._filter_columns(c mmr._collection, p_filter jsonb)
RETURNS TABLE (column_name text, index_name regclass)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.col,
           (SELECT i.indexrelid::regclass FROM pg_index i JOIN pg_attribute a
                ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = c.source AND a.attname = f.col AND i.indpred IS NULL
               AND i.indisvalid
             ORDER BY i.indexrelid LIMIT 1)
      FROM jsonb_object_keys(CASE WHEN jsonb_typeof(p_filter) = 'object' THEN p_filter
                                  ELSE '{}'::jsonb END) f(col)
$$;

-- Advice on a filter: for each column it names, the first index leading with it, the plan the
-- filter gets, and what to do when that costs time: the exact plan finds the passing rows by
-- reading the whole source table because no index serves the filter.  Runs nothing but the
-- planner's estimate (and a capped count near the threshold).
CREATE OR REPLACE FUNCTION mmr.filter_advice(collection text, filter jsonb)
RETURNS TABLE (column_name text, index_name regclass, plan text, estimated_rows float8,
               threshold bigint, advice text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    fp record;
    col record;
BEGIN
    IF filter IS NULL OR jsonb_typeof(filter) <> 'object' OR filter = '{}'::jsonb THEN
        RAISE EXCEPTION 'filter_advice needs the filter your searches pass'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: SELECT * FROM mmr.filter_advice(''products'', '
                         '''{"category": 7}'').';
    END IF;
    SELECT * INTO fp FROM mmr._filter_plan(c, filter);
    FOR col IN SELECT * FROM mmr._filter_columns(c, filter) LOOP
        column_name := col.column_name;
        index_name := col.index_name;
        plan := CASE WHEN fp.exact THEN 'exact' ELSE 'index' END;
        estimated_rows := coalesce(fp.counted_rows, fp.estimated_rows);
        threshold := fp.threshold;
        advice := CASE WHEN col.index_name IS NULL AND fp.exact AND fp.full_scan THEN
            format('column %s has no index: each search reads all of %s to find the %s rows '
                   'that pass; CREATE INDEX ON %s (%I)', quote_ident(col.column_name), c.source,
                   estimated_rows, c.source, col.column_name) END;
        RETURN NEXT;
    END LOOP;
END
$$;
