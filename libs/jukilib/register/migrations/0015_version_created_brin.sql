-- Where a reconciliation after a restore starts (`jukilib.register.holdings`): the versions written since a
-- point in time. History is appended in time order, so a BRIN index on `created_at` (a few pages for the
-- whole file, next to nothing per insert) finds the recent blocks without reading the 1.9 M older rows a
-- plain scan reads (measured: `juki bench reconcile --persons 1900000`, docs/performance.md).
CREATE INDEX person_version_created_brin ON person_version USING brin (created_at);
