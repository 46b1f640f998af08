-- The register engine's tables, created in the schema of the service that uses the engine
-- (identity or annex). Runs as the schema owner; the service's runtime role gets only what it needs.

-- One row per person: the current snapshot. Keyed by an internal id, since 住民票コード can change.
CREATE TABLE person (
    id               uuid PRIMARY KEY,
    resident_code    text NOT NULL UNIQUE,
    state            smallint NOT NULL CHECK (state IN (1, 2)),   -- 1 active, 2 removed (消除)
    current_version  bigint NOT NULL,    -- the version whose snapshot is current
    last_version     bigint NOT NULL,    -- the highest version number given out
    event_date       date NOT NULL,      -- 異動年月日 of the current version (ordering)
    record           jsonb NOT NULL,
    updated_at       timestamptz NOT NULL
);

-- Append-only history: one full snapshot per applied notification, with its change information.
CREATE TABLE person_version (
    person_id          uuid NOT NULL REFERENCES person (id),
    version            bigint NOT NULL CHECK (version >= 1),
    resident_code      text NOT NULL,
    state              smallint NOT NULL CHECK (state IN (1, 2)),
    record             jsonb NOT NULL,
    change_kind        smallint NOT NULL,
    change_reason      smallint NOT NULL,
    event_date         date NOT NULL,
    notify_time        timestamptz NOT NULL,
    receive_time       timestamptz NOT NULL,
    municipality_code  text NOT NULL,
    notification_id    text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (person_id, version)
);
CREATE INDEX person_version_resident_code ON person_version (resident_code);

-- Idempotency of ingest: (notifying municipality, notification id) → the version it produced.
CREATE TABLE notification_receipt (
    municipality_code  text NOT NULL,
    notification_id    text NOT NULL,
    request_digest     bytea NOT NULL,
    person_id          uuid NOT NULL,
    version            bigint NOT NULL,
    received_at        timestamptz NOT NULL,
    PRIMARY KEY (municipality_code, notification_id),
    FOREIGN KEY (person_id, version) REFERENCES person_version (person_id, version)
);

-- Transactional outbox towards the agency (30-7 / 30-42): written in the same transaction as the
-- version, delivered at least once with an idempotency key, in order per person.
CREATE TABLE outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    person_id        uuid NOT NULL,
    version          bigint NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    trace_parent     text,               -- W3C traceparent of the request that caused the change
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    FOREIGN KEY (person_id, version) REFERENCES person_version (person_id, version)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX outbox_undelivered_by_person ON outbox (person_id, id) WHERE state <> 'delivered';

-- History is append-only: the runtime role may insert and read versions and receipts, never change
-- or delete them.
DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON person TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT ON person_version TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT ON notification_receipt TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON outbox TO %I', runtime);
    EXECUTE format('GRANT SELECT ON schema_migrations TO %I', runtime);
END $$;
