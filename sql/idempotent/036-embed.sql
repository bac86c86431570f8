-- mmr.embed (issue 13): encode a text or an image inside PostgreSQL, so an application that
-- speaks only SQL can search: mmr.search(c, s, mmr.embed(c, s, 'a red circle')).
--
-- mmr.embed(collection, space, item text | bytea) is written in PL/Python (plpython3u) and calls
-- pg_mmretrieval.sql_embed in the server's Python: the space's active encoder, through the
-- worker's own loader (its size limits) and the encoder's embed_batch (the same plugin,
-- preprocessing, ONNX model and normalisation as the worker).  Sessions are cached per backend.
-- When the setting mmr.encoder_url names an encoder service (`mmr serve`), the backend posts the
-- item to <url>/v1/embed instead and loads no model.  Without PL/Python (extension files
-- missing, a managed service that forbids untrusted languages, or mmr.install_plpython = off for
-- the installing session) mmr.embed is a stub that raises SQLSTATE 0A000 naming the
-- alternatives; everything else works the same.  docs/retrieval.md, "Encoding inside the
-- server"; docs/security.md, "Encoding inside the server".

-- Record the directories the server's Python adds (site.addsitedir) to import pg_mmretrieval and
-- its dependencies.  `mmr db upgrade` calls it with the site-packages of the interpreter that
-- runs it.  Administrative: the backend imports code from these directories with the server's
-- OS rights.
CREATE OR REPLACE FUNCTION mmr.set_python_path(p_dirs text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $mmr$
BEGIN
    IF p_dirs IS NULL OR EXISTS (SELECT 1 FROM unnest(p_dirs) d
                                  WHERE d IS NULL OR left(d, 1) <> '/') THEN
        RAISE EXCEPTION 'the Python path must be a list of absolute directories'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the site-packages directory where pg_mmretrieval is installed, '
                         'e.g. ARRAY[''/opt/venv/lib/python3.11/site-packages''].';
    END IF;
    INSERT INTO mmr._embed_config AS e (id, python_path) VALUES (true, p_dirs)
    ON CONFLICT (id) DO UPDATE SET python_path = excluded.python_path, recorded_at = now()
     WHERE e.python_path IS DISTINCT FROM excluded.python_path;
END
$mmr$;

-- The values of mmr.encoder_url an administrator set for this session: ALTER DATABASE (the
-- database's owner) and ALTER ROLE (a superuser, for a placeholder setting), from
-- pg_db_role_setting (readable by every role); and the configuration files (postgresql.conf,
-- ALTER SYSTEM) when the caller may read pg_file_settings (superusers, pg_read_all_settings).
CREATE OR REPLACE FUNCTION mmr._admin_encoder_urls()
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $mmr$
DECLARE
    prefix constant text := 'mmr.encoder_url=';
    out_ text[];
    files text[];
BEGIN
    SELECT array_agg(btrim(substr(c.cfg, length(prefix) + 1))) INTO out_
      FROM pg_catalog.pg_db_role_setting d, unnest(d.setconfig) c(cfg)
     WHERE d.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database
                                  WHERE datname = pg_catalog.current_database()))
       AND d.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user))
       AND c.cfg LIKE 'mmr.encoder\_url=%';
    IF pg_catalog.has_table_privilege('pg_catalog.pg_file_settings', 'SELECT')
       AND pg_catalog.has_function_privilege('pg_catalog.pg_show_all_file_settings()',
                                             'EXECUTE') THEN
        SELECT array_agg(btrim(f.setting)) INTO files
          FROM pg_catalog.pg_file_settings f
         WHERE f.name = 'mmr.encoder_url' AND f.error IS NULL;
    END IF;
    RETURN coalesce(out_, '{}') || coalesce(files, '{}');
END
$mmr$;

-- Every caller of mmr.embed reads where the server's Python finds the package.
GRANT SELECT ON mmr._embed_config TO PUBLIC;

