-- Most changes of a person's record (転居, 転籍, a change of household) rewrite its current row in `person`
-- without touching an indexed column (the 住民票コード, the name and kana search keys, the birth year), so
-- PostgreSQL can update the row in place on its page (a HOT update: no new entry in any of the table's four
-- indexes) when the page has room. A freshly loaded table has none: fill factor 90 leaves a tenth of each
-- page free for the changes to come. New pages (the initial load, new persons) get it at once; pages written
-- before this migration get it when rewritten (VACUUM FULL or pg_repack, in a maintenance window).
ALTER TABLE person SET (fillfactor = 90);
