-- The keyed hash of a 個人番号 is kept once, in the engine's `person_key` (migration 0007, filled from this
-- table by 0103): the key's owner and whether it is the number of the current record. Finding a person by
-- number reads it there (`IndividualNumbers.person_of`), so the per-version copy of the hash and its index
-- only cost: every insert and every initial load wrote and indexed the same 32 bytes twice.
DROP INDEX IF EXISTS individual_number_lookup;
ALTER TABLE individual_number DROP COLUMN lookup_hash;
