-- The operation log becomes a hash chain written by one group-commit writer per batch: the writer
-- numbers the records itself (no gaps), links each to the previous one, and signs checkpoints.
ALTER TABLE operation_log ALTER COLUMN sequence DROP IDENTITY IF EXISTS;
ALTER TABLE operation_log
    ADD COLUMN prev_hash   bytea,
    ADD COLUMN entry_hash  bytea;

-- Signed checkpoints (Ed25519) of the chain head, every N records or T seconds.
CREATE TABLE operation_log_checkpoint (
    sequence    bigint PRIMARY KEY REFERENCES operation_log (sequence),
    entry_hash  bytea NOT NULL,
    signed_at   timestamptz NOT NULL DEFAULT now(),
    key_id      text NOT NULL,
    signature   bytea NOT NULL
);

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON operation_log_checkpoint TO %I', current_setting('juki.runtime_role'));
END $$;
