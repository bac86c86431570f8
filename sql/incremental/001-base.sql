-- 001-base: the catalog of collections and spaces.  Runs once (Alembic revision 0001).
-- Per-collection objects (queue, embedding tables, triggers, view) are created by
-- mmr.create_collection / mmr.add_space, defined in sql/idempotent.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE mmr._collection (
    id            int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    source        regclass NOT NULL,
    key_columns   name[] NOT NULL,
    key_types     regtype[] NOT NULL,
    image_column  name,
    image_kind    text CHECK (image_kind IN ('bytea', 'path', 'url', 'auto')),
    text_columns  name[] NOT NULL DEFAULT '{}',
    queue_table   regclass,
    view_schema   name,
    view_name     name,
    owner         name NOT NULL DEFAULT current_user,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (image_column IS NULL OR image_kind IS NOT NULL),
    CHECK (cardinality(key_columns) = cardinality(key_types) AND cardinality(key_columns) > 0)
);

CREATE TABLE mmr._space (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection_id    int NOT NULL REFERENCES mmr._collection (id) ON DELETE CASCADE,
    name             text NOT NULL,
    version          int NOT NULL DEFAULT 1 CHECK (version > 0),
    active           boolean NOT NULL,
    encoder          text NOT NULL,
    source_column    name,
    modality         text NOT NULL CHECK (modality IN ('image', 'text', 'external')),
    dimensions       int NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    distance         text NOT NULL CHECK (distance IN ('cosine', 'l2', 'inner_product')),
    storage          text NOT NULL CHECK (storage IN ('vector', 'halfvec')),
    embedding_table  regclass NOT NULL,
    model_id         text,
    options          jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (collection_id, name, version)
);

-- Exactly one active version per space name: searches by name use it.
CREATE UNIQUE INDEX _space_one_active ON mmr._space (collection_id, name) WHERE active;
