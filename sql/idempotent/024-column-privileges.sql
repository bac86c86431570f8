-- Column privileges (issue 12, items 3 and 8).
--
-- An embedding is data derived from its source column: a role may read it (directly, through the
-- collection's view, or in any search) only when it may read that column, and only for rows it
-- may see.  The row-level security policy `source_visible` of every embedding table therefore
-- checks two things:
--   1. the column privilege: `has_column_privilege(source, column, 'SELECT')` (spaces without a
--      source column, i.e. external vectors of unknown origin, and multi-vector spaces: SELECT on
--      every column of the source table).  The check is an uncorrelated scalar sub-select, so the
--      planner makes it an InitPlan evaluated once per query (a one-time filter), not per row.
--      When it fails the query raises SQLSTATE 42501 naming the column and the GRANT it needs,
--      instead of returning nothing;
--   2. the row's visibility: the source row with the same key is visible to the caller (the
--      source table's grants and row-level security policies apply).
-- BASIC projections (mmr._projection) aggregate a whole space: a row of it is visible only to
-- roles that may read the space's column and see every row of the source table (no row-level
-- security applies to them there).

-- True when the current role may read the data a vector derived from p_column of p_source was
-- computed from (NULL column: every column of the table).
CREATE OR REPLACE FUNCTION mmr._may_read_column(p_source regclass, p_column name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
           WHEN p_column IS NOT NULL
           THEN coalesce(pg_catalog.has_column_privilege(p_source, p_column::text, 'SELECT'), false)
           ELSE pg_catalog.has_table_privilege(p_source, 'SELECT')
                OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid = p_source AND a.attnum > 0 AND NOT a.attisdropped
                                  AND NOT pg_catalog.has_column_privilege(p_source, a.attnum,
                                                                          'SELECT'))
           END
$$;

-- The column-privilege error of an embedding table (p_table: mmr._emb_<id> or mmr._mv_<id>).
-- Returns true when the current role may read it after all (the policy's fast check covers the
-- common case only), raises SQLSTATE 42501 otherwise.  VOLATILE: never pre-evaluated.
CREATE OR REPLACE FUNCTION mmr._embeddings_readable(p_table regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_source regclass;
    v_column name;
    v_what text;
BEGIN
    SELECT c.source, s.source_column,
           format('space %s of collection %s', quote_literal(s.name), quote_literal(c.name))
      INTO v_source, v_column, v_what
      FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id
     WHERE s.embedding_table = p_table;
    IF NOT FOUND THEN
        SELECT c.source, NULL::name,
               format('multi-vector space %s of collection %s', quote_literal(m.name),
                      quote_literal(c.name))
          INTO v_source, v_column, v_what
          FROM mmr._multivector m JOIN mmr._collection c ON c.id = m.collection_id
         WHERE m.embedding_table = p_table;
    END IF;
    IF v_source IS NULL THEN
        -- a table of no space (being created or dropped): readable by its owner only
        RAISE EXCEPTION 'permission denied for embedding table %', p_table
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF mmr._may_read_column(v_source, v_column) THEN
        RETURN true;
    END IF;
    IF v_column IS NOT NULL THEN
        RAISE EXCEPTION 'permission denied for the embeddings of column % of table % (%)',
                        quote_ident(v_column), v_source, v_what
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Embeddings are readable only by roles that may read their source '
                                'column: GRANT SELECT (%I) ON %s TO %I;', v_column, v_source,
                                current_user);
    END IF;
    RAISE EXCEPTION 'permission denied for the embeddings of % (vectors not derived from one '
                    'declared column: reading them needs SELECT on every column of %)',
                    v_what, v_source
        USING ERRCODE = 'insufficient_privilege',
              HINT = format('GRANT SELECT ON %s TO %I;', v_source, current_user);
END
$$;

-- The projection error of a space (BASIC composed search), or nothing when the current role may
-- read its projections.
CREATE OR REPLACE FUNCTION mmr._require_aggregate_read(c mmr._collection, s mmr._space)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT mmr._may_read_column(c.source, s.source_column) THEN
        RAISE EXCEPTION 'permission denied for the projections of space % of collection % '
                        '(they aggregate the embeddings of %)', quote_literal(s.name),
                        quote_literal(c.name),
                        CASE WHEN s.source_column IS NULL THEN format('table %s', c.source)
                             ELSE format('column %I of table %s', s.source_column, c.source) END
            USING ERRCODE = 'insufficient_privilege',
                  HINT = CASE WHEN s.source_column IS NULL
                              THEN format('GRANT SELECT ON %s TO %I;', c.source, current_user)
                              ELSE format('GRANT SELECT (%I) ON %s TO %I;', s.source_column,
                                          c.source, current_user) END;
    END IF;
    IF pg_catalog.row_security_active(c.source) THEN
        RAISE EXCEPTION 'permission denied for the projections of space % of collection %: they '
                        'aggregate every row of %, and row-level security hides some of them '
                        'from role %', quote_literal(s.name), quote_literal(c.name), c.source,
                        quote_ident(current_user)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Use a method that reads rows only (e.g. weighted, pdv, weimocir), or run '
                         'BASIC as a role that sees every row (the table owner, or BYPASSRLS).';
    END IF;
