-- Citus (distributed PostgreSQL): the tables pg_mmretrieval creates for a collection follow
-- the source table's distribution.  The functions here are the callees of small hooks in
-- 024-column-privileges.sql, 026-sync.sql and 034-catalog.sql (this file comes before them:
-- nothing calls a function defined in a later file).  Without Citus every one of them is a no-op
-- (mmr._citus_kind returns NULL).  docs/operations.md, "Citus", says why the design is this one.

-- How Citus manages a table: NULL (not a Citus table, or no Citus), 'distributed' (hash
-- distributed, or single-shard), 'reference', 'local' (a Citus local table on the coordinator)
-- or 'unsupported' (append/range distribution).
CREATE OR REPLACE FUNCTION mmr._citus_kind(p_table regclass)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_method text;
    v_repmodel text;
    v_colocation int;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT partmethod::text, repmodel::text, colocationid FROM pg_catalog.pg_dist_partition '
            'WHERE logicalrelid = $1'
       INTO v_method, v_repmodel, v_colocation USING p_table;
    RETURN CASE WHEN v_method IS NULL THEN NULL
                WHEN v_method = 'h' THEN 'distributed'
                WHEN v_method = 'n' AND v_repmodel = 't' THEN 'reference'
                WHEN v_method = 'n' AND v_colocation <> 0 THEN 'distributed'
                WHEN v_method = 'n' THEN 'local'
                ELSE 'unsupported' END;
END
$$;

-- The distribution column of a distributed table (NULL: none, e.g. a single-shard table).
CREATE OR REPLACE FUNCTION mmr._citus_dist_column(p_table regclass)
RETURNS name
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_col name;
BEGIN
    EXECUTE 'SELECT pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)::name '
            'FROM pg_catalog.pg_dist_partition p '
            'WHERE p.logicalrelid = $1 AND p.partkey IS NOT NULL'
       INTO v_col USING p_table;
    RETURN v_col;
END
$$;

