-- Which HMAC key made each unique key (jukilib.keyring: a hash is the HMAC-SHA-256 digest followed by the
-- key's id, the bare digest for the key of a keyring without ids, `h0`). Derived from the hash itself, so
-- that every writer (SQL ingest, the initial load's COPY, the re-hash of `juki keys rotate --hmac`) records
-- it without knowing about it, and a row cannot name another key than the one that made it.
ALTER TABLE person_key ADD COLUMN hmac_key_id text NOT NULL GENERATED ALWAYS AS (
    CASE WHEN length(key) <= 32 THEN 'h0' ELSE encode(substring(key FROM 33), 'escape') END) STORED;
