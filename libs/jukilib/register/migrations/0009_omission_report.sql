-- 住基法 12-5 (脱漏): a report of a person missing from the file names no person or version yet, only the
-- 住民票コード and the municipality that should have recorded them; the 記載 that resolves it fills in the
-- person.
ALTER TABLE municipality_report
    ALTER COLUMN person_id DROP NOT NULL,
    ALTER COLUMN version DROP NOT NULL,
    ADD COLUMN resident_code text,
    ADD CONSTRAINT municipality_report_names_someone CHECK (person_id IS NOT NULL OR resident_code IS NOT NULL);
CREATE INDEX municipality_report_omission ON municipality_report (resident_code) WHERE person_id IS NULL;