-- A reference table has a copy (placement) on the coordinator (group 0).
CREATE OR REPLACE FUNCTION mmr._citus_coordinator_placement(p_table regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_found boolean;
BEGIN
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_shard s '
            'JOIN pg_catalog.pg_dist_placement p ON p.shardid = s.shardid '
            'WHERE s.logicalrelid = $1 AND p.groupid = 0)'
       INTO v_found USING p_table;
    RETURN v_found;
END
$$;

-- Refuse, before anything is created, a source table pg_mmretrieval cannot follow on Citus;
-- and for a Citus table, run the rest of the transaction's multi-shard commands over one
-- connection per node (Citus cannot otherwise create or replace the sync trigger function, a
-- distributed object, after the parallel DDL of create_distributed_table).
CREATE OR REPLACE FUNCTION mmr._citus_check_source(p_source regclass, p_keys name[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind text := mmr._citus_kind(p_source);
    v_col name;
BEGIN
    IF v_kind = 'unsupported' THEN
        RAISE EXCEPTION '% is an append- or range-distributed Citus table, which pg_mmretrieval '
                        'does not support', p_source
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Distribute the table by hash (create_distributed_table), or make it a '
                         'reference table.';
    END IF;
    -- The queue of a reference table is written by the trigger on the coordinator's copy only
    -- (docs/operations.md, "Citus"): without such a copy nothing would be queued.
    IF v_kind = 'reference' THEN
      IF NOT mmr._citus_coordinator_placement(p_source) THEN
        RAISE EXCEPTION 'the Citus reference table % has no copy on the coordinator', p_source
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Add the coordinator to the cluster''s metadata (SELECT '
                         'citus_set_coordinator_host(...)), which gives it a copy of every '
                         'reference table, then create the collection again.';
      END IF;
    END IF;
    IF v_kind = 'distributed' THEN
        v_col := mmr._citus_dist_column(p_source);
        IF v_col IS NOT NULL AND NOT v_col = ANY (p_keys) THEN
            RAISE EXCEPTION 'the distribution column % of % is not part of its primary key',
                            quote_ident(v_col), p_source
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'pg_mmretrieval co-locates its queue and embedding tables with the '
                             'source on the distribution column, which must be a key column.';
        END IF;
    END IF;
    IF v_kind IS NOT NULL AND EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = p_source
                                                                 AND k.relrowsecurity) THEN
        RAISE EXCEPTION '% has row-level security, which pg_mmretrieval cannot mirror on a Citus '
                        'table', p_source
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Citus refuses policies with sub-queries on distributed tables, so an '
                         'embedding row cannot check that its source row is visible: disable row '
                         'level security on the source, or keep the collection on one node.';
    END IF;
    PERFORM mmr._citus_sequential(p_source);
END
$$;

-- On a Citus table: the rest of the transaction's multi-shard commands over one connection per
-- node (Citus cannot create, replace or drop the sync trigger function, a distributed object,
-- after parallel commands in the same transaction).
CREATE OR REPLACE FUNCTION mmr._citus_sequential(p_source regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF mmr._citus_kind(p_source) IS NOT NULL THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
END
$$;

-- Make p_table (a queue or embedding table just created, still empty or not) a Citus table
-- like p_source: distributed and co-located on the same column, a reference table (the queue of
-- a reference table: a Citus local table, its one copy on the coordinator), or a Citus local
-- table.  A queue's primary key (mmr_id) gets the distribution column added, as Citus
-- requires of every unique constraint of a distributed table.
CREATE OR REPLACE FUNCTION mmr._citus_follow(p_source regclass, p_table regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind text := mmr._citus_kind(p_source);
    v_col name;
    v_pkey name;
    v_pkcols name[];
BEGIN
    IF v_kind IS NULL THEN
        RETURN;
    ELSIF v_kind = 'distributed' THEN
        v_col := mmr._citus_dist_column(p_source);
        SELECT k.conname, array_agg(a.attname) INTO v_pkey, v_pkcols
          FROM pg_constraint k
         CROSS JOIN LATERAL unnest(k.conkey) AS u(attnum)
          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
         WHERE k.conrelid = p_table AND k.contype = 'p'
         GROUP BY k.conname;
        IF v_col IS NOT NULL AND v_pkey IS NOT NULL AND NOT v_col = ANY (v_pkcols) THEN
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', p_table, v_pkey);
            EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (%s, %I)', p_table,
                           (SELECT string_agg(quote_ident(c), ', ') FROM unnest(v_pkcols) c), v_col);
        END IF;
        EXECUTE 'SELECT pg_catalog.create_distributed_table($1, $2, colocate_with => $3)'
          USING p_table, v_col::text, p_source::text;
    ELSIF v_kind = 'reference' AND EXISTS (SELECT 1 FROM pg_attribute a
                                            WHERE a.attrelid = p_table
                                              AND a.attname = 'mmr_claimed_until'
                                              AND NOT a.attisdropped) THEN
        -- the queue of a reference table: one copy, on the coordinator (a Citus local table)
        EXECUTE 'SELECT pg_catalog.citus_add_local_table_to_metadata($1)' USING p_table;
    ELSIF v_kind = 'reference' THEN
        EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING p_table;
    ELSIF v_kind = 'local' THEN
        EXECUTE 'SELECT pg_catalog.citus_add_local_table_to_metadata($1)' USING p_table;
    END IF;
END
$$;

-- Around the CREATE TRIGGER of a collection on a Citus table: Citus refuses triggers on
-- distributed and reference tables unless citus.enable_unsafe_triggers is on; it is set for this
-- DDL only (p_on true: set, returns the previous value; p_on false: restore p_previous).
CREATE OR REPLACE FUNCTION mmr._citus_triggers(p_source regclass, p_on boolean,
                                               p_previous text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_previous text;
BEGIN
    IF mmr._citus_kind(p_source) IS NULL THEN
        RETURN NULL;
    END IF;
    IF p_on THEN
        v_previous := current_setting('citus.enable_unsafe_triggers', true);
        PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
        RETURN coalesce(v_previous, 'off');
    END IF;
    PERFORM set_config('citus.enable_unsafe_triggers', coalesce(p_previous, 'off'), true);
    RETURN p_previous;
END
$$;

-- The row-level security of an embedding table of a Citus table (the hook in
-- mmr._secure_embeddings, 086-column-privileges.sql): Citus refuses sub-queries in policies of
-- distributed tables, so the policy is the column-privilege check alone, evaluated on the shards
-- (a role without the column privilege sees no embeddings instead of SQLSTATE 42501); the row
-- visibility part is not needed because mmr._citus_check_source refuses sources with row-level
-- security.
CREATE OR REPLACE FUNCTION mmr._citus_secure_embeddings(p_table regclass, p_check text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS source_visible ON %s', p_table);
    EXECUTE format('CREATE POLICY source_visible ON %s FOR SELECT USING (%s)', p_table, p_check);
    EXECUTE format('GRANT SELECT ON %s TO PUBLIC', p_table);
END
$$;

-- The start of the sync trigger function of a collection on a Citus table, for the generator
-- mmr._rebuild_sync (026-sync.sql), which writes every other statement itself.  On Citus the
-- triggers fire on the shards, on the node holding each shard, where the statement's transition
-- tables exist but cannot be used in a distributed query ("executor could not find named
-- tuplestore").  So every statement of the body runs against this node's shards (or copies) of
-- the queue and embedding tables p_tables (SQL names: the queue first, then the embedding
-- table of each space by id): this prologue looks their names up once per statement into
-- v_shards, in the order of p_tables, from pg_dist_shard (for a distributed or Citus local
-- source: the shards with the hash range of the firing shard), and the generator runs each
-- statement with them substituted (EXECUTE format(..., VARIADIC v_shards)).  On a reference
-- table v_coordinator also says whether this is the coordinator's copy, the only one that
-- writes the queue.  Nothing here comes from the caller: p_source and p_tables are the
-- catalog's (mmr._collection, mmr._space).  Returns the declarations and the statements.
CREATE OR REPLACE FUNCTION mmr._citus_sync_prologue(p_source regclass, p_kind text,
                                                    p_tables text[],
                                                    OUT declarations text, OUT statements text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_list text := array_to_string(p_tables, ', ');
BEGIN
    IF p_kind = 'reference' THEN
        -- A reference table's triggers fire on every node's copy of it, in one (two-phase)
        -- transaction.  Each copy deletes from its own node's copy of the embedding tables (all
        -- copies see the same rows, so they stay equal); only the coordinator's copy writes the
        -- queue, a Citus local table on the coordinator, so each change is queued once.
        declarations := E'    v_shards text[];\n'
                         '    v_coordinator boolean;\n';
        statements := format(
            E'    -- TRUNCATE: acted on once, where it fires on the coordinator''s table itself\n'
            '    IF TG_OP = ''TRUNCATE'' AND TG_RELID <> %L::pg_catalog.regclass THEN\n'
            '        RETURN NULL;\n'
            '    END IF;\n'
            '    -- Citus: this node''s copies of %s (the queue only on the coordinator)\n'
            '    SELECT array_agg(pg_catalog.shard_name(t.rel, s.shardid) ORDER BY t.ord) INTO v_shards\n'
            '      FROM unnest(%L::pg_catalog.regclass[]) WITH ORDINALITY AS t(rel, ord)\n'
            '      JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = t.rel;\n'
            '    SELECT g.groupid = 0 INTO v_coordinator FROM pg_catalog.pg_dist_local_group g;\n'
            '    IF TG_OP <> ''TRUNCATE'' AND coalesce(array_length(v_shards, 1), 0) <> %s THEN\n'
            '        RAISE EXCEPTION ''pg_mmretrieval: the tables %% of reference table %% are not Citus tables'', %L, TG_TABLE_NAME\n'
            '            USING ERRCODE = ''object_not_in_prerequisite_state'',\n'
            '                  HINT = ''The queue must stay a Citus local table and the embedding tables reference tables.'';\n'
            '    END IF;\n',
            p_source::text, v_list, p_tables, array_length(p_tables, 1), v_list);
        RETURN;
    END IF;
    declarations := E'    v_shards text[];\n';
    statements := format(
        E'    -- Citus: the co-located shards of %s on this node\n'
        '    SELECT array_agg(pg_catalog.shard_name(t.rel, s2.shardid) ORDER BY t.ord) INTO v_shards\n'
        '      FROM unnest(%L::pg_catalog.regclass[]) WITH ORDINALITY AS t(rel, ord)\n'
        '      JOIN pg_catalog.pg_dist_shard s1\n'
        '        ON s1.shardid = substring(TG_TABLE_NAME from ''_([0-9]+)$'')::bigint\n'
        '       AND s1.logicalrelid = %L::pg_catalog.regclass\n'
        '      JOIN pg_catalog.pg_dist_shard s2 ON s2.logicalrelid = t.rel\n'
        '       AND s2.shardminvalue IS NOT DISTINCT FROM s1.shardminvalue;\n'
        '    -- (TRUNCATE fires on the coordinator table itself and runs as on one node)\n'
        '    IF TG_OP <> ''TRUNCATE'' AND coalesce(array_length(v_shards, 1), 0) <> %s THEN\n'
        '        RAISE EXCEPTION ''pg_mmretrieval: no co-located shards of %% for shard %%'', %L, TG_TABLE_NAME\n'
        '            USING ERRCODE = ''object_not_in_prerequisite_state'',\n'
        '                  HINT = ''The queue and embedding tables must stay co-located with the source.'';\n'
        '    END IF;\n',
        v_list, p_tables, p_source::text, array_length(p_tables, 1), v_list);
END
$$;

-- Replaced by mmr._citus_sync_prologue (the generator in 026-sync.sql writes the statements).
DROP FUNCTION IF EXISTS mmr._citus_sync_function(mmr._collection, text);

-- Why the native search functions cannot be used in this database because of Citus (NULL: no
-- Citus).  The hook in 089-native.sql binds mmr.search and mmr.composed_search to their PL/pgSQL
-- versions when Citus is installed: the native ones run prepared statements with parameters, for
-- which Citus cannot build a distributed plan ("could not create distributed plan"), while
-- PL/pgSQL's EXECUTE ... USING gives Citus the values.
CREATE OR REPLACE FUNCTION mmr._citus_native_unavailable()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'Citus is installed in this database, and it cannot distribute the prepared statements '
           'of the native functions' FROM pg_catalog.pg_extension WHERE extname = 'citus'
$$;
