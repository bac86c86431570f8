-- Privileges, applied last on every upgrade.  PUBLIC may read the catalog and search (search
-- runs with the caller's rights, so grants and row-level security of the user's tables apply);
-- administrative functions stay with the installing role and the roles it grants them to.
GRANT USAGE ON SCHEMA mmr TO PUBLIC;
GRANT SELECT ON mmr._collection, mmr._space, mmr.collections, mmr.spaces TO PUBLIC;
DO $$
DECLARE
    f regprocedure;
    v_path text := current_setting('search_path');  -- Citus hook: see below
BEGIN
    -- Type names in the REVOKE and GRANTs below are schema-qualified (Citus replays each GRANT on its
    -- worker nodes, where the session's search_path does not apply): docs/operations.md, Citus.
    PERFORM set_config('search_path', 'pg_catalog', true);
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA mmr FROM PUBLIC;
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'mmr'::regnamespace
                AND NOT p.prosecdef
                AND p.proname NOT IN ('create_collection', 'add_space', 'switch_space',
                                      'drop_space', 'drop_collection', 'refresh_view',
                                      'put_embeddings', 'put_embedding', '_rebuild_sync',
                                      '_sync_statements',
                                      '_create_triggers', '_rebuild_view', '_drop_space_row',
                                      -- retrieval (issue 5): administrative
                                      'set_projection', 'create_text_index', 'drop_text_index',
                                      'register_reranker', 'unregister_reranker',
                                      'add_multivector_space', 'drop_multivector_space',
                                      'put_multivectors', '_multivector_dropped', '_space_statements_trigger',
                                      '_bind_search', '_bind_function', '_native_unavailable',
                                      '_native_abi',
                                      -- worker (issue 4): administrative
                                      'check', 'repair', 'backfill', 'retry_failed',
                                      'purge_failed', 'status',
                                      -- schema changes (issue 12, items 7 and 9): administrative
                                      '_ddl_guard', '_follow_columns', '_follow_view',
                                      '_guard_column', '_guard_type',
                                      '_collection_attnums_trigger', '_space_attnums_trigger',
                                      -- column privileges (issue 12): administrative
                                      '_secure_embeddings',
                                      -- worker role (issue 12, item 1): administrative
                                      'grant_worker', '_grant_worker_on', '_revoke_worker_on',
                                      -- encoding inside the server (issue 13): administrative
                                      'set_python_path', '_plpython_unavailable',
                                      -- bulk fills (issue 17): administrative
                                      'begin_bulk_fill', 'finish_bulk_fill',
                                      '_begin_bulk_fill', '_finish_bulk_fill',
                                      -- encoder catalog (issue 16): administrative
                                      'declare_encoder', 'unservable_spaces',
                                      -- Citus (issue 15): administrative (019-citus.sql)
                                      '_citus_check_source', '_citus_follow', '_citus_triggers',
                                      '_citus_sync_prologue', '_citus_secure_embeddings',
                                      '_citus_sequential')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
    PERFORM set_config('search_path', v_path, true);
END
$$;
