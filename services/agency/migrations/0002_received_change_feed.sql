-- ListReceivedChanges (reconciliation after a restore, issue 20): a change's place in the list is the
-- transaction that recorded it. The list answers only changes of transactions older than every transaction
-- still running (pg_snapshot_xmin), so a reader that moved past a position never misses a change that
-- commits later. Existing changes get the migration's transaction (they come first, in one block).
ALTER TABLE received_change ADD COLUMN commit_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX received_change_feed ON received_change (register, commit_xid, idempotency_key);
