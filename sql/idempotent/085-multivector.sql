-- Multi-vector items (e.g. image regions, several captions): several vectors per row in a
-- table mmr._mv_<id> (key columns, part, embedding) with its own HNSW index, and MaxSim search:
--     score(x) = Σ_q max_p sim(q, x_p)     (one query vector: the best part's similarity)
-- Candidates come from the index (one `ORDER BY embedding <op> q LIMIT n` per query vector, in a
-- LATERAL join), and the exact MaxSim is computed over the candidates' parts in one statement.

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
GRANT SELECT ON mmr._multivector TO PUBLIC;

-- The multi-vector space as a mmr._space value (so the SQL builders of 070 apply to it).
CREATE OR REPLACE FUNCTION mmr._mv_space(c mmr._collection, p_name text)
RETURNS mmr._space
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m mmr._multivector;
    s mmr._space;
BEGIN
    SELECT * INTO m FROM mmr._multivector x WHERE x.collection_id = c.id AND x.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'multi-vector space % does not exist in collection %', quote_literal(p_name),
                        quote_literal(c.name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with mmr.add_multivector_space(collection, name, dimensions).';
    END IF;
    s.id := -m.id; s.collection_id := c.id; s.name := m.name; s.dimensions := m.dimensions;
    s.distance := m.distance; s.storage := m.storage; s.embedding_table := m.embedding_table;
    s.active := true; s.version := 1; s.encoder := 'external'; s.modality := 'external';
    RETURN s;
END
$$;

CREATE OR REPLACE FUNCTION mmr.add_multivector_space(collection text, space text, dimensions int,
                                                     distance text DEFAULT 'cosine',
                                                     storage text DEFAULT 'vector')
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    v_id int;
    t text;
BEGIN
    PERFORM mmr._check_name('space', space);
    IF distance NOT IN ('cosine', 'l2', 'inner_product') OR storage NOT IN ('vector', 'halfvec') THEN
        RAISE EXCEPTION 'distance must be cosine, l2 or inner_product and storage vector or halfvec'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO mmr._multivector (collection_id, name, dimensions, distance, storage)
    VALUES (c.id, space, dimensions, distance, storage) RETURNING id INTO v_id;
    t := '_mv_' || v_id;
    EXECUTE format('CREATE TABLE mmr.%I (%s, part int NOT NULL, embedding @extschema:vector@.%s(%s) NOT NULL, '
                   'PRIMARY KEY (%s, part))', t, mmr._key_defs(c), storage, dimensions, mmr._key_list(c));
    EXECUTE format('ALTER TABLE mmr.%I ALTER COLUMN embedding SET STORAGE PLAIN', t);
    EXECUTE format('CREATE INDEX %I ON mmr.%I USING hnsw (embedding @extschema:vector@.%s)',
                   t || '_hnsw', t, mmr._opclass(storage, distance));
    -- Vectors of no declared column: readable by roles that may read every column of the
    -- source table, for visible rows (sql/idempotent/086-column-privileges.sql).
    PERFORM mmr._secure_embeddings(c, format('mmr.%I', t)::regclass, NULL);
    UPDATE mmr._multivector x SET embedding_table = format('mmr.%I', t)::regclass WHERE x.id = v_id;
    RETURN format('mmr.%I', t)::regclass;
END
$$;

CREATE OR REPLACE FUNCTION mmr.drop_multivector_space(collection text, space text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._mv_space(c, space);
BEGIN
    DELETE FROM mmr._multivector x WHERE x.id = -s.id;  -- the trigger drops the table
END
$$;

-- Replace the vectors of one row (parts 1..n).
CREATE OR REPLACE FUNCTION mmr.put_multivectors(collection text, space text, key jsonb,
                                                embeddings @extschema:vector@.vector[])
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    s mmr._space := mmr._mv_space(c, space);
    n int;
    found_ boolean;
BEGIN
    PERFORM mmr._check_limit('parts', coalesce(cardinality(embeddings), 0), 'the number of vectors');
    FOR i IN 1 .. coalesce(cardinality(embeddings), 0) LOOP
        PERFORM mmr._check_stored_vector(embeddings[i], s.dimensions, format('vector %s', i));
    END LOOP;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s s, LATERAL (SELECT %s) t WHERE %s)',
                   c.source, mmr._key_from_json(c, '$1'), mmr._key_join(c, 's', 't'))
       INTO found_ USING key;
    IF NOT found_ THEN
        RAISE EXCEPTION 'no row of % has key %', c.source, key USING ERRCODE = 'foreign_key_violation';
    END IF;
    EXECUTE format('DELETE FROM %s e USING (SELECT %s) t WHERE %s', s.embedding_table,
                   mmr._key_from_json(c, '$1'), mmr._key_join(c, 'e', 't')) USING key;
    EXECUTE format('INSERT INTO %s (%s, part, embedding) SELECT t.*, u.i, %s FROM '
                   'unnest($2) WITH ORDINALITY u(v, i), LATERAL (SELECT %s) t',
                   s.embedding_table, mmr._key_list(c),
                   CASE WHEN s.distance = 'cosine'
                        THEN format('@extschema:vector@.l2_normalize(u.v)::@extschema:vector@.%s', s.storage)
                        ELSE format('u.v::@extschema:vector@.%s', s.storage) END,
                   mmr._key_from_json(c, '$1'))
      USING key, embeddings;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION mmr._multivector_plan(c mmr._collection, s mmr._space,
                                                 p_queries @extschema:vector@.vector[], p_k int,
                                                 p_params jsonb, p_filter jsonb, p_ef_search int,
                                                 p_max_scan_tuples int)
RETURNS mmr._search_plan
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p mmr._search_plan;
    prm jsonb := coalesce(p_params, '{}');
    dist text := mmr._dist(s, 'e', 'q.v');
BEGIN
    PERFORM mmr._check_params(prm, '{candidates}', 'multivector_search');
    PERFORM mmr._check_limit('k', p_k);
    IF coalesce(cardinality(p_queries), 0) = 0 THEN
        RAISE EXCEPTION 'queries must hold at least one vector' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM mmr._check_limit('queries', cardinality(p_queries), 'the number of query vectors');
    FOR i IN 1 .. cardinality(p_queries) LOOP
        PERFORM mmr._check_vector(p_queries[i], s.dimensions, s.distance, format('query vector %s', i));
    END LOOP;
    p.n := mmr._candidates(prm, p_k, greatest(4 * p_k, 40));
    p.k := p_k; p.filter := p_filter; p.vecs := p_queries; p.qvec := p_queries[1];
    PERFORM mmr._prepare_search(s, p_queries[1], p.n, p_ef_search, p_max_scan_tuples, c, p_filter);
    p.sql := format(
        'WITH cand AS (SELECT DISTINCT %s FROM unnest($1) q(v) CROSS JOIN LATERAL '
        '(SELECT %s FROM %s ORDER BY %s LIMIT $2) l), '
        'ms AS (SELECT %s, q.i, max(%s) AS m FROM cand JOIN %s e ON %s '
        'CROSS JOIN unnest($1) WITH ORDINALITY q(v, i) GROUP BY %s, q.i) '
        'SELECT %s AS key, sum(ms.m)::float8 AS score FROM ms GROUP BY %s '
        'ORDER BY score DESC, key LIMIT $4',
        mmr._key_list(c, 'l'), mmr._key_list(c, 'e'), mmr._filtered_from(c, s, p_filter),
        dist,
        mmr._key_list(c, 'e'), mmr._score_expr(s.distance, dist), s.embedding_table,
        mmr._key_join(c, 'cand', 'e'), mmr._key_list(c, 'e'),
        mmr._key_json(c, 'ms'), mmr._key_list(c, 'ms'));
    RETURN p;
END
$$;

CREATE OR REPLACE FUNCTION mmr.multivector_search(
    collection text,
    space text,
    queries @extschema:vector@.vector[],
    k int DEFAULT 10,
    params jsonb DEFAULT '{}',
    filter jsonb DEFAULT NULL,
    ef_search int DEFAULT NULL,
    max_scan_tuples int DEFAULT NULL)
RETURNS TABLE (key jsonb, score float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = strict_order
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
BEGIN
    RETURN QUERY SELECT * FROM mmr._execute(
        mmr._multivector_plan(c, mmr._mv_space(c, space), queries, k, params, filter, ef_search,
                              max_scan_tuples),
        collection, k, NULL, NULL);
END
$$;

CREATE OR REPLACE FUNCTION mmr.explain_multivector(collection text, space text,
                                                   queries @extschema:vector@.vector[],
                                                   k int DEFAULT 10, params jsonb DEFAULT '{}',
                                                   filter jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = strict_order
SET hnsw.max_scan_tuples = 20000
AS $$
DECLARE
    c mmr._collection := mmr._collection_row(collection);
    p mmr._search_plan;
    plan jsonb;
BEGIN
    p := mmr._multivector_plan(c, mmr._mv_space(c, space), queries, k, params, filter, NULL, NULL);
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || p.sql
       INTO plan USING p.vecs, p.n, p.filter, p.k, p.exclude, p.weights, p.nums, p.aux, p.qtext;
    RETURN plan;
END
$$;

-- Dropping a collection cascades to its multi-vector rows; drop their tables with them.
CREATE OR REPLACE FUNCTION mmr._multivector_dropped()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.embedding_table IS NOT NULL THEN
        EXECUTE format('DROP TABLE IF EXISTS %s', OLD.embedding_table);
    END IF;
    RETURN OLD;
END
$$;

DROP TRIGGER IF EXISTS multivector_dropped ON mmr._multivector;
CREATE TRIGGER multivector_dropped AFTER DELETE ON mmr._multivector
    FOR EACH ROW EXECUTE FUNCTION mmr._multivector_dropped();
