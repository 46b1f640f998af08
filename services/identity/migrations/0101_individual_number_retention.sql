-- Retention purges take the encrypted 個人番号 of a purged version with it.
ALTER TABLE individual_number DROP CONSTRAINT individual_number_person_id_version_fkey,
    ADD FOREIGN KEY (person_id, version) REFERENCES person_version (person_id, version) ON DELETE CASCADE;
