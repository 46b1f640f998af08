-- `juki keys rotate` finds the rows sealed under an older key with `key_id <> <active key>`: a btree
-- cannot serve an inequality on a column of a few distinct values, so the planner never used this
-- index, while every insert and every initial load (about 2 s of its rebuild for 1.9 M persons) paid
-- for it.
DROP INDEX IF EXISTS individual_number_key;
