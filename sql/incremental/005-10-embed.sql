-- mmr.embed (issue 13): where the server's Python finds pg_mmretrieval and its dependencies.
-- One row, written by `mmr db upgrade` (the site-packages of the interpreter that ran it) or by
-- an administrator with mmr.set_python_path(...).  The backend imports code from these
-- directories with the server's OS rights, so only the installing role may write the table.
CREATE TABLE IF NOT EXISTS mmr._embed_config (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    python_path  text[] NOT NULL DEFAULT '{}',
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO mmr._embed_config DEFAULT VALUES ON CONFLICT DO NOTHING;
