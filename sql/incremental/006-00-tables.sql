-- 006-00-tables (issue 14, item 2): the tables that idempotent files used to create with
-- CREATE TABLE IF NOT EXISTS, where no upgrade could ever change them.  Runs once (revision
-- 0006), before the idempotent files that use them (every upgrade runs the revisions first).
--
-- The definitions are exactly the ones the idempotent files had (unchanged since revision
-- 0003), so a database created before 0006 already has these tables, identical: IF NOT EXISTS
-- keeps this file a no-op there, and a fresh install ends with the same definitions
-- (tests/test_upgrade.py compares the catalogs).  Their grants and row-level security stay in
-- the idempotent files, with the functions that use them.  A later change to one of these
-- tables is an ALTER TABLE in a new revision.

-- BASIC projections per space (mmr.set_projection; composed search, FUSION.md §2.3).
CREATE TABLE IF NOT EXISTS mmr._projection (
    space_id    int NOT NULL REFERENCES mmr._space (id) ON DELETE CASCADE,
    name        text NOT NULL,
    basis       @extschema:vector@.vector[] NOT NULL,
    mu_image    @extschema:vector@.vector NOT NULL,
    mu_text     @extschema:vector@.vector NOT NULL,
    s_v_min     float8,
    s_t_min     float8,
    params      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space_id, name)
);

-- The reranker registry (mmr.register_reranker).
CREATE TABLE IF NOT EXISTS mmr._reranker (
    name         text PRIMARY KEY,
    function     regprocedure NOT NULL,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The lexical index of a collection for hybrid search (mmr.create_text_index).
CREATE TABLE IF NOT EXISTS mmr._text_index (
    collection_id  int PRIMARY KEY REFERENCES mmr._collection (id) ON DELETE CASCADE,
    config         regconfig NOT NULL,
    index_name     regclass
);

-- Multi-vector spaces (mmr.add_multivector_space): several vectors per row in mmr._mv_<id>.
CREATE TABLE IF NOT EXISTS mmr._multivector (
    id             int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection_id  int NOT NULL REFERENCES mmr._collection (id) ON DELETE CASCADE,
    name           text NOT NULL,
    dimensions     int NOT NULL CHECK (dimensions BETWEEN 1 AND 4000),
    distance       text NOT NULL CHECK (distance IN ('cosine', 'l2', 'inner_product')),
    storage        text NOT NULL CHECK (storage IN ('vector', 'halfvec')),
    embedding_table regclass,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (collection_id, name)
);
