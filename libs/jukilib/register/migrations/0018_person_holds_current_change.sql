-- A lookup answers with a person's current record and its current version's change information (kind,
-- reason, times, notifying municipality, notification id, when recorded). `person` already holds the record,
-- state, 住民票コード and event date of that version; it now holds the change information too, written by the
-- same statements that make a version current (`jukilib.register.store`, `jukilib.register.load.copy`). A
-- lookup, and the write path's read of the persons a batch changes, then read one row found by one index,
-- instead of that row and an index-only probe into the history's key (migration 0017): two structures
-- instead of three in what lookups keep in memory, and no dependency on the visibility map being current.
-- The history's key goes back to plain (person_id, version): nothing reads the columns 0017 put in it, and a
-- narrower key is cheaper to rebuild after an initial load and to keep in memory.
ALTER TABLE person
    ADD COLUMN change_kind smallint,
    ADD COLUMN change_reason smallint,
    ADD COLUMN notify_time timestamptz,
    ADD COLUMN receive_time timestamptz,
    ADD COLUMN notifying_municipality_code text,
    ADD COLUMN notification_id text,
    ADD COLUMN version_created_at timestamptz;

UPDATE person p
SET change_kind = v.change_kind, change_reason = v.change_reason, notify_time = v.notify_time,
    receive_time = v.receive_time, notifying_municipality_code = v.municipality_code,
    notification_id = v.notification_id, version_created_at = v.created_at
FROM person_version v
WHERE v.person_id = p.id AND v.version = p.current_version;

ALTER TABLE person
    ALTER COLUMN change_kind SET NOT NULL,
    ALTER COLUMN change_reason SET NOT NULL,
    ALTER COLUMN notify_time SET NOT NULL,
    ALTER COLUMN receive_time SET NOT NULL,
    ALTER COLUMN notifying_municipality_code SET NOT NULL,
    ALTER COLUMN notification_id SET NOT NULL,
    ALTER COLUMN version_created_at SET NOT NULL;

CREATE UNIQUE INDEX person_version_key_plain ON person_version (person_id, version);

DO $$
DECLARE
    referring text[];
    names text[];
    definitions text[];
BEGIN
    SELECT coalesce(array_agg(conrelid::regclass::text ORDER BY oid), '{}'),
           coalesce(array_agg(quote_ident(conname) ORDER BY oid), '{}'),
           coalesce(array_agg(pg_get_constraintdef(oid) ORDER BY oid), '{}')
    INTO referring, names, definitions
    FROM pg_constraint WHERE contype = 'f' AND confrelid = 'person_version'::regclass;
    FOR i IN 1 .. cardinality(names) LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %s', referring[i], names[i]);
    END LOOP;
    ALTER TABLE person_version DROP CONSTRAINT person_version_pkey;
    ALTER TABLE person_version ADD CONSTRAINT person_version_pkey PRIMARY KEY USING INDEX person_version_key_plain;
    FOR i IN 1 .. cardinality(names) LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %s %s', referring[i], names[i], definitions[i]);
    END LOOP;
END
$$;
