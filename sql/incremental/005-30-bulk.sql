-- 005-30-bulk (issue 17, items 1 and 2): bulk fills and binary quantisation.  Runs once
-- (revision 0005).
--
-- * mmr._space.bulk_fill: true while a space version is filled in bulk.  Its embedding table
--   then has no HNSW index (rows are written at heap speed); the index is built once when the
--   fill finishes (mmr._finish_bulk_fill, sql/idempotent/046-bulk.sql), in the transaction that
--   clears the flag, so the version becomes searchable through its index atomically.
-- * storage 'bit': the embedding column keeps the full-precision vector; the HNSW index is over
--   binary_quantize(embedding)::bit(d) (Hamming distance) and searches rerank its candidates
--   exactly on the full vectors.
ALTER TABLE mmr._space ADD COLUMN bulk_fill boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN mmr._space.bulk_fill IS
    'true while the version is filled in bulk: no HNSW index yet (built once when the fill ends)';

ALTER TABLE mmr._space DROP CONSTRAINT IF EXISTS _space_storage_check;
ALTER TABLE mmr._space ADD CONSTRAINT _space_storage_check
    CHECK (storage IN ('vector', 'halfvec', 'bit'));
