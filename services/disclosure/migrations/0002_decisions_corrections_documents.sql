-- Decisions, the one extension (住基法 30-33 ②), correction cases (30-35) and the written notices (書面).
ALTER TABLE disclosure_case
    ADD COLUMN identity_verify_time  timestamptz,
    ADD COLUMN extension_reason      text,
    ADD COLUMN extension_deadline    date,
    ADD COLUMN extension_time        timestamptz,
    ADD COLUMN decide_time           timestamptz;

-- What each transition produced (document ids, report names); never personal data.
ALTER TABLE disclosure_case_event ADD COLUMN detail text NOT NULL DEFAULT '';

CREATE TABLE correction_case (
    id                      uuid PRIMARY KEY,
    request_id              text UNIQUE,
    disclosure_case_id      uuid NOT NULL REFERENCES disclosure_case (id),
    subject_resident_code   text NOT NULL,
    file                    smallint NOT NULL,
    items                   jsonb NOT NULL,          -- [{field, action, requested_value}]
    receive_time            timestamptz NOT NULL,
    state                   smallint NOT NULL,
    municipality_report     text,                    -- municipalityReports/{id} of the owning register
    report_version          bigint,                  -- the version the report found wrong
    report_fields           text[],
    resolving_version       bigint,
    wrong_value_recipients  jsonb NOT NULL DEFAULT '[]',
    opened_by               text NOT NULL,
    check_time              timestamptz,             -- when the background task last asked the register
    revision                integer NOT NULL DEFAULT 1,
    create_time             timestamptz NOT NULL DEFAULT now(),
    update_time             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX correction_case_by_receipt ON correction_case (receive_time DESC, id DESC);
-- The background task looks only at cases waiting for the municipality's 修正.
CREATE INDEX correction_case_awaiting ON correction_case (check_time NULLS FIRST) WHERE state = 6;

CREATE TABLE correction_case_event (
    case_id     uuid NOT NULL REFERENCES correction_case (id),
    seq         integer NOT NULL,
    state       smallint NOT NULL,
    actor       text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, seq)
);

-- 遅滞なく調査 (30-35): the investigation, step by step.
CREATE TABLE correction_step (
    case_id      uuid NOT NULL REFERENCES correction_case (id),
    seq          integer NOT NULL,
    description  text NOT NULL,
    actor        text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, seq)
);

-- Written notices as issued: never updated or deleted; the hashes and record versions are kept with them.
CREATE TABLE disclosure_document (
    id               uuid PRIMARY KEY,
    case_kind        text NOT NULL CHECK (case_kind IN ('disclosure', 'correction')),
    case_id          uuid NOT NULL,
    kind             smallint NOT NULL,
    addressee        text NOT NULL,
    pdf              bytea NOT NULL,
    json             text NOT NULL,
    pdf_sha256       text NOT NULL,
    json_sha256      text NOT NULL,
    record_versions  text[] NOT NULL,
    create_time      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disclosure_document_by_case ON disclosure_document (case_kind, case_id, create_time, id);

DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON correction_case TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT ON correction_case_event TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT ON correction_step TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT ON disclosure_document TO %I', runtime);
END $$;
