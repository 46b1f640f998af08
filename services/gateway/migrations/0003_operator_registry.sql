-- The operator registry (操作者の管理; 技術的基準 平成14年総務省告示第334号: 操作者の識別及び認証) and the
-- status of calling organisations. Owned by the gateway; managed through OperatorAdminService.
-- Operator ids are opaque staff ids, never names: they go to the operation log.
CREATE TABLE operator (
    operator_id   text PRIMARY KEY CHECK (operator_id ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
    organization  text NOT NULL,
    roles         text[] NOT NULL CHECK (cardinality(roles) > 0 AND roles <@ ARRAY[
                      'provision_clerk', 'disclosure_clerk', 'auditor', 'administrator']::text[]),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    valid_from    timestamptz NOT NULL DEFAULT now(),
    valid_until   timestamptz,
    created_by    text NOT NULL,
    updated_by    text NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    update_time   timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX operator_by_organization ON operator (organization, operator_id);

-- Organisations are defined by the policy catalogue; this table only records a disabled one (and
-- when it was enabled again). A disabled organisation is refused whatever its certificate.
CREATE TABLE organization_status (
    organization  text PRIMARY KEY,
    status        text NOT NULL CHECK (status IN ('active', 'disabled')),
    updated_by    text NOT NULL,
    update_time   timestamptz NOT NULL DEFAULT now()
);

-- Records provided per JST day, purpose, organisation and operator ('' = the organisation's total),
-- for the catalogue's volume caps; counted in the database so the cap holds across replicas.
CREATE TABLE volume_counter (
    day           date NOT NULL,
    purpose       text NOT NULL,
    organization  text NOT NULL,
    operator      text NOT NULL,
    records       bigint NOT NULL CHECK (records >= 0),
    PRIMARY KEY (day, purpose, organization, operator)
);

DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    -- No DELETE: an operator is disabled, never erased (the operation log keeps naming them).
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON operator, organization_status TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON volume_counter TO %I', runtime);
END $$;