-- What mmr.embed needs about a space, checked: the active version of (p_collection, p_space),
-- an encoder (not external vectors), the caller's right to read the space's source column (the
-- same condition as reading its embeddings), and the settings of this call.  Raises the errors
-- of mmr.embed with their SQLSTATEs and hints.
CREATE OR REPLACE FUNCTION mmr._embed_target(p_collection text, p_space text)
RETURNS TABLE (encoder text, dimensions int, model_id text, threads int, encoder_url text,
               encoder_token text, encoder_timeout int)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $mmr$
DECLARE
    c mmr._collection;
    s mmr._space;
    v_src text;
    v_raw text;
BEGIN
    c := mmr._collection_row(p_collection);
    s := mmr._space_row(c.id, p_collection, p_space);
    IF s.modality = 'external' OR s.encoder = 'external' THEN
        RAISE EXCEPTION 'space % of collection % has no encoder: its vectors come from your '
                        'application', quote_literal(s.name), quote_literal(c.name)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Compute the query vector the way you computed the stored ones and pass '
                         'it: mmr.search(collection, space, ''[...]''::vector).';
    END IF;
    IF NOT mmr._may_read_column(c.source, s.source_column) THEN
        RAISE EXCEPTION 'permission denied to encode with space % of collection %: it needs '
                        'SELECT on %', quote_literal(s.name), quote_literal(c.name),
                        CASE WHEN s.source_column IS NULL THEN format('table %s', c.source)
                             ELSE format('column %I of table %s', s.source_column, c.source) END
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('A role may encode with a space when it may search it: GRANT '
                                'SELECT %sON %s TO %I;',
                                CASE WHEN s.source_column IS NULL THEN ''
                                     ELSE format('(%I) ', s.source_column) END,
                                c.source, current_user);
    END IF;
    encoder := s.encoder;
    dimensions := s.dimensions;
    model_id := s.model_id;
    v_raw := nullif(btrim(current_setting('mmr.embed_threads', true)), '');
    IF v_raw IS NOT NULL AND v_raw !~ '^[0-9]+$' THEN
        RAISE EXCEPTION 'mmr.embed_threads must be a whole number, not %', quote_literal(v_raw)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = (SELECT l.hint FROM mmr._limits() l WHERE l.name = 'embed_threads');
    END IF;
    threads := mmr._check_limit('embed_threads', coalesce(v_raw, '1')::float8,
                                'mmr.embed_threads');
    v_raw := nullif(btrim(current_setting('mmr.encoder_timeout', true)), '');
    IF v_raw IS NOT NULL AND v_raw !~ '^[0-9]+$' THEN
        RAISE EXCEPTION 'mmr.encoder_timeout must be a whole number of seconds, not %',
                        quote_literal(v_raw)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = (SELECT l.hint FROM mmr._limits() l WHERE l.name = 'encoder_timeout');
    END IF;
    encoder_timeout := mmr._check_limit('encoder_timeout', coalesce(v_raw, '10')::float8,
                                        'mmr.encoder_timeout');
    -- The encoder service: honoured only when its value is one an administrator set
    -- (ALTER DATABASE, ALTER ROLE by a superuser, postgresql.conf / ALTER SYSTEM), never a value
    -- from SET in a session: the backend would post the caller's input to any address the
    -- caller names.  (Custom settings are placeholders: pg_settings does not show their source.)
    encoder_url := nullif(btrim(current_setting('mmr.encoder_url', true)), '');
    IF encoder_url IS NOT NULL AND NOT encoder_url = ANY (mmr._admin_encoder_urls()) THEN
        RAISE EXCEPTION 'mmr.encoder_url = % is not a value an administrator set, so it is not used',
                        quote_literal(encoder_url)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'An administrator sets the encoder service: ALTER DATABASE ... SET '
                         'mmr.encoder_url = ''http://127.0.0.1:8765'' (or ALTER ROLE ... SET as '
                         'a superuser); RESET mmr.encoder_url to encode in this backend.';
    END IF;
    IF encoder_url IS NOT NULL AND encoder_url !~* '^https?://' THEN
        RAISE EXCEPTION 'mmr.encoder_url must be an http:// or https:// URL, not %',
                        quote_literal(encoder_url)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. http://127.0.0.1:8765 (the address `mmr serve` prints).';
    END IF;
    encoder_token := nullif(current_setting('mmr.encoder_token', true), '');
    RETURN NEXT;
