-- The operation log (操作履歴): one row per call through the gateway, allowed or denied, written
-- before the answer leaves. The gateway's runtime role may only INSERT and SELECT it.
CREATE TABLE operation_log (
    sequence          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time              timestamptz NOT NULL,
    request_id        text NOT NULL,
    trace_id          text NOT NULL,
    organization      text NOT NULL,
    operator          text NOT NULL DEFAULT '',
    method            text NOT NULL,
    purpose           text NOT NULL DEFAULT '',
    legal_basis       text NOT NULL DEFAULT '',
    case_reference    text NOT NULL DEFAULT '',
    decision          smallint NOT NULL CHECK (decision IN (1, 2)),   -- 1 allowed, 2 denied
    reason            text NOT NULL,
    status            text NOT NULL,
    resident_codes    text[] NOT NULL DEFAULT '{}',
    disclosed_fields  text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX operation_log_by_time ON operation_log (time DESC);
CREATE INDEX operation_log_by_organization ON operation_log (organization, time DESC);
CREATE INDEX operation_log_by_resident_code ON operation_log USING gin (resident_codes);

DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON operation_log TO %I', runtime);
    EXECUTE format('GRANT SELECT ON schema_migrations TO %I', runtime);
END $$;
