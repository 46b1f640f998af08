-- The relay claims each change by stamping its lease on the outbox row (`claimed_until`, `claim_token`), then
-- marks it delivered (住基法 30-7 / 30-42 forwarding). The lease's columns are in no index, so the claim can
-- be a HOT update (the row's new version on the same page, no new entry in any of the table's four indexes),
-- but only when the page has room: the outbox is written once at its end, its pages full. Measured with
-- `juki bench sizes` (pg_stat_statements): each claim of a batch cost ~3,000 blocks, ~16 per row, most of it
-- index entries for the lease and the dead entries they leave in the pending index. Fill factor 50 leaves
-- half of each new page for the row's claim and delivery. Pages written before this migration keep none.
ALTER TABLE outbox SET (fillfactor = 50);
