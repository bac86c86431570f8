-- The encoder catalog's grants to PUBLIC (issue 16), after 090-privileges.sql revoked every
-- function from PUBLIC.  mmr._encoder is catalog metadata (names, dimensions, modalities):
-- PUBLIC may read it; mmr._unservable is for administrators and workers.  The worker's roles
-- get theirs from mmr.grant_worker (032-worker-role.sql).
GRANT SELECT ON mmr._encoder TO PUBLIC;
REVOKE ALL ON mmr._unservable FROM PUBLIC;