END
$$;

-- A clear error (42501, with the GRANT) when the current role may not read one of p_columns.
CREATE OR REPLACE FUNCTION mmr._require_columns_read(c mmr._collection, p_columns name[],
                                                     p_what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_col name;
BEGIN
    FOREACH v_col IN ARRAY coalesce(p_columns, '{}') LOOP
        IF NOT mmr._may_read_column(c.source, v_col) THEN
            RAISE EXCEPTION 'permission denied for column % of table % (%)', quote_ident(v_col),
                            c.source, p_what
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('GRANT SELECT (%I) ON %s TO %I;', v_col, c.source, current_user);
        END IF;
    END LOOP;
END
$$;

-- Row filter of mmr._projection: the projection's space may be read in full by the current role.
CREATE OR REPLACE FUNCTION mmr._projection_visible(p_space_id int)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT mmr._may_read_column(c.source, s.source_column)
                            AND NOT pg_catalog.row_security_active(c.source)
                       FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id
                      WHERE s.id = p_space_id), false)
$$;

-- (Re)create the row-level security of one embedding table (p_column NULL: no source column).
CREATE OR REPLACE FUNCTION mmr._secure_embeddings(c mmr._collection, p_table regclass,
                                                  p_column name)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fast text;
    v_alias text;
BEGIN
    SELECT k.relname INTO v_alias FROM pg_class k WHERE k.oid = p_table;
    v_fast := CASE WHEN p_column IS NULL
                   THEN format('pg_catalog.has_table_privilege(%L::pg_catalog.regclass, ''SELECT'')',
                               c.source::text)
                   -- by attribute number: the policy stays right when the column is renamed
                   -- (the DDL guard follows renames; dropping the column is refused)
                   ELSE format('pg_catalog.has_column_privilege(%L::pg_catalog.regclass, %s::int2, '
                               '''SELECT'')', c.source::text,
                               (SELECT a.attnum FROM pg_catalog.pg_attribute a
                                 WHERE a.attrelid = c.source AND a.attname = p_column
                                   AND NOT a.attisdropped)) END;
    IF mmr._citus_kind(c.source) IS NOT NULL THEN  -- Citus hook (019-citus.sql)
        PERFORM mmr._citus_secure_embeddings(p_table, v_fast);
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS source_visible ON %s', p_table);
    -- (1) the column privilege, once per query (InitPlan); (2) the row's visibility, a per-row
    -- index probe of the source table (OFFSET 0 keeps it from becoming a hashed scan).
    EXECUTE format('CREATE POLICY source_visible ON %s FOR SELECT USING ('
                   '(SELECT CASE WHEN %s THEN true ELSE mmr._embeddings_readable(%L::pg_catalog.regclass) END) '
                   'AND EXISTS (SELECT 1 FROM %s s WHERE %s OFFSET 0))',
                   p_table, v_fast, p_table::text, c.source, mmr._key_join(c, 's', v_alias));
    EXECUTE format('GRANT SELECT ON %s TO PUBLIC', p_table);
END
$$;

-- Existing installs: every embedding and multi-vector table gets the current policy.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c, s.embedding_table AS t, s.source_column AS col
               FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id
              WHERE s.embedding_table <> 'mmr._collection'::regclass
             UNION ALL
             SELECT c, m.embedding_table, NULL
               FROM mmr._multivector m JOIN mmr._collection c ON c.id = m.collection_id
              WHERE m.embedding_table IS NOT NULL
    LOOP
        PERFORM mmr._secure_embeddings(r.c, r.t, r.col);
    END LOOP;
END
$$;

-- BASIC projections: rows visible only to roles that may read the whole space (see above).
ALTER TABLE mmr._projection ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS space_readable ON mmr._projection;
CREATE POLICY space_readable ON mmr._projection FOR SELECT USING (mmr._projection_visible(space_id));
