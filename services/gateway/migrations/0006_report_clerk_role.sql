-- The prefecture's 12-5 desk (総務部市町村課): its staff list reports to municipalities and make reports of
-- their own finding under a role of their own, not as provision or disclosure clerks.
ALTER TABLE operator DROP CONSTRAINT operator_roles_check;
ALTER TABLE operator ADD CONSTRAINT operator_roles_check CHECK (cardinality(roles) > 0 AND roles <@ ARRAY[
    'provision_clerk', 'disclosure_clerk', 'auditor', 'administrator', 'report_clerk']::text[]);
