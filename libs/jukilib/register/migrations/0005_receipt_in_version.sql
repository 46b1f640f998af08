-- Idempotency of ingest kept on the version itself. A receipt was one-to-one with the version its
-- notification made (the engine and `juki load` write exactly one per version, and a purge took it with
-- its version), so its digest becomes a column of person_version and (municipality, notification id) a
-- unique key of it. Per notification that is one row, one index entry and one foreign-key check fewer:
-- the row-by-row key checks were a third of PostgreSQL's time per streamed notification.
ALTER TABLE person_version ADD COLUMN request_digest bytea;
UPDATE person_version v SET request_digest = r.request_digest
    FROM notification_receipt r
    WHERE r.person_id = v.person_id AND r.version = v.version
      AND r.municipality_code = v.municipality_code AND r.notification_id = v.notification_id;
-- A version without its receipt would make this fail, and the migration change nothing.
ALTER TABLE person_version ALTER COLUMN request_digest SET NOT NULL;
ALTER TABLE person_version ADD CONSTRAINT person_version_notification_key UNIQUE (municipality_code, notification_id);
DROP TABLE notification_receipt;
