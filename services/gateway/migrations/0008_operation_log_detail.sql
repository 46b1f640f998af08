-- What a call changed or asked, for the calls where the method alone does not say it (issue 19): an
-- administrative change with its target, before and after (roles, status, validity); an operator's log-in
-- or refused log-in; an owner or maintenance action (bootstrap, key rotation, load, restore); the items a
-- search gave, with a keyed hash of each value instead of the value. Canonical JSON text, never a name,
-- an address, a date of birth or a number in clear. Rows written before have none: the chain hash covers
-- the column only when it is not empty, so their hashes stay valid.
ALTER TABLE operation_log ADD COLUMN detail text NOT NULL DEFAULT '';
-- The few entries with a detail (registry changes, log-ins, maintenance), found without reading the log's
-- millions of calls: `juki audit who-could` replays them.
CREATE INDEX operation_log_with_detail ON operation_log (sequence) WHERE detail <> '';
