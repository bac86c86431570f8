-- Bulk fills (issue 17, item 1) and the HNSW index of a space version (storage 'bit' included,
-- issue 17, item 2).
--
-- Inserting rows one by one into a live HNSW index costs several times what loading the rows
-- and building the index once does; pgvector's documentation recommends the latter for initial
-- loads.  A space version in a bulk fill (mmr._space.bulk_fill) has no HNSW index: rows are
-- written at heap speed, and the index is built once, with a maintenance_work_mem sized for
-- the graph and parallel maintenance workers (both scoped to the build), in the transaction
-- that ends the fill.  Searches never see a half-built state: before the commit they see the
-- version as it was (an inactive shadow version is not searched at all; a brand-new active
-- space is scanned exactly), after it the indexed version.
--
-- Fills begin (mmr._begin_bulk_fill) at:
--   * mmr.add_space(..., new_version => true): every shadow version; the fill ends at
--     mmr.switch_space (before the flip, in its transaction) or when a worker drains it;
--   * mmr.add_space of a new space, and mmr.backfill, queueing at least mmr._bulk_min_rows()
--     rows for a version that is inactive or empty; a worker ends the fill when the version's
--     queue is empty (mmr._worker_finish_fill);
--   * mmr.put_embeddings of at least mmr._bulk_min_rows() rows into a version that is inactive
--     or empty: the call itself ends the fill (one transaction);
--   * mmr.begin_bulk_fill(...) by hand; mmr.finish_bulk_fill(...) ends it.
-- An active version that already holds rows never loses its index automatically: its searches
-- must stay fast; re-fill it through a new version and mmr.switch_space.

-- Rows from which a fill is done in bulk (index built once) rather than row by row.
CREATE OR REPLACE FUNCTION mmr._bulk_min_rows()
RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 10000 $$;

-- Candidates a 'bit' space reranks exactly per requested row (k x this, at most 1000: one HNSW
-- scan); chosen by bench/quantization.py (docs/retrieval.md, "Storage").
CREATE OR REPLACE FUNCTION mmr._bit_oversample()
RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 20 $$;

-- Rows one index scan of space s must return for k results.
CREATE OR REPLACE FUNCTION mmr._scan_rows(s mmr._space, p_k int)
RETURNS int LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN s.storage = 'bit' THEN greatest(p_k, least(p_k * mmr._bit_oversample(), 1000))
                ELSE p_k END
$$;

-- The type of the embedding column for a storage ('bit' keeps full-precision vectors).
CREATE OR REPLACE FUNCTION mmr._column_storage(p_storage text)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE p_storage WHEN 'bit' THEN 'vector' ELSE p_storage END $$;

-- The statement creating the HNSW index of space version s (name mmr._emb_<id>_hnsw).
CREATE OR REPLACE FUNCTION mmr._hnsw_index_sql(s mmr._space)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('CREATE INDEX %I ON mmr.%I USING hnsw (%s) WITH (m = %s, ef_construction = %s)',
                  mmr._emb_name(s.id) || '_hnsw', mmr._emb_name(s.id),
                  CASE WHEN s.storage = 'bit'
                       THEN format('(@extschema:vector@.binary_quantize(embedding)::bit(%s)) '
                                   '@extschema:vector@.bit_hamming_ops', s.dimensions)
                       ELSE format('embedding @extschema:vector@.%s',
                                   mmr._opclass(s.storage, s.distance)) END,
                  coalesce((s.options ->> 'hnsw_m')::int, 16),
                  coalesce((s.options ->> 'hnsw_ef_construction')::int, 64))
$$;

-- Drop the HNSW index of space version p_space_id when it exists (a bulk fill dropped it
-- earlier, or a crash left none): looked up first, so no "does not exist, skipping" NOTICE
-- reaches the caller (on Citus one came from every node).
CREATE OR REPLACE FUNCTION mmr._drop_hnsw_index(p_space_id int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    idx regclass := to_regclass(format('mmr.%I', mmr._emb_name(p_space_id) || '_hnsw'));
BEGIN
    IF idx IS NOT NULL THEN
        EXECUTE format('DROP INDEX %s', idx);
    END IF;
END
$$;

-- Begin a bulk fill of space version s: drop its HNSW index.  False when it is already in one.
CREATE OR REPLACE FUNCTION mmr._begin_bulk_fill(s mmr._space)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM mmr._space x WHERE x.id = s.id AND NOT x.bulk_fill FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM mmr._drop_hnsw_index(s.id);
    UPDATE mmr._space x SET bulk_fill = true WHERE x.id = s.id;
    RETURN true;
END
$$;

-- End the bulk fill of space version p_space_id: build its HNSW index once and clear the flag,
-- in the caller's transaction.  maintenance_work_mem (sized for the graph: pgvector builds fast
-- only while the graph fits it) and max_parallel_maintenance_workers are set for this function
-- only (its SET clauses restore them on return).  False when the version is not in a fill.
CREATE OR REPLACE FUNCTION mmr._finish_bulk_fill(p_space_id int)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET maintenance_work_mem FROM CURRENT
SET max_parallel_maintenance_workers FROM CURRENT
AS $$
DECLARE
    s mmr._space;
    n bigint;
    need bigint;
