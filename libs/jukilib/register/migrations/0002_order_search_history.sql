-- Ordering, search and identifier history for the register engine.

-- Versions are ordered per person by (event date, notification time, municipality, notification id):
-- a late notification takes its place in history without overwriting newer current data.
CREATE INDEX person_version_order
    ON person_version (person_id, event_date, notify_time, municipality_code, notification_id);
CREATE INDEX person_version_by_receipt ON person_version (person_id, receive_time);

-- The 4-item search works on derived, non-destructive keys (DOMAIN §4.5 縮退); the record keeps the
-- name exactly as sent.
ALTER TABLE person
    ADD COLUMN name_key          text,
    ADD COLUMN kana_key          text,
    ADD COLUMN birth_year        integer,
    ADD COLUMN birth_month       integer,
    ADD COLUMN birth_day         integer,
    ADD COLUMN sex_code          text,
    ADD COLUMN municipality_code text;
CREATE INDEX person_search_name ON person (name_key, birth_year);
CREATE INDEX person_search_kana ON person (kana_key, birth_year);

-- Former 住民票コード: a lookup by a former code finds the person (住民票コード can change at the
-- person's request or ex officio, DOMAIN §2.2).
CREATE TABLE resident_code_history (
    resident_code  text PRIMARY KEY,
    person_id      uuid NOT NULL REFERENCES person (id),
    replaced_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resident_code_history_person ON resident_code_history (person_id);

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON resident_code_history TO %I', current_setting('juki.runtime_role'));
END $$;
