-- Statement cache: the SQL text of the unfiltered single-vector searches of each space version,
-- stored in mmr._space.statements (revision 0003).  A BEFORE trigger recomputes it whenever a
-- space row is written, and this file recomputes it for every row on every upgrade (so a change
-- of the builders below reaches existing spaces).  The fast paths of mmr.search and
-- mmr.composed_search run it with one catalog look-up and no string building; filters,
-- rerankers and multi-leg methods build their statement per call.
--
--   search       $1 vector, $2 k                          (mmr._search_sql)
--   single       $1 vector[] (query in $1[1]), $4 k        (mmr._single_sql)
--   single_excl  as single, $5 the jsonb key to exclude
--   embedding_of $1 a jsonb key -> that row's embedding as a full-precision vector

CREATE OR REPLACE FUNCTION mmr._space_statements(s mmr._space)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mmr._collection;
BEGIN
    SELECT * INTO c FROM mmr._collection WHERE id = s.collection_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object('search', mmr._search_sql(c, s, NULL),
                              'single', mmr._single_sql(c, s, NULL, false),
                              'single_excl', mmr._single_sql(c, s, NULL, true),
                              'embedding_of', format(
                                  'SELECT e.embedding::@extschema:vector@.vector FROM %s e, '
                                  'LATERAL (SELECT %s) t WHERE %s', s.embedding_table,
                                  mmr._key_from_json(c, '$1'), mmr._key_join(c, 'e', 't')));
END
$$;

CREATE OR REPLACE FUNCTION mmr._space_statements_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.statements := mmr._space_statements(NEW);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER _space_statements
    BEFORE INSERT OR UPDATE ON mmr._space
    FOR EACH ROW EXECUTE FUNCTION mmr._space_statements_trigger();

UPDATE mmr._space SET statements = NULL;

-- The query vector of a single-vector composed method (image_only, text_only, weighted, slerp)
-- when every argument is valid, else NULL: the general path (mmr._composed_plan) then runs and
-- raises the explanatory error.  Same formulas as there.
CREATE OR REPLACE FUNCTION mmr._fast_fused(s mmr._space, p_ref @extschema:vector@.vector,
                                           p_mod @extschema:vector@.vector, p_method text,
                                           p_params jsonb)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m text := lower(coalesce(p_method, 'weighted'));
    prm jsonb := coalesce(p_params, '{}');
BEGIN
    IF p_ref IS NULL OR @extschema:vector@.vector_dims(p_ref) <> s.dimensions
       OR (s.distance = 'cosine' AND NOT @extschema:vector@.vector_norm(p_ref) > 0) THEN
        RETURN NULL;
    END IF;
    IF m = 'image_only' THEN
        RETURN CASE WHEN prm = '{}' THEN p_ref END;
    END IF;
    IF p_mod IS NULL OR @extschema:vector@.vector_dims(p_mod) <> s.dimensions
       OR (s.distance = 'cosine' AND NOT @extschema:vector@.vector_norm(p_mod) > 0) THEN
        RETURN NULL;
    END IF;
    IF m = 'text_only' THEN
        RETURN CASE WHEN prm = '{}' THEN p_mod END;
    END IF;
    IF m NOT IN ('weighted', 'slerp') OR prm - 'alpha' <> '{}'
       OR (prm ? 'alpha' AND jsonb_typeof(prm -> 'alpha') <> 'number') THEN
        RETURN NULL;
    END IF;
    IF m = 'weighted' THEN
        RETURN mmr.vec_lerp(p_ref, p_mod, coalesce((prm ->> 'alpha')::float8, 0.5));
    END IF;
    RETURN mmr.vec_slerp(p_ref, p_mod, coalesce((prm ->> 'alpha')::float8, 0.5));
END
$$;
