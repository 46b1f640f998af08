-- Disclosure cases (開示請求, 住基法 30-32; annex via 30-44-13) and their append-only event history.
CREATE TABLE disclosure_case (
    id                     uuid PRIMARY KEY,
    request_id             text UNIQUE,
    subject_resident_code  text NOT NULL,
    requester_kind         smallint NOT NULL,
    requester_name         text NOT NULL,
    identity_documents     smallint[] NOT NULL,
    channel                smallint NOT NULL,
    scopes                 smallint[] NOT NULL,
    receive_time           timestamptz NOT NULL,
    state                  smallint NOT NULL,
    deadline               date NOT NULL,
    target_date            date NOT NULL,
    opened_by              text NOT NULL,     -- organisation (and operator) that opened the case
    revision               integer NOT NULL DEFAULT 1,
    create_time            timestamptz NOT NULL DEFAULT now(),
    update_time            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disclosure_case_open_by_deadline ON disclosure_case (deadline) WHERE state <> 9;
CREATE INDEX disclosure_case_by_receipt ON disclosure_case (receive_time DESC, id DESC);

CREATE TABLE disclosure_case_event (
    case_id     uuid NOT NULL REFERENCES disclosure_case (id),
    seq         integer NOT NULL,
    state       smallint NOT NULL,
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, seq)
);

DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON disclosure_case TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT ON disclosure_case_event TO %I', runtime);
    EXECUTE format('GRANT SELECT ON schema_migrations TO %I', runtime);
END $$;
