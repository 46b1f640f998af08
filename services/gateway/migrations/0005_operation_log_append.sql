-- A group commit of the operation log in one round trip, safe with several gateway replicas, without
-- an error when another replica appended first.
--
-- The writer numbers and chains its batch in Python after the tail it last committed and hands it
-- here with that tail. The function takes the chain's advisory lock (held to the end of the calling
-- statement's transaction), then reads the real tail: a VOLATILE function's statements each take a
-- fresh snapshot, so this read sees every record committed before the lock was granted. When the
-- real tail is the writer's, the batch (and the checkpoint, when one is due) is inserted and nothing
-- is returned; otherwise nothing is written and the real tail is returned, for the writer to chain
-- its batch again after it. `sequence` stays the primary key: whatever happens, no two records share
-- a number, so the chain cannot fork.
CREATE FUNCTION append_operation_log(
    entries operation_log[], after_sequence bigint, after_hash bytea,
    checkpoint_key_id text, checkpoint_signature bytea, checkpoint_signed_at timestamptz)
RETURNS TABLE (tail_sequence bigint, tail_hash bytea)
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $$
DECLARE
    real_sequence bigint;
    real_hash bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('juki.operation_log'));
    SELECT l.sequence, l.entry_hash INTO real_sequence, real_hash
    FROM operation_log l ORDER BY l.sequence DESC LIMIT 1;
    IF coalesce(real_sequence, 0) <> after_sequence
       OR (real_sequence IS NOT NULL AND real_hash IS DISTINCT FROM after_hash) THEN
        RETURN QUERY SELECT coalesce(real_sequence, 0), real_hash;
        RETURN;
    END IF;
    INSERT INTO operation_log SELECT e.* FROM unnest(entries) AS e;
    IF checkpoint_signature IS NOT NULL THEN
        INSERT INTO operation_log_checkpoint (sequence, entry_hash, key_id, signature, signed_at)
        SELECT e.sequence, e.entry_hash, checkpoint_key_id, checkpoint_signature, checkpoint_signed_at
        FROM unnest(entries) AS e ORDER BY e.sequence DESC LIMIT 1;
    END IF;
END $$;

REVOKE ALL ON FUNCTION append_operation_log(operation_log[], bigint, bytea, text, bytea, timestamptz) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION append_operation_log(operation_log[], bigint, bytea, text, bytea, '
                   'timestamptz) TO %I', current_setting('juki.runtime_role'));
END $$;
