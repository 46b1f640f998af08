-- 番号法 7 ②: the numbers the file already holds enter `person_key` (engine migration 0007), so that the
-- rule "one 個人番号, one person" and "changed only by its reasons" holds for every person, not only for
-- those recorded after it: each keyed hash with the person that has it, current where it is the number
-- of the person's current record. A hash found with two persons (recorded before the rule) stays with the
-- one whose version was stored first; the other's history keeps its rows in individual_number.
INSERT INTO person_key (key, person_id, current)
SELECT DISTINCT ON (n.lookup_hash) n.lookup_hash, n.person_id, false
FROM individual_number n JOIN person_version v ON v.person_id = n.person_id AND v.version = n.version
ORDER BY n.lookup_hash, v.created_at, n.person_id
ON CONFLICT (key) DO NOTHING;

UPDATE person_key k SET current = true
FROM person p JOIN individual_number n ON n.person_id = p.id AND n.version = p.current_version
WHERE k.key = n.lookup_hash AND k.person_id = p.id;