END
$mmr$;

-- The vectors of one query text in each of p_spaces (mmr.hybrid_search without vectors).
CREATE OR REPLACE FUNCTION mmr._embed_each(p_collection text, p_spaces text[], p_text text)
RETURNS @extschema:vector@.vector[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $mmr$
DECLARE
    out_ @extschema:vector@.vector[] := '{}';
    i int;
BEGIN
    PERFORM mmr._check_limit('legs', coalesce(cardinality(p_spaces), 0), 'the number of spaces');
    FOR i IN 1 .. coalesce(cardinality(p_spaces), 0) LOOP
        out_ := out_ || mmr.embed(p_collection, p_spaces[i], p_text);
    END LOOP;
    RETURN out_;
END
$mmr$;

-- Why PL/Python cannot be used here (NULL: it can).  Creates the extension when missing.
CREATE OR REPLACE FUNCTION mmr._plpython_unavailable()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $mmr$
BEGIN
    IF lower(coalesce(current_setting('mmr.install_plpython', true), 'on'))
       IN ('off', 'false', '0', 'no') THEN
        RETURN 'mmr.install_plpython is off for the installing session';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'plpython3u') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions
                        WHERE name = 'plpython3u') THEN
            RETURN 'the plpython3u extension is not available on this server';
        END IF;
        CREATE EXTENSION plpython3u;
    END IF;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN format('CREATE EXTENSION plpython3u failed: %s', SQLERRM);
END
$mmr$;

-- mmr._embed_py: the PL/Python half, which returns the vector or the error (state, message,
-- hint) that mmr.embed raises (an error raised in PL/Python would carry its Python class in the
-- message).  It checks the space itself (mmr._embed_target), so calling it directly skips no
-- check.
DO $mmr$
DECLARE
    why text := mmr._plpython_unavailable();
    boot constant text := $py$
try:
    embed = SD["embed"]
except KeyError:
    import site
    import sys
    try:
        rows = plpy.execute("SELECT python_path FROM mmr._embed_config")
        for d in (rows[0]["python_path"] if rows.nrows() else None) or []:
            if d not in sys.path:
                site.addsitedir(d)
        from pg_mmretrieval.sql_embed import embed
    except Exception as e:
        return {
            "vec": None,
            "state": "58P01",
            "message": "mmr.embed: the server's Python cannot import pg_mmretrieval (%s: %s)"
            % (type(e).__name__, e),
            "hint": "Run `mmr db upgrade` with the Python environment where pg_mmretrieval is "
            "installed (it records its site-packages), or SELECT mmr.set_python_path("
            "ARRAY['/path/to/site-packages']); see docs/server.md.",
        }
    SD["embed"] = embed
return embed(plpy, collection, space, item)
$py$;
    sig text;
