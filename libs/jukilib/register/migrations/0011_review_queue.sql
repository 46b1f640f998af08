-- The review queue (DOMAIN §C: CONFLICT → manual review → possibly a 12-5 report): what the register could
-- not settle by itself, for the prefecture's staff to inspect and resolve.
--   kind 1 REFUSED_NOTIFICATION: a notification refused for a state conflict, kept with its content sealed
--          (AES-256-GCM under the register's keyring, as 個人番号 are) and no person named;
--   kind 2 CHARACTER_IDENTIFICATION: a record accepted with characters the register cannot identify
--          (private use, unassigned: 外字), naming the version and the fields for 文字同定;
--   kind 3 LONE_MOVE_HALF: a 転入 recorded while the old municipality still held the person, whose 転出 has
--          not arrived; listed once it has waited longer than the configured wait.
-- state 1 OPEN, 2 DISMISSED (with a reason), 3 REPORTED (turned into a 12-5 report), 4 SETTLED (the
-- register settled it: the refused notification was applied when resent, the 転出 half arrived).
CREATE TABLE review_item (
    id                      uuid PRIMARY KEY,
    kind                    smallint NOT NULL CHECK (kind IN (1, 2, 3)),
    state                   smallint NOT NULL DEFAULT 1 CHECK (state IN (1, 2, 3, 4)),
    rule                    text NOT NULL,
    municipality_code       text NOT NULL,
    notification_id         text NOT NULL,
    change_kind             smallint NOT NULL,
    person_id               uuid REFERENCES person (id) ON DELETE RESTRICT,
    version                 bigint,
    awaited_municipality    text,
    field_paths             text[] NOT NULL DEFAULT '{}',
    key_id                  text,
    nonce                   bytea,
    ciphertext              bytea,
    create_time             timestamptz NOT NULL DEFAULT now(),
    resolve_time            timestamptz,
    resolution_reason_code  text,
    report_id               uuid REFERENCES municipality_report (id) ON DELETE RESTRICT,
    UNIQUE (municipality_code, notification_id, kind),
    CHECK (kind <> 1 OR ciphertext IS NOT NULL),
    CHECK (kind = 1 OR (person_id IS NOT NULL AND version IS NOT NULL)),
    CHECK (kind <> 3 OR awaited_municipality IS NOT NULL)
);
CREATE INDEX review_item_queue ON review_item (state, create_time, id);
CREATE INDEX review_item_person ON review_item (person_id, version) WHERE person_id IS NOT NULL;
CREATE INDEX review_item_move ON review_item (person_id, awaited_municipality) WHERE kind = 3 AND state = 1;
DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON review_item TO %I', current_setting('juki.runtime_role'));
END $$;
