-- 004-50-ddl (issue 12, items 6, 7, 9): what the catalog needs to follow schema changes of
-- registered tables and to know which objects pg_mmretrieval created.  Runs once (revision 0004).
--
-- Columns are stored by name (the generated SQL names them); the attribute numbers below let
-- the schema-change guard (sql/idempotent/087-ddl-guard.sql) tell a rename (same attnum, new
-- name) from a drop (attnum marked dropped).  A trigger there keeps them filled from the names.
-- view_relid is the oid of the view mmr created for the collection: mmr drops or re-creates a
-- view only when its oid is this one, never a relation that merely has the chosen name.
ALTER TABLE mmr._collection
    ADD COLUMN key_attnums int2[],
    ADD COLUMN image_attnum int2,
    ADD COLUMN text_attnums int2[],
    ADD COLUMN view_relid oid;
ALTER TABLE mmr._space ADD COLUMN source_attnum int2;

COMMENT ON COLUMN mmr._collection.view_relid IS
    'oid of the view mmr created (NULL: none); mmr never drops or replaces any other relation';

-- Existing collections: attribute numbers from the names, and the view when the relation with
-- the recorded name is a view reading the source table (what mmr created; anything else is left
-- alone and the next view rebuild refuses to replace it).
UPDATE mmr._collection c SET
    key_attnums = (SELECT array_agg(a.attnum ORDER BY u.i) FROM unnest(c.key_columns)
                       WITH ORDINALITY u(k, i)
                     JOIN pg_attribute a ON a.attrelid = c.source AND a.attname = u.k
                                        AND NOT a.attisdropped),
    image_attnum = (SELECT a.attnum FROM pg_attribute a
                     WHERE a.attrelid = c.source AND a.attname = c.image_column
                       AND NOT a.attisdropped),
    text_attnums = (SELECT coalesce(array_agg(a.attnum ORDER BY u.i), '{}')
                      FROM unnest(c.text_columns) WITH ORDINALITY u(k, i)
                      JOIN pg_attribute a ON a.attrelid = c.source AND a.attname = u.k
                                         AND NOT a.attisdropped),
    view_relid = (SELECT v.oid FROM pg_class v JOIN pg_namespace n ON n.oid = v.relnamespace
                   WHERE n.nspname = c.view_schema AND v.relname = c.view_name
                     AND v.relkind = 'v'
                     AND EXISTS (SELECT 1 FROM pg_rewrite r JOIN pg_depend d
                                     ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                  WHERE r.ev_class = v.oid AND d.refclassid = 'pg_class'::regclass
                                    AND d.refobjid = c.source));
UPDATE mmr._space s SET source_attnum = (
    SELECT a.attnum FROM mmr._collection c
      JOIN pg_attribute a ON a.attrelid = c.source AND a.attname = s.source_column
                         AND NOT a.attisdropped
     WHERE c.id = s.collection_id);
