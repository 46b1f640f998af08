-- The prefecture's retention purge (住基法 30-6 ③ / 30-41 ③) is run by 総務部市町村課 staff under a role of
-- its own: deleting history is not part of reporting errors (report_clerk) nor of any other role.
ALTER TABLE operator DROP CONSTRAINT operator_roles_check;
ALTER TABLE operator ADD CONSTRAINT operator_roles_check CHECK (cardinality(roles) > 0 AND roles <@ ARRAY[
    'provision_clerk', 'disclosure_clerk', 'auditor', 'administrator', 'report_clerk', 'retention_clerk']::text[]);
