-- The encoder catalog (issue 16; tables in sql/incremental/005-40-encoders.sql): mmr.add_space
-- checks a space against it, so a misspelled encoder, a wrong dimension or a modality the
-- encoder lacks is refused where the mistake is made, not found later by a worker that
-- silently skips the space.  Searches that return fewer rows than asked say why when rows of
-- the space are queued and no worker can embed them (mmr._notice_unsearchable).

-- The check mmr.add_space runs for every encoder but 'external'.
CREATE OR REPLACE FUNCTION mmr._check_encoder(p_encoder text, p_dimensions int, p_modality text,
                                              p_column text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e mmr._encoder;
    known text;
BEGIN
    SELECT * INTO e FROM mmr._encoder x WHERE x.name = p_encoder;
    IF NOT FOUND THEN
        SELECT string_agg(format('%s (%s-d, %s)', x.name, x.dimensions,
                                 array_to_string(x.modalities, '+')), ', ' ORDER BY x.name)
          INTO known FROM (SELECT * FROM mmr._encoder ORDER BY name LIMIT 50) x;
        RAISE EXCEPTION 'encoder % is unknown', quote_literal(p_encoder)
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'Known encoders: ' || coalesce(known, 'none (the encoder catalog is empty)') || '.',
                  HINT = 'Check the spelling (`mmr plugins` lists the installed encoders; '
                         '`mmr db upgrade` refreshes the catalog after installing a plugin or '
                         'exporting a model).  For an encoder that only a remote worker has, '
                         'declare it first: SELECT mmr.declare_encoder(name, dimensions, modalities).';
    END IF;
    IF e.dimensions <> p_dimensions THEN
        RAISE EXCEPTION 'encoder % produces %-dimensional vectors, not %', quote_literal(p_encoder),
                        e.dimensions, p_dimensions
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass dimensions => %s.', e.dimensions);
    END IF;
    IF NOT p_modality = ANY (e.modalities) THEN
        RAISE EXCEPTION 'encoder % does not embed % (column %); it embeds %', quote_literal(p_encoder),
                        p_modality, quote_ident(p_column), array_to_string(e.modalities, ' and ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = coalesce('Encoders that embed ' || p_modality || ': ' ||
                                  (SELECT string_agg(x.name, ', ' ORDER BY x.name)
                                     FROM (SELECT name FROM mmr._encoder
                                            WHERE p_modality = ANY (modalities)
                                            ORDER BY name LIMIT 20) x) || '.',
                                  'No known encoder embeds ' || p_modality || '.');
    END IF;
END
$$;

-- The escape hatch: an encoder that no installed plugin provides here (a remote worker has it).
-- Its spaces are checked against what is declared; a worker that starts with the encoder
-- refreshes the entry.
CREATE OR REPLACE FUNCTION mmr.declare_encoder(name text, dimensions int,
                                               modalities text[] DEFAULT '{text}',
                                               model_id text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR btrim(name) = '' OR name = 'external' OR length(name) > 200 THEN
        RAISE EXCEPTION 'encoder name % is not valid', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use the name the remote worker''s plugin registers (not ''external'').';
    END IF;
    IF dimensions IS NULL OR dimensions NOT BETWEEN 1 AND 16000 THEN
        RAISE EXCEPTION 'dimensions must be between 1 and 16000, not %', coalesce(dimensions::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF modalities IS NULL OR cardinality(modalities) = 0
       OR NOT modalities <@ ARRAY['text', 'image'] THEN
        RAISE EXCEPTION 'modalities must be a non-empty subset of {text,image}, not %',
                        coalesce(modalities::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO mmr._encoder AS x (name, dimensions, modalities, model_id, origin, published_by)
    VALUES (declare_encoder.name, declare_encoder.dimensions, declare_encoder.modalities,
            declare_encoder.model_id, 'remote', current_user)
    ON CONFLICT ON CONSTRAINT _encoder_pkey DO UPDATE
       SET dimensions = excluded.dimensions, modalities = excluded.modalities,
           model_id = excluded.model_id, origin = 'remote', published_by = excluded.published_by,
           updated_at = now();
END
$$;

-- Spaces no worker can serve, with the reason: what the catalog says (the encoder is unknown,
-- produces another dimension, or lacks the space's modality) and what workers reported when
-- they skipped the space.  `mmr status`, `mmr check` and `mmr failed list` show them.
CREATE OR REPLACE FUNCTION mmr.unservable_spaces(collection_name text DEFAULT NULL)
RETURNS TABLE (collection text, space text, version int, encoder text, reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT c.name, s.name, s.version, s.encoder,
           coalesce(
               CASE WHEN e.name IS NULL
                    THEN format('encoder %L is not in the encoder catalog: no installed plugin '
                                'provides it and it was not declared (mmr.declare_encoder)',
                                s.encoder)
                    WHEN e.dimensions <> s.dimensions
                    THEN format('space has %s dimensions but encoder %L produces %s', s.dimensions,
                                s.encoder, e.dimensions)
                    WHEN NOT s.modality = ANY (e.modalities)
                    THEN format('encoder %L does not embed %s', s.encoder, s.modality) END,
               u.reason)
      FROM mmr._space s
      JOIN mmr._collection c ON c.id = s.collection_id
      LEFT JOIN mmr._encoder e ON e.name = s.encoder
      LEFT JOIN mmr._unservable u ON u.space_id = s.id
     WHERE s.modality <> 'external'
       AND (collection_name IS NULL OR c.name = collection_name)
       AND (e.name IS NULL OR e.dimensions <> s.dimensions OR NOT s.modality = ANY (e.modalities)
            OR u.reason IS NOT NULL)
     ORDER BY c.name, s.name, s.version;
END;

-- Called by the searches (mmr.search's PL/pgSQL and native paths) only when a search returned
-- fewer rows than asked: a NOTICE when rows of the space are queued and no live worker can embed
-- them.  SECURITY INVOKER: it says so only to roles that may read the collection's queue and
-- mmr._worker (the installing role, administrators); for others it returns in silence, so no
-- role learns more than its grants allow.  The count is bounded (1,000,000).
CREATE OR REPLACE FUNCTION mmr._notice_unsearchable(p_space_id int)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s mmr._space;
    c mmr._collection;
    queued bigint;
    alive int;
    why text;
BEGIN
    SELECT * INTO s FROM mmr._space WHERE id = p_space_id;
    IF NOT FOUND OR s.modality = 'external' THEN
        RETURN;
    END IF;
    SELECT * INTO c FROM mmr._collection WHERE id = s.collection_id;
    IF NOT has_table_privilege(c.queue_table, 'SELECT')
       OR NOT has_table_privilege('mmr._worker', 'SELECT') THEN
        RETURN;
    END IF;
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s q WHERE q.mmr_space_id = $1 '
                   'LIMIT 1000000) x', c.queue_table)
       INTO queued USING s.id;
    IF queued = 0 THEN
        RETURN;
    END IF;
    IF has_function_privilege('mmr.unservable_spaces(text)', 'EXECUTE')
       AND has_table_privilege('mmr._unservable', 'SELECT') THEN
        SELECT u.reason INTO why FROM mmr.unservable_spaces(c.name) u
         WHERE u.space = s.name AND u.version = s.version;
    END IF;
    SELECT count(*) INTO alive FROM mmr._worker w
     WHERE w.stopped_at IS NULL AND w.heartbeat_at > now() - interval '30 seconds'
       AND (w.collections IS NULL OR c.name = ANY (w.collections));
    IF why IS NOT NULL THEN
        RAISE NOTICE '% rows of space % (collection %) are queued and not yet searchable: no worker can serve the space (%)',
                     queued, quote_literal(s.name), quote_literal(c.name), why
            USING HINT = 'Fix the space (drop it and add it again with the right encoder and '
                         'dimensions, or start a worker that has the encoder); `mmr status` '
                         'lists unservable spaces.';
    ELSIF alive = 0 THEN
        RAISE NOTICE '% rows of space % (collection %) are queued and not yet searchable: no worker is running',
                     queued, quote_literal(s.name), quote_literal(c.name)
            USING HINT = 'Run `mmr worker` (or `mmr worker --once` to embed the queue and exit); '
                         '`mmr status` shows progress.';
    END IF;
END
$$;