BEGIN
    SELECT * INTO s FROM mmr._space x WHERE x.id = p_space_id AND x.bulk_fill FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT greatest(c.reltuples, 0)::bigint INTO n FROM pg_class c WHERE c.oid = s.embedding_table;
    IF n = 0 THEN
        EXECUTE format('SELECT count(*) FROM %s', s.embedding_table) INTO n;
    END IF;
    -- per element: the vector (or its bit code) and up to 2m neighbours of 12 bytes on layer 0,
    -- plus pgvector's element header; 25 % headroom; between 64 MB and 2 GB
    need := (n * (CASE WHEN s.storage = 'bit' THEN s.dimensions / 8 + 8
                       WHEN s.storage = 'halfvec' THEN 2 * s.dimensions + 8
                       ELSE 4 * s.dimensions + 8 END
                  + 2 * coalesce((s.options ->> 'hnsw_m')::int, 16) * 12 + 100) * 5 / 4) / 1024;
    need := least(greatest(need, 65536), 2097152);
    IF need > pg_size_bytes(current_setting('maintenance_work_mem')) / 1024 THEN
        PERFORM set_config('maintenance_work_mem', need || 'kB', true);
    END IF;
    PERFORM set_config('max_parallel_maintenance_workers',
                       least(7, greatest(current_setting('max_parallel_workers')::int, 0))::text,
                       true);
    PERFORM mmr._drop_hnsw_index(s.id);
    EXECUTE mmr._hnsw_index_sql(s);
    UPDATE mmr._space x SET bulk_fill = false WHERE x.id = s.id;
    RETURN true;
END
$$;

-- Whether space version s should be filled in bulk for p_rows incoming rows: enough rows, the
-- caller may rebuild its index, and nobody searches it through its index now (an inactive
-- version, or an empty active one).
CREATE OR REPLACE FUNCTION mmr._bulk_worthwhile(s mmr._space, p_rows bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    any_row boolean;
BEGIN
    IF s.bulk_fill OR p_rows < mmr._bulk_min_rows() THEN
        RETURN false;
    END IF;
    -- dropping and building the index needs the table owner's rights: a role granted only
    -- put_embeddings and INSERT keeps the live path
    IF NOT pg_has_role(current_user, (SELECT t.relowner FROM pg_class t
                                       WHERE t.oid = s.embedding_table), 'USAGE') THEN
        RETURN false;
    END IF;
    IF NOT s.active THEN
        RETURN true;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', s.embedding_table) INTO any_row;
    RETURN NOT any_row;
END
$$;

CREATE OR REPLACE FUNCTION mmr.begin_bulk_fill(collection text, space text, version int DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
BEGIN
    RETURN mmr._begin_bulk_fill(mmr._space_row(c.id, collection, space, version));
END
$$;

CREATE OR REPLACE FUNCTION mmr.finish_bulk_fill(collection text, space text, version int DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
BEGIN
    RETURN mmr._finish_bulk_fill((mmr._space_row(c.id, collection, space, version)).id);
END
$$;

-- The worker ends the bulk fills of the given space versions whose queue is empty (nothing
-- queued, claimed or being written).  SECURITY DEFINER: building an index needs the embedding
-- table's owner, and the worker's role (docs/security.md, "The worker's role") owns nothing; it
-- may only end a fill that is running, of a drained version, which is what the fill waits for.
-- Granted to the worker roles only (mmr.grant_worker).
CREATE OR REPLACE FUNCTION mmr._worker_finish_fill(p_space_ids int[])
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s mmr._space;
    q regclass;
    busy boolean;
    done int := 0;
BEGIN
    IF cardinality(p_space_ids) > 1000 THEN
        RAISE EXCEPTION 'at most 1000 space versions at a time' USING ERRCODE = '54000';
    END IF;
    FOR s IN SELECT * FROM mmr._space x WHERE x.id = ANY (p_space_ids) AND x.bulk_fill
              ORDER BY x.id LOOP
        SELECT c.queue_table INTO q FROM mmr._collection c WHERE c.id = s.collection_id;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE mmr_space_id = $1)', q)
           INTO busy USING s.id;
        IF NOT busy AND mmr._finish_bulk_fill(s.id) THEN
            done := done + 1;
        END IF;
    END LOOP;
    RETURN done;
END
$$;
