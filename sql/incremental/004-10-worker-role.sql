-- 004-10-worker-role (issue 12, item 1): the worker's least-privilege role.  Runs once
-- (Alembic revision 0004).
--
-- * mmr._worker_role: the roles mmr.grant_worker(...) made workers; mmr.create_collection and
--   mmr.add_space grant every one of them what it needs on the tables they create.
-- * Queue and embedding tables key their rows by the BASE type of the source's key (a domain
--   resolved to the type under it): a domain's CHECK is user code, and it ran as the worker
--   (which cast keys to the domain) and as the installing role (the SECURITY DEFINER sync
--   trigger inserted keys into domain-typed queue columns).  Existing installs are converted
--   here; mmr.create_collection stores base types from now on.

CREATE TABLE mmr._worker_role (
    role_name  name PRIMARY KEY,
    granted_at timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE
    c mmr._collection;
    base regtype[];
    i int;
    emb regclass;
    sj text;
BEGIN
    FOR c IN SELECT * FROM mmr._collection ORDER BY id LOOP
        SELECT array_agg(b.base ORDER BY u.i) INTO base
          FROM unnest(c.key_types) WITH ORDINALITY AS u(t, i)
         CROSS JOIN LATERAL (
               WITH RECURSIVE d(oid, under) AS (
                   SELECT y.oid, y.typbasetype FROM pg_catalog.pg_type y WHERE y.oid = u.t
                   UNION ALL
                   SELECT y.oid, y.typbasetype FROM d JOIN pg_catalog.pg_type y ON y.oid = d.under
                    WHERE d.under <> 0)
               SELECT d.oid::regtype AS base FROM d WHERE d.under = 0) b;
        CONTINUE WHEN base = c.key_types;
        UPDATE mmr._collection x SET key_types = base WHERE x.id = c.id;
        -- the collection's view reads the key columns: dropped here, re-created below
        IF c.view_name IS NOT NULL THEN
            EXECUTE format('DROP VIEW IF EXISTS %I.%I', c.view_schema, c.view_name);
        END IF;
        FOR i IN 1 .. cardinality(base) LOOP
            CONTINUE WHEN base[i] = c.key_types[i];
            IF c.queue_table IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s', c.queue_table,
                               c.key_columns[i], base[i]);
            END IF;
            FOR emb IN SELECT s.embedding_table FROM mmr._space s
                        WHERE s.collection_id = c.id ORDER BY s.id LOOP
                -- a column a policy uses cannot change type: re-create the policy around it
                SELECT string_agg(format('s.%I = %s.%I', k, emb, k), ' AND ' ORDER BY n)
                  INTO sj FROM unnest(c.key_columns) WITH ORDINALITY AS u(k, n);
                EXECUTE format('DROP POLICY IF EXISTS source_visible ON %s', emb);
                EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s', emb, c.key_columns[i],
                               base[i]);
                EXECUTE format('CREATE POLICY source_visible ON %s FOR SELECT USING '
                               '(EXISTS (SELECT 1 FROM %s s WHERE %s OFFSET 0))', emb, c.source,
                               sj);
            END LOOP;
        END LOOP;
        PERFORM mmr._rebuild_view(c.id);
    END LOOP;
END
$$;
