-- Identifiers a register keeps unique among persons beside the 住民票コード (identity: the keyed hash of the
-- 個人番号, 番号法 7 ②: one number, one person, never given to another). One row per key ever held, with
-- the person that holds or held it: the primary key is the constraint, so that two notifications giving
-- one number to two persons cannot both commit. `current` marks the keys of the person's current record.
CREATE TABLE person_key (
    key        bytea PRIMARY KEY,
    person_id  uuid NOT NULL REFERENCES person (id) ON DELETE CASCADE,
    current    boolean NOT NULL
);
CREATE INDEX person_key_person ON person_key (person_id);

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON person_key TO %I', current_setting('juki.runtime_role'));
END $$;
