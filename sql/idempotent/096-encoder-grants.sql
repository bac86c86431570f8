-- The encoder catalog's grants to PUBLIC (issue 16), after 090-privileges.sql revoked every
-- function from PUBLIC.  mmr._encoder is catalog metadata (names, dimensions, modalities):
-- PUBLIC may read it.  mmr._notice_unsearchable (SECURITY DEFINER, see 062-encoders.sql) is
-- called by every search that returns fewer rows than asked.  The worker's roles get theirs
-- from mmr.grant_worker (061-worker-role.sql).
GRANT SELECT ON mmr._encoder TO PUBLIC;
REVOKE ALL ON mmr._unservable FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mmr._notice_unsearchable(int) TO PUBLIC;
