-- 005-40-encoders (issue 16): the encoder catalog and the spaces no worker can serve.  Runs once
-- (Alembic revision 0005).
--
-- * mmr._encoder: the encoders the installed plugins provide (name, dimensions, modalities),
--   refreshed by `mmr db upgrade`, `mmr models export` and every worker when it starts
--   (origin 'plugin'), plus encoders that only a remote worker has, declared with
--   mmr.declare_encoder(...) (origin 'remote').  mmr.add_space checks a space against it.
-- * mmr._unservable: a space a worker found it cannot serve (unknown encoder, wrong dimension,
--   a model change), with the reason; `mmr status`, `mmr check` and `mmr failed list` show it.

CREATE TABLE mmr._encoder (
    name         text PRIMARY KEY,
    dimensions   int NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    modalities   text[] NOT NULL,
    model_id     text,
    origin       text NOT NULL CHECK (origin IN ('plugin', 'remote')),
    published_by text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE mmr._unservable (
    space_id    int PRIMARY KEY REFERENCES mmr._space (id) ON DELETE CASCADE,
    reason      text NOT NULL,
    worker_id   text,
    reported_at timestamptz NOT NULL DEFAULT now()
);
