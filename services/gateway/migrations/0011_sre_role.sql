-- The people who keep the system running (the seed's 24-hour monitoring of faults and unauthorised access)
-- work under a role of their own, `sre`: the catalogue grants it the operation log's status (counts and
-- positions) and nothing that holds personal data.
ALTER TABLE operator DROP CONSTRAINT operator_roles_check;
ALTER TABLE operator ADD CONSTRAINT operator_roles_check CHECK (cardinality(roles) > 0 AND roles <@ ARRAY[
    'provision_clerk', 'disclosure_clerk', 'auditor', 'administrator', 'report_clerk', 'retention_clerk',
    'sre']::text[]);
