-- 住基法 12-5: a report closes with its outcome: corrected by the municipality's notification (1), or answered
-- "no error found" with the municipality's reason (2). Reports resolved before were resolved by a 修正.
ALTER TABLE municipality_report
    ADD COLUMN outcome smallint CHECK (outcome IN (1, 2)),
    ADD COLUMN answer_reason_code text;
UPDATE municipality_report SET outcome = 1 WHERE state = 3;
ALTER TABLE municipality_report
    ADD CONSTRAINT municipality_report_closed_with_outcome CHECK ((state = 3) = (outcome IS NOT NULL));
