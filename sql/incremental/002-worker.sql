-- 002-worker: state of the ingestion worker.  Runs once (Alembic revision 0002).
-- New queues get the same columns from mmr.create_collection (sql/idempotent/030-collections.sql);
-- the DO block at the end gives queues created before this revision the same layout.

-- Dead letters: items that failed permanently, or retryably too many times.  One row per
-- (space, key); the key is jsonb as everywhere in the API.
CREATE TABLE mmr._failed (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection_id  int NOT NULL REFERENCES mmr._collection (id) ON DELETE CASCADE,
    space_id       int NOT NULL REFERENCES mmr._space (id) ON DELETE CASCADE,
    key            jsonb NOT NULL,
    content_hash   bytea,
    error_class    text NOT NULL CHECK (error_class IN ('retryable', 'permanent', 'crash')),
    error          text NOT NULL,
    attempts       int NOT NULL,
    history        jsonb NOT NULL DEFAULT '[]',
    enqueued_at    timestamptz,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    worker         text,
    UNIQUE (space_id, key)
);

-- One row per worker process: liveness (heartbeat_at), what it serves, what it did.
CREATE TABLE mmr._worker (
    id                text PRIMARY KEY,
    hostname          text NOT NULL,
    pid               int NOT NULL,
    application_name  text NOT NULL,
    collections       text[],
    providers         jsonb NOT NULL DEFAULT '{}',
    started_at        timestamptz NOT NULL DEFAULT now(),
    heartbeat_at      timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz,
    processed         bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0
);

-- Items written per batch, for throughput figures (pruned by the workers after an hour).
CREATE TABLE mmr._throughput (
    space_id  int NOT NULL REFERENCES mmr._space (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    items     int NOT NULL
);
CREATE INDEX _throughput_space_at ON mmr._throughput (space_id, at);

-- Queue columns of the worker's lease protocol:
--   mmr_claimed_by / mmr_claimed_until: the worker holding the entry and until when (a lease;
--     an expired lease makes the entry claimable again, so a dead worker's work comes back);
--   mmr_claims: claims not yet ended by a success, a failure or a release (> 0 at claim time
--     means an earlier claim died: the entry is then processed alone, and dead-lettered as a
--     'crash' after too many);
--   mmr_errors: the attempt history (jsonb array of {at, class, error, worker}).
DO $$
DECLARE
    q regclass;
BEGIN
    FOR q IN SELECT queue_table FROM mmr._collection WHERE queue_table IS NOT NULL ORDER BY id LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN mmr_claimed_by text, '
                       'ADD COLUMN mmr_claimed_until timestamptz, '
                       'ADD COLUMN mmr_claims int NOT NULL DEFAULT 0, '
                       'ADD COLUMN mmr_errors jsonb NOT NULL DEFAULT ''[]''', q);
    END LOOP;
END
$$;
