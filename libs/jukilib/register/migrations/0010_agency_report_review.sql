-- 住基法 30-8 → 12-5: an agency's error report is received for the prefecture's review (4), investigated (5),
-- then reported to the municipality (1, open) or dismissed with a reason (6); not forwarded blindly.
ALTER TABLE municipality_report DROP CONSTRAINT municipality_report_state_check;
ALTER TABLE municipality_report
    ADD CONSTRAINT municipality_report_state_check CHECK (state IN (1, 2, 3, 4, 5, 6)),
    ADD COLUMN dismiss_reason_code text,
    ADD COLUMN forward_time timestamptz;
