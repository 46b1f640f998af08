-- The feed of 修正 versions (ListModifications): the disclosure service follows it to tell every organ that
-- received a value a municipality corrected (住基法 30-35 follow-up). A version's place in the feed is the
-- transaction that wrote it: the feed answers only versions of transactions older than every transaction
-- still running (pg_snapshot_xmin), so a reader that moved past a position never misses a version that
-- commits later. Existing versions get the migration's transaction (they come first, in one block).
ALTER TABLE person_version ADD COLUMN commit_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX person_version_modification_feed ON person_version (commit_xid, person_id, version)
    WHERE change_kind = 3;
