-- The stand-in agency's copy of what prefectures forwarded (30-7, 30-42), one row per change,
-- keyed by the prefecture's idempotency key so a retried change is applied once.
CREATE TABLE received_change (
    idempotency_key  text PRIMARY KEY,
    register         text NOT NULL CHECK (register IN ('identity', 'annex')),
    resident_code    text NOT NULL,
    version          bigint NOT NULL,
    payload          bytea NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX received_change_by_resident ON received_change (register, resident_code, received_at DESC);

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON received_change TO %I', current_setting('juki.runtime_role'));
    EXECUTE format('GRANT SELECT ON schema_migrations TO %I', current_setting('juki.runtime_role'));
END $$;
