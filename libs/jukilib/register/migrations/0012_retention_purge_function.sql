-- Retention through an audited path (住基法 30-6 ③ / 30-41 ③; DOMAIN §A.5). The purge is an RPC reached only
-- through the gateway, whose operation log records who ran it; the service's runtime role still cannot
-- DELETE, and gets this one function instead, owned by the schema owner (SECURITY DEFINER). The function
-- itself enforces what no caller may change: the periods (150 years at least), and that evidence stays.

-- Each run joins the gateway's operation log by its request id (x-request-id, as the log records it).
ALTER TABLE retention_run
    ADD COLUMN request_id       text,
    ADD COLUMN idempotency_key  text UNIQUE,
    ADD COLUMN operator         text,
    ADD COLUMN versions_held    bigint,
    ADD COLUMN persons_held     bigint;

-- The bounds of a retention period, the one place they are written: the RPC asks this function to name the
-- bad field before anything else, and the purge refuses on it. NULL is the default (150 years). 150 years
-- mirrors 令34 for the municipal copy (the prefecture's own article is UNVERIFIED: the stricter reading);
-- beyond 1,000 years the cut-off would precede any date PostgreSQL keeps. NaN sorts above every number
-- in PostgreSQL, so it is refused by name.
CREATE FUNCTION retention_period_problems(superseded_years float8, removed_years float8)
RETURNS TABLE (field text, description text)
LANGUAGE sql IMMUTABLE
SET search_path FROM CURRENT
AS $$
    SELECT given.field,
           CASE WHEN given.years = 'NaN' OR given.years < 150 THEN 'must be at least 150 years'
                ELSE 'must be at most 1000 years' END
    FROM (VALUES (1, 'superseded_years', superseded_years), (2, 'removed_years', removed_years))
         AS given (position, field, years)
    WHERE given.years IS NOT NULL AND (given.years = 'NaN' OR given.years < 150 OR given.years > 1000)
    ORDER BY given.position
$$;

-- The purge. `held_resident_codes` are the 住民票コード the disclosure service names as subjects of open
-- cases (the register never reads that service's tables); a person is held by a current or former code.
-- Never purged: a version the agency has not acknowledged (30-7 / 30-42), a current version, and evidence:
-- a version or person named by a 12-5 report or by a review item (whatever its state), a person an open
-- disclosure or correction case is about. A repeated `idempotency_key` answers the run already made.
-- pg_temp is searched last (appended below before FROM CURRENT captures the path): a caller's temporary
-- table never stands in for one of the register's in this owner's function.
SELECT set_config('search_path', current_setting('search_path') || ', pg_temp', true);
CREATE FUNCTION purge_expired_records(
    superseded_years float8, removed_years float8, dry_run boolean, held_resident_codes text[],
    request_id text, idempotency_key text, operator text)
RETURNS TABLE (run_id bigint, versions_purged bigint, persons_purged bigint, versions_held bigint,
               persons_held bigint, applied_superseded_years numeric, applied_removed_years numeric,
               applied_dry_run boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    problem record;
    superseded float8 := coalesce(superseded_years, 150);
    removed float8 := coalesce(removed_years, 150);
    held uuid[];
    gone_version_persons uuid[];
    gone_versions bigint[];
    kept_versions bigint;
    gone_persons uuid[];
    kept_persons bigint;
    run bigint;
BEGIN
    FOR problem IN SELECT p.field, p.description FROM retention_period_problems(superseded_years, removed_years) p
    LOOP
        RAISE EXCEPTION '% %', problem.field, problem.description
            USING ERRCODE = 'invalid_parameter_value', COLUMN = problem.field;
    END LOOP;
    -- One purge at a time per register: a repeated key waits for the run it repeats.
    PERFORM pg_advisory_xact_lock(hashtext('juki.retention.' || current_schema()));
    IF purge_expired_records.idempotency_key IS NOT NULL THEN
        RETURN QUERY SELECT r.id, r.versions_purged, r.persons_purged, r.versions_held, r.persons_held,
                            r.superseded_years, r.removed_years, r.dry_run
                     FROM retention_run r WHERE r.idempotency_key = purge_expired_records.idempotency_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    held := ARRAY(SELECT p.id FROM person p WHERE p.resident_code = ANY (held_resident_codes)
                  UNION SELECT h.person_id FROM resident_code_history h
                        WHERE h.resident_code = ANY (held_resident_codes)
                  UNION SELECT v.person_id FROM person_version v WHERE v.resident_code = ANY (held_resident_codes));

    -- Superseded versions: a version is superseded when a newer one (in event order) arrived.
    WITH ordered AS (
        SELECT v.person_id, v.version, v.receive_time,
               lead(v.receive_time) OVER (PARTITION BY v.person_id
                   ORDER BY v.event_date, v.notify_time, v.municipality_code, v.notification_id) AS next_received
        FROM person_version v
    ), expired AS (
        SELECT o.person_id, o.version,
               o.person_id = ANY (held)
               OR EXISTS (SELECT 1 FROM municipality_report m WHERE m.person_id = o.person_id
                          AND o.version IN (m.version, m.resolving_version))
               OR EXISTS (SELECT 1 FROM review_item i WHERE i.person_id = o.person_id AND i.version = o.version)
               AS evidence
        FROM ordered o JOIN person p ON p.id = o.person_id
        WHERE o.next_received IS NOT NULL
          AND greatest(o.receive_time, o.next_received) < now() - make_interval(secs => superseded * 365.2425 * 86400)
          AND o.version <> p.current_version
          AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.person_id = o.person_id AND x.version = o.version
                          AND x.state <> 'delivered')
    )
    SELECT coalesce(array_agg(e.person_id) FILTER (WHERE NOT e.evidence), '{}'),
           coalesce(array_agg(e.version) FILTER (WHERE NOT e.evidence), '{}'),
           count(*) FILTER (WHERE e.evidence)
    INTO gone_version_persons, gone_versions, kept_versions FROM expired e;

    -- Removed persons: the current version is a 消除, received longer ago than the period.
    WITH expired AS (
        SELECT p.id,
               p.id = ANY (held)
               OR EXISTS (SELECT 1 FROM municipality_report m WHERE m.person_id = p.id)
               OR EXISTS (SELECT 1 FROM review_item i WHERE i.person_id = p.id)
               AS evidence
        FROM person p JOIN person_version v ON v.person_id = p.id AND v.version = p.current_version
        WHERE p.state = 2
          AND v.receive_time < now() - make_interval(secs => removed * 365.2425 * 86400)
          AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.person_id = p.id AND x.state <> 'delivered')
    )
    SELECT coalesce(array_agg(e.id) FILTER (WHERE NOT e.evidence), '{}'), count(*) FILTER (WHERE e.evidence)
    INTO gone_persons, kept_persons FROM expired e;

    IF NOT purge_expired_records.dry_run THEN
        DELETE FROM person_version v USING unnest(gone_version_persons, gone_versions) AS gone (person_id, version)
        WHERE v.person_id = gone.person_id AND v.version = gone.version;
        DELETE FROM person p WHERE p.id = ANY (gone_persons);
    END IF;
    INSERT INTO retention_run (superseded_years, removed_years, dry_run, versions_purged, persons_purged,
                               versions_held, persons_held, request_id, idempotency_key, operator)
    VALUES (superseded, removed, purge_expired_records.dry_run, cardinality(gone_versions),
            cardinality(gone_persons), kept_versions, kept_persons, purge_expired_records.request_id,
            purge_expired_records.idempotency_key, purge_expired_records.operator)
    RETURNING id INTO run;
    RETURN QUERY SELECT r.id, r.versions_purged, r.persons_purged, r.versions_held, r.persons_held,
                        r.superseded_years, r.removed_years, r.dry_run
                 FROM retention_run r WHERE r.id = run;
END $$;

REVOKE ALL ON FUNCTION retention_period_problems(float8, float8) FROM PUBLIC;
REVOKE ALL ON FUNCTION purge_expired_records(float8, float8, boolean, text[], text, text, text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION retention_period_problems(float8, float8) TO %I',
                   current_setting('juki.runtime_role'));
    EXECUTE format('GRANT EXECUTE ON FUNCTION purge_expired_records(float8, float8, boolean, text[], text, text, '
                   'text) TO %I', current_setting('juki.runtime_role'));
END $$;