BEGIN
    -- The PL/Python half first, for both overloads: a role that may not create functions in
    -- plpython3u (the extension installed by a superuser, the schema upgraded by its owner)
    -- gets the stubs, with the reason, instead of a failed upgrade.
    IF why IS NULL THEN
        BEGIN
            FOREACH sig IN ARRAY ARRAY['text', 'bytea'] LOOP
                EXECUTE format($f$
CREATE OR REPLACE FUNCTION mmr._embed_py(collection text, space text, item %s,
                                         OUT vec @extschema:vector@.vector, OUT state text,
                                         OUT message text, OUT hint text)
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS %L$f$, sig, boot);
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            why := format('creating functions in plpython3u failed: %s', SQLERRM);
        END;
    END IF;
    FOREACH sig IN ARRAY ARRAY['text', 'bytea'] LOOP
        IF why IS NULL THEN
            EXECUTE format($f$
CREATE OR REPLACE FUNCTION mmr.embed(collection text, space text, item %s)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $b$
DECLARE
    r record;
BEGIN
    IF item IS NULL THEN
        RETURN NULL;
    END IF;
    r := mmr._embed_py(collection, space, item);
    IF r.state IS NOT NULL AND r.hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = r.state, MESSAGE = r.message, HINT = r.hint;
    ELSIF r.state IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = r.state, MESSAGE = r.message;
    END IF;
    RETURN r.vec;
END
$b$$f$, sig);
        ELSE
            EXECUTE format($f$
CREATE OR REPLACE FUNCTION mmr.embed(collection text, space text, item %s)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $b$
BEGIN
    RAISE EXCEPTION 'mmr.embed is not available on this server: %%', %L
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Encode outside the database instead: pass a vector (mmr.search(collection, '
                     'space, ''[...]''::vector)); or use the Python client (pg_mmretrieval: '
                     'Collection.search(space, text=...), get_encoder(name).embed_batch); or '
                     'run the encoder service (`mmr serve`) and '
                     'call its POST /v1/embed. On your own server, install PL/Python (Debian/'
                     'Ubuntu postgresql-NN-plpython3, RHEL postgresqlNN-plpython3) and run mmr '
                     'db upgrade again; on the embedded server: mmr server install-plpython.';
END
$b$$f$, sig, why);
        END IF;
    END LOOP;
    IF why IS NOT NULL THEN
        RAISE NOTICE 'pg_mmretrieval: mmr.embed is not available (%); search by vector, the '
                     'Python client or `mmr serve` instead', why;
    END IF;
END
$mmr$;

COMMENT ON FUNCTION mmr.embed(text, text, text) IS
    'The vector of a text in a space, by its active encoder (a CLIP-like image space takes '
    'text through its text tower): mmr.search(c, s, mmr.embed(c, s, ''a red circle''))';
COMMENT ON FUNCTION mmr.embed(text, text, bytea) IS
    'The vector of an image (the bytes of an image file) in a space, by its active encoder';

-- A vector parameter of a composed search (params.reference_caption, caption_query): a JSON
-- array is the vector, a JSON string a text encoded in p_space by mmr.embed.
CREATE OR REPLACE FUNCTION mmr._jvec_or_embed(p_collection text, p_space text, p jsonb)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $mmr$
BEGIN
    IF jsonb_typeof(p) = 'string' THEN
        RETURN mmr.embed(p_collection, p_space, p #>> '{}');
    END IF;
    RETURN mmr._jvec(p);
END
$mmr$;

-- params.reference_captions of WeiMoCIR: vectors, or texts, the i-th encoded in p_spaces[i].
CREATE OR REPLACE FUNCTION mmr._jvecs_or_embed(p_collection text, p_spaces text[], p jsonb)
RETURNS @extschema:vector@.vector[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $mmr$
BEGIN
    IF p IS NULL OR jsonb_typeof(p) <> 'array' THEN
        RETURN mmr._jvecs(p);
    END IF;
    PERFORM mmr._check_limit('legs', jsonb_array_length(p), 'the number of reference captions');
    RETURN ARRAY(SELECT CASE WHEN jsonb_typeof(e.v) <> 'string' THEN mmr._jvec(e.v)
                             WHEN e.i <= coalesce(cardinality(p_spaces), 0)
                             THEN mmr.embed(p_collection, p_spaces[e.i], e.v #>> '{}') END
                   FROM jsonb_array_elements(p) WITH ORDINALITY e(v, i) ORDER BY e.i);
END
$mmr$;
