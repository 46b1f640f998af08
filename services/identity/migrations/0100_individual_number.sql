-- 個人番号 at rest (identity only; the engine's tables never hold it): one row per version,
-- AES-256-GCM with the key id of the row and the (person, version) as associated data, and a keyed
-- hash (HMAC-SHA-256) for lookups. The runtime role may insert and read; only the schema owner
-- re-encrypts (`juki keys rotate`).
CREATE TABLE individual_number (
    person_id    uuid NOT NULL,
    version      bigint NOT NULL,
    key_id       text NOT NULL,
    nonce        bytea NOT NULL,
    ciphertext   bytea NOT NULL,
    lookup_hash  bytea NOT NULL,
    PRIMARY KEY (person_id, version),
    FOREIGN KEY (person_id, version) REFERENCES person_version (person_id, version)
);
-- Lookups by the current or a former 個人番号 find the person.
CREATE INDEX individual_number_lookup ON individual_number (lookup_hash);
CREATE INDEX individual_number_key ON individual_number (key_id);

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON individual_number TO %I', current_setting('juki.runtime_role'));
END $$;
