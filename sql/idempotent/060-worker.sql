-- The ingestion worker's database side: health check and repair, dead letters, status
-- (the content hashes it compares are mmr.content_hash, 010-core.sql).  The worker's
-- claim/write statements are built by pg_mmretrieval.worker.

-- Health of every space of a collection.  missing: rows with content and no embedding;
-- stale: embeddings whose content_hash differs from the row's current content; duplicate:
-- keys embedded twice; orphan: embeddings of rows that are gone or have no content.  pending
-- counts the missing/stale rows a queue entry will fix; failed the dead-lettered items;
-- unqueued the missing/stale rows nothing will fix (`mmr check --repair` queues them).
CREATE OR REPLACE FUNCTION mmr.check(collection text)
RETURNS TABLE (space text, version int, active boolean, encoder text, rows bigint,
               embedded bigint, missing bigint, stale bigint, duplicate bigint, orphan bigint,
               queued bigint, pending bigint, failed bigint, unqueued bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space;
    present text;
BEGIN
    FOR s IN SELECT * FROM mmr._space x WHERE x.collection_id = c.id ORDER BY x.name, x.version LOOP
        space := s.name; version := s.version; active := s.active; encoder := s.encoder;
        EXECUTE format('SELECT count(*), count(*) - count(DISTINCT (%s)) FROM %s',
                       mmr._key_list(c), s.embedding_table)
           INTO embedded, duplicate;
        EXECUTE format('SELECT count(*) FROM %s q WHERE q.mmr_space_id = $1', c.queue_table)
           INTO queued USING s.id;
        SELECT count(*) INTO failed FROM mmr._failed f WHERE f.space_id = s.id;
        IF s.modality = 'external' THEN
            present := 'true';
            EXECUTE format('SELECT count(*) FROM %s', c.source) INTO rows;
            missing := NULL; stale := NULL; pending := NULL; unqueued := NULL;
        ELSE
            present := format('s.%I IS NOT NULL', s.source_column);
            -- the dead letters as a materialized CTE, not a correlated table: Citus joins a
            -- distributed source with a coordinator-local table only that way
            EXECUTE format(
                'WITH mmr_f AS MATERIALIZED (SELECT f.key, f.content_hash FROM mmr._failed f '
                '                             WHERE f.space_id = $1) '
                'SELECT count(*) FILTER (WHERE %1$s), '
                '       count(*) FILTER (WHERE %1$s AND e.%2$I IS NULL), '
                '       count(*) FILTER (WHERE %1$s AND e.%2$I IS NOT NULL '
                '                          AND e.content_hash IS DISTINCT FROM mmr.content_hash(s.%3$I)), '
                '       count(*) FILTER (WHERE %1$s AND (e.%2$I IS NULL OR e.content_hash IS DISTINCT '
                '                          FROM mmr.content_hash(s.%3$I)) AND EXISTS ( '
                '                          SELECT 1 FROM %4$s q WHERE q.mmr_space_id = $1 AND %5$s)), '
                '       count(*) FILTER (WHERE %1$s AND (e.%2$I IS NULL OR e.content_hash IS DISTINCT '
                '                          FROM mmr.content_hash(s.%3$I)) AND NOT EXISTS ( '
                '                          SELECT 1 FROM %4$s q WHERE q.mmr_space_id = $1 AND %5$s) '
                '                          AND NOT EXISTS (SELECT 1 FROM mmr_f f '
                '                            WHERE f.key = %6$s AND f.content_hash = mmr.content_hash(s.%3$I))) '
                '  FROM %7$s s LEFT JOIN %8$s e ON %9$s',
                present, c.key_columns[1], s.source_column, c.queue_table,
                mmr._key_join(c, 'q', 's'), mmr._key_json(c, 's'), c.source, s.embedding_table,
                mmr._key_join(c, 'e', 's'))
               INTO rows, missing, stale, pending, unqueued USING s.id;
        END IF;
        EXECUTE format('SELECT count(*) FROM %s e WHERE NOT EXISTS '
                       '(SELECT 1 FROM %s s WHERE %s AND %s)',
                       s.embedding_table, c.source, mmr._key_join(c, 's', 'e'), present)
           INTO orphan;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Queue what mmr.check found unfixed (missing and stale rows that are neither queued nor
-- dead-lettered for their current content) and delete orphan embeddings.
CREATE OR REPLACE FUNCTION mmr.repair(collection text)
RETURNS TABLE (space text, version int, queued bigint, orphans_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space;
    present text;
    total bigint := 0;
BEGIN
    FOR s IN SELECT * FROM mmr._space x WHERE x.collection_id = c.id ORDER BY x.name, x.version LOOP
        space := s.name; version := s.version; queued := 0;
        IF s.modality = 'external' THEN
            present := 'true';
        ELSE
            present := format('s.%I IS NOT NULL', s.source_column);
            -- (the dead letters as a materialized CTE: see mmr.check)
            EXECUTE format(
                'INSERT INTO %1$s (mmr_space_id, %2$s) '
                'WITH mmr_f AS MATERIALIZED (SELECT f.key, f.content_hash FROM mmr._failed f '
                '                             WHERE f.space_id = $1) '
                'SELECT $1, %3$s FROM %4$s s '
                'LEFT JOIN %5$s e ON %6$s '
                'WHERE s.%7$I IS NOT NULL '
                '  AND (e.%8$I IS NULL OR e.content_hash IS DISTINCT FROM mmr.content_hash(s.%7$I)) '
                '  AND NOT EXISTS (SELECT 1 FROM %1$s q WHERE q.mmr_space_id = $1 AND %9$s) '
                '  AND NOT EXISTS (SELECT 1 FROM mmr_f f WHERE f.key = %10$s '
                '                    AND f.content_hash = mmr.content_hash(s.%7$I))',
                c.queue_table, mmr._key_list(c), mmr._key_list(c, 's'), c.source,
                s.embedding_table, mmr._key_join(c, 'e', 's'), s.source_column, c.key_columns[1],
                mmr._key_join(c, 'q', 's'), mmr._key_json(c, 's'))
              USING s.id;
            GET DIAGNOSTICS queued = ROW_COUNT;
            total := total + queued;
        END IF;
        EXECUTE format('DELETE FROM %s e WHERE NOT EXISTS (SELECT 1 FROM %s s WHERE %s AND %s)',
                       s.embedding_table, c.source, mmr._key_join(c, 's', 'e'), present);
        GET DIAGNOSTICS orphans_deleted = ROW_COUNT;
        RETURN NEXT;
    END LOOP;
    IF total > 0 THEN
        PERFORM pg_notify('mmr_queue', c.id::text);
    END IF;
END
$$;

-- Queue the rows of a space (or of every space) that lack an up-to-date embedding and are
-- not queued yet; with force, every row (hashes are cleared so the worker re-encodes: use it
-- when files behind unchanged paths changed, or to re-run an encoder).
CREATE OR REPLACE FUNCTION mmr.backfill(collection text, space text DEFAULT NULL,
                                        version int DEFAULT NULL, force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space;
    n bigint;
    total bigint := 0;
BEGIN
    IF space IS NOT NULL THEN
        PERFORM mmr._space_row(c.id, collection, space, version)
          WHERE version IS NOT NULL OR NOT EXISTS (SELECT 1 FROM mmr._space x
                                                    WHERE x.collection_id = c.id AND x.name = space);
    END IF;
    FOR s IN SELECT * FROM mmr._space x
              WHERE x.collection_id = c.id AND x.modality <> 'external'
                AND (backfill.space IS NULL OR x.name = backfill.space)
                AND (backfill.version IS NULL OR x.version = backfill.version)
              ORDER BY x.id LOOP
        IF force THEN
            EXECUTE format('UPDATE %s SET content_hash = NULL', s.embedding_table);
        END IF;
        EXECUTE format(
            'INSERT INTO %1$s (mmr_space_id, %2$s) SELECT $1, %3$s FROM %4$s s '
            'LEFT JOIN %5$s e ON %6$s '
            'WHERE s.%7$I IS NOT NULL '
            '  AND (e.%8$I IS NULL OR e.content_hash IS DISTINCT FROM mmr.content_hash(s.%7$I)) '
            '  AND NOT EXISTS (SELECT 1 FROM %1$s q WHERE q.mmr_space_id = $1 AND %9$s '
            '                    AND q.mmr_claimed_until IS NULL AND q.mmr_attempts = 0)',
            c.queue_table, mmr._key_list(c), mmr._key_list(c, 's'), c.source,
            s.embedding_table, mmr._key_join(c, 'e', 's'), s.source_column, c.key_columns[1],
            mmr._key_join(c, 'q', 's'))
          USING s.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        -- a large backfill of a version nobody searches through its index: filled in bulk, the
        -- index built once when a worker drains it (sql/idempotent/028-bulk.sql)
        IF mmr._bulk_worthwhile(s, n) THEN
            PERFORM mmr._begin_bulk_fill(s);
        END IF;
    END LOOP;
    IF total > 0 THEN
        PERFORM pg_notify('mmr_queue', c.id::text);
    END IF;
    RETURN total;
END
$$;

-- Dead letters back into the queue (all of a collection, of one space, or the given ids).
CREATE OR REPLACE FUNCTION mmr.retry_failed(collection text, space text DEFAULT NULL,
                                            ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    n bigint;
BEGIN
    IF space IS NOT NULL THEN
        PERFORM mmr._space_row(c.id, collection, space, NULL)
          WHERE NOT EXISTS (SELECT 1 FROM mmr._space x WHERE x.collection_id = c.id AND x.name = space);
    END IF;
    EXECUTE format(
        'WITH f AS (DELETE FROM mmr._failed f USING mmr._space s WHERE s.id = f.space_id '
        '             AND f.collection_id = $1 AND ($2::text IS NULL OR s.name = $2) '
        '             AND ($3::bigint[] IS NULL OR f.id = ANY ($3)) RETURNING f.*) '
        'INSERT INTO %s (mmr_space_id, %s) SELECT f.space_id, t.* FROM f, LATERAL (SELECT %s) t',
        c.queue_table, mmr._key_list(c), mmr._key_from_json(c, 'f.key'))
      USING c.id, space, ids;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('mmr_queue', c.id::text);
    END IF;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION mmr.purge_failed(collection text, space text DEFAULT NULL,
                                            ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    n bigint;
BEGIN
    DELETE FROM mmr._failed f USING mmr._space s
     WHERE s.id = f.space_id AND f.collection_id = c.id AND (purge_failed.space IS NULL OR s.name = purge_failed.space)
       AND (ids IS NULL OR f.id = ANY (ids));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Per collection and space: rows with content, embeddings, queue, dead letters, items written
-- in the last minute, age of the oldest queued item, and the live workers serving it.
CREATE OR REPLACE FUNCTION mmr.status(collection_name text DEFAULT NULL,
                                      alive_after interval DEFAULT '30 seconds')
RETURNS TABLE (collection text, space text, version int, active boolean, encoder text,
               model_id text, rows bigint, embedded bigint, queued bigint, failed bigint,
               throughput_1m bigint, lag_seconds float8, workers_alive int, providers text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
    s mmr._space;
BEGIN
    FOR c IN SELECT * FROM mmr._collection x
              WHERE collection_name IS NULL OR x.name = collection_name ORDER BY x.name LOOP
        FOR s IN SELECT * FROM mmr._space x WHERE x.collection_id = c.id ORDER BY x.name, x.version LOOP
            collection := c.name; space := s.name; version := s.version;
            active := s.active; encoder := s.encoder; model_id := s.model_id;
            IF s.modality = 'external' THEN
                EXECUTE format('SELECT count(*) FROM %s', c.source) INTO rows;
            ELSE
                EXECUTE format('SELECT count(*) FROM %s s WHERE s.%I IS NOT NULL', c.source,
                               s.source_column) INTO rows;
            END IF;
            EXECUTE format('SELECT count(*) FROM %s', s.embedding_table) INTO embedded;
            EXECUTE format('SELECT count(*), extract(epoch FROM now() - min(q.mmr_enqueued_at))::float8 '
                           'FROM %s q WHERE q.mmr_space_id = $1', c.queue_table)
               INTO queued, lag_seconds USING s.id;
            SELECT count(*) INTO failed FROM mmr._failed f WHERE f.space_id = s.id;
            SELECT coalesce(sum(t.items), 0) INTO throughput_1m FROM mmr._throughput t
             WHERE t.space_id = s.id AND t.at > now() - interval '1 minute';
            SELECT count(*), string_agg(DISTINCT w.providers ->> s.encoder, ', ')
              INTO workers_alive, providers
              FROM mmr._worker w
             WHERE w.stopped_at IS NULL AND w.heartbeat_at > now() - alive_after
               AND (w.collections IS NULL OR c.name = ANY (w.collections));
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

-- Generated trigger functions follow the current mmr._rebuild_sync (an upgrade may change it).
DO $$
DECLARE
    v_id int;
BEGIN
    FOR v_id IN SELECT id FROM mmr._collection ORDER BY id LOOP
        PERFORM mmr._rebuild_sync(v_id);
    END LOOP;
END
$$;
