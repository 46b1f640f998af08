-- Usage-suspension cases (利用停止請求, 個人情報保護法 98 … 102; 番号法 30 for 特定個人情報) and their events.
CREATE TABLE usage_suspension_case (
    id                     uuid PRIMARY KEY,
    request_id             text UNIQUE,
    subject_resident_code  text NOT NULL,
    resident_codes         text[] NOT NULL,     -- every 住民票コード the person has had, the subject's first
    requester_kind         smallint NOT NULL,
    requester_name         text NOT NULL,
    identity_documents     smallint[] NOT NULL,
    channel                smallint NOT NULL,
    purposes               text[] NOT NULL,     -- catalogue codes whose use or provision the request asks to stop
    ground                 smallint NOT NULL,
    receive_time           timestamptz NOT NULL,
    state                  smallint NOT NULL,
    decision               smallint NOT NULL DEFAULT 0,
    decision_reason        text NOT NULL DEFAULT '',
    stopped_purposes       text[] NOT NULL DEFAULT '{}',
    deadline               date NOT NULL,
    target_date            date NOT NULL,
    extension_reason       text,
    extension_deadline     date,
    extension_time         timestamptz,
    opened_by              text NOT NULL,
    revision               integer NOT NULL DEFAULT 1,
    create_time            timestamptz NOT NULL DEFAULT now(),
    update_time            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_suspension_case_by_receipt ON usage_suspension_case (receive_time DESC, id DESC);

CREATE TABLE usage_suspension_case_event (
    case_id     uuid NOT NULL REFERENCES usage_suspension_case (id),
    seq         integer NOT NULL,
    state       smallint NOT NULL,
    actor       text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, seq)
);

-- The written notices of usage-suspension cases live with the others.
ALTER TABLE disclosure_document DROP CONSTRAINT disclosure_document_case_kind_check;
ALTER TABLE disclosure_document ADD CONSTRAINT disclosure_document_case_kind_check
    CHECK (case_kind IN ('disclosure', 'correction', 'suspension'));

DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON usage_suspension_case TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT ON usage_suspension_case_event TO %I', runtime);
END $$;
