-- The evidence of the prefecture's own oversight (issue 19): reviews of the operation log (自己点検, 内部監査)
-- and the incident register (漏えい等の事案, with the fields of a report to the Personal Information Protection
-- Commission). Kept beside the log; every change is also a call in the log. Neither table holds a resident's
-- data: findings refer to the log's sequence numbers.
CREATE TABLE audit_review (
    id               uuid PRIMARY KEY,
    reviewer         text NOT NULL,
    start_time       timestamptz NOT NULL,
    end_time         timestamptz NOT NULL CHECK (end_time > start_time),
    findings         text NOT NULL,
    follow_up        text NOT NULL,
    entry_sequences  bigint[] NOT NULL DEFAULT '{}',
    create_time      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_review_newest ON audit_review (create_time DESC, id);

CREATE TABLE incident (
    id                      uuid PRIMARY KEY,
    state                   text NOT NULL CHECK (state IN ('open', 'reported', 'closed')),
    occur_time              timestamptz NOT NULL,
    discover_time           timestamptz NOT NULL,
    summary                 text NOT NULL,
    data_items              text[] NOT NULL,
    persons_affected        bigint NOT NULL CHECK (persons_affected >= 0),
    cause                   text NOT NULL DEFAULT '',
    secondary_damage        text NOT NULL DEFAULT '',
    persons_notified        text NOT NULL DEFAULT '',
    publication             text NOT NULL DEFAULT '',
    prevention_measures     text NOT NULL DEFAULT '',
    serious                 boolean NOT NULL DEFAULT false,
    commission_report_time  timestamptz,
    recorded_by             text NOT NULL,
    create_time             timestamptz NOT NULL DEFAULT now(),
    update_time             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incident_newest ON incident (discover_time DESC, id);

DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    -- A review, once recorded, is never changed nor removed; an incident is updated as it is handled.
    EXECUTE format('GRANT SELECT, INSERT ON audit_review TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON incident TO %I', runtime);
END $$;
