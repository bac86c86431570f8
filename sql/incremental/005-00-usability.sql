-- Revision 0005 runs every incremental/005-*.sql file in name order; each feature has its own
-- file after this one.
SELECT 1;
