-- Reports to municipalities of omissions and errors (住基法 12-5), from the agency's error reports
-- (30-8), from correction requests found justified (30-35) or from the prefecture's own findings.
CREATE TABLE municipality_report (
    id                 uuid PRIMARY KEY,
    request_id         text UNIQUE,
    person_id          uuid NOT NULL REFERENCES person (id),
    version            bigint NOT NULL,          -- the version found wrong
    municipality_code  text NOT NULL,            -- addressed to the municipality that notified it
    source             smallint NOT NULL CHECK (source IN (1, 2, 3)),
    reason_code        text NOT NULL,
    fields             text[] NOT NULL,
    origin_reference   text NOT NULL DEFAULT '',
    state              smallint NOT NULL DEFAULT 1 CHECK (state IN (1, 2, 3)),   -- open, acknowledged, resolved
    create_time        timestamptz NOT NULL DEFAULT now(),
    acknowledge_time   timestamptz,
    resolve_time       timestamptz,
    resolving_version  bigint,
    FOREIGN KEY (person_id, version) REFERENCES person_version (person_id, version)
);
CREATE INDEX municipality_report_open ON municipality_report (person_id, municipality_code) WHERE state <> 3;
CREATE INDEX municipality_report_by_municipality ON municipality_report (municipality_code, create_time);

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON municipality_report TO %I', current_setting('juki.runtime_role'));
END $$;
