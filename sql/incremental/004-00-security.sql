-- Revision 0004 (security hardening) runs every incremental/004-*.sql file in name order;
-- each area of the change has its own file after this one.
SELECT 1;
