-- 008-00-filtered-plan (issue 18, the fast path of filtered search): two fields of the plan
-- type mmr._exec_plan (revision 0007), added once; the file runs twice without error (each
-- field is added only when missing).
--   iterative  hnsw.iterative_scan for the call (NULL: the function's own setting, off), as
--              ef_search is hnsw.ef_search: a filtered plan scans with pgvector's iterative scan
--              (relaxed_order for the filter's index plan, strict_order for its exact plan)
--   planning   how an executor plans the statement: NULL, a plan kept for the session and
--              built under the default index settings (the unfiltered fast paths, as in 0007);
--              'generic', a plan kept for the session and built in the HNSW shape (only the
--              HNSW-ordered index scan, never a sort of the rows a btree finds: the filter's
--              index plan); 'custom', planned on every call with its values (the filter's exact
--              plan: the rows that pass are read by the user's index for those values).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = 'mmr._exec_plan'::regclass AND attname = 'iterative'
                      AND NOT attisdropped) THEN
        ALTER TYPE mmr._exec_plan ADD ATTRIBUTE iterative text;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = 'mmr._exec_plan'::regclass AND attname = 'planning'
                      AND NOT attisdropped) THEN
        ALTER TYPE mmr._exec_plan ADD ATTRIBUTE planning text;
    END IF;
END
$$;
