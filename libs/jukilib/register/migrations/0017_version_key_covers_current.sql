-- A lookup reads a person's current row and its current version's change information (kind, reason, times,
-- notifying municipality, notification id, when recorded); the record itself is in `person`
-- (`jukilib.register.store._CURRENT_COLUMNS`). With that information in the history's primary key index
-- (INCLUDE), PostgreSQL reads the version from the index alone (an index-only scan) and a lookup does not
-- read the history's rows, which are as large as the persons': what lookups keep in memory falls from
-- person + history + two indexes to person + two indexes (about 0.77 GB per million persons instead of 1.29;
-- docs/performance.md, "Cost flat with size"). The key stays (person_id, version); the tables that refer to
-- it keep their foreign keys, dropped and added again around the swap of the key's index.
CREATE UNIQUE INDEX person_version_key_covering ON person_version (person_id, version)
    INCLUDE (change_kind, change_reason, notify_time, receive_time, municipality_code, notification_id, created_at);

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
    ALTER TABLE person_version ADD CONSTRAINT person_version_pkey PRIMARY KEY USING INDEX person_version_key_covering;
    FOR i IN 1 .. cardinality(names) LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %s %s', referring[i], names[i], definitions[i]);
    END LOOP;
END
$$;
