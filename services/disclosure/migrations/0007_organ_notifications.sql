-- Notices to the organs that received a value a municipality's 修正 corrected (住基法 30-35 follow-up), for the
-- 修正 no correction case handles: the municipality's own 誤記修正 / 職権修正, a 12-5 report of the prefecture or
-- of the agency (30-8). One row per 修正 (file, person, version), made once across replicas: the follow-up's own
-- case (`organNotifications/{id}`), open (1) while the person's history and provisions are read for it (the
-- gateway asks, GetCaseStatus), done (2) once its notices are issued, in one transaction; its notices are
-- documents of case kind `organ` (`organNotifications/{id}/documents/{id}`).
CREATE TABLE organ_notification (
    id                     uuid PRIMARY KEY,
    file                   smallint NOT NULL,
    person                 text NOT NULL,         -- the register's person, e.g. residents/{id}
    version                bigint NOT NULL,       -- the 修正 version
    previous_version       bigint NOT NULL,       -- the version it corrected
    state                  smallint NOT NULL DEFAULT 1 CHECK (state IN (1, 2)),   -- 1 following, 2 done
    subject_resident_code  text NOT NULL DEFAULT '',   -- the person's 住民票コード (when done): reads are logged under it
    field_paths            text[] NOT NULL,       -- the fields the 修正 changed
    recipients             text[] NOT NULL DEFAULT '{}',  -- the organisations notified (codes), none when nobody received a value
    correction_case_id     uuid,                  -- a correction case that notifies for this 修正 itself (then no notices here)
    create_time            timestamptz NOT NULL DEFAULT now(),
    complete_time          timestamptz,
    UNIQUE (file, person, version)
);
CREATE INDEX organ_notification_by_time ON organ_notification (create_time, id) WHERE state = 2;

-- Where the follower of each register's feed of 修正 (ListModifications) stands: the last page token.
CREATE TABLE modification_cursor (
    file        smallint PRIMARY KEY,
    page_token  text NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE disclosure_document DROP CONSTRAINT disclosure_document_case_kind_check;
ALTER TABLE disclosure_document ADD CONSTRAINT disclosure_document_case_kind_check
    CHECK (case_kind IN ('disclosure', 'correction', 'suspension', 'organ'));

DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON organ_notification TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON modification_cursor TO %I', runtime);
END $$;
