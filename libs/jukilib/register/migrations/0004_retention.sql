-- Retention: purging a version or a removed person takes its dependent rows with it. Only the schema
-- owner deletes (`juki retention purge`); the runtime role still cannot.
ALTER TABLE notification_receipt DROP CONSTRAINT notification_receipt_person_id_version_fkey,
    ADD FOREIGN KEY (person_id, version) REFERENCES person_version (person_id, version) ON DELETE CASCADE;
ALTER TABLE outbox DROP CONSTRAINT outbox_person_id_version_fkey,
    ADD FOREIGN KEY (person_id, version) REFERENCES person_version (person_id, version) ON DELETE CASCADE;
ALTER TABLE municipality_report DROP CONSTRAINT municipality_report_person_id_version_fkey,
    ADD FOREIGN KEY (person_id, version) REFERENCES person_version (person_id, version) ON DELETE CASCADE;
ALTER TABLE municipality_report DROP CONSTRAINT municipality_report_person_id_fkey,
    ADD FOREIGN KEY (person_id) REFERENCES person (id) ON DELETE CASCADE;
ALTER TABLE person_version DROP CONSTRAINT person_version_person_id_fkey,
    ADD FOREIGN KEY (person_id) REFERENCES person (id) ON DELETE CASCADE;
ALTER TABLE resident_code_history DROP CONSTRAINT resident_code_history_person_id_fkey,
    ADD FOREIGN KEY (person_id) REFERENCES person (id) ON DELETE CASCADE;

-- What every purge did: when, under which rules, how much.
CREATE TABLE retention_run (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_at               timestamptz NOT NULL DEFAULT now(),
    superseded_years     numeric NOT NULL,
    removed_years        numeric NOT NULL,
    dry_run              boolean NOT NULL,
    versions_purged      bigint NOT NULL,
    persons_purged       bigint NOT NULL
);
DO $$
BEGIN
    EXECUTE format('GRANT SELECT ON retention_run TO %I', current_setting('juki.runtime_role'));
END $$;
