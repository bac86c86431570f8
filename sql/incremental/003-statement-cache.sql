-- 003-statement-cache: each space version carries the SQL text of its unfiltered searches.
-- Runs once (Alembic revision 0003).  The column is filled by the trigger of
-- sql/idempotent/088-statement-cache.sql (on every insert/update of a space row, and for all
-- rows on every upgrade), so a search needs one catalog look-up and builds no SQL.
ALTER TABLE mmr._space ADD COLUMN statements jsonb;
COMMENT ON COLUMN mmr._space.statements IS
    'derived: SQL text of this space''s unfiltered searches (mmr._space_statements); '
    'recomputed by a trigger, never edit';
