-- 文書番号 of the written notices: one sequence per Japanese fiscal year (年度, 4月1日 to 3月31日),
-- taken in the transaction that stores the document, so a notice that is not stored leaves no gap.
CREATE TABLE document_number (
    fiscal_year  integer PRIMARY KEY,
    last_number  integer NOT NULL CHECK (last_number > 0)
);

-- The number as printed (e.g. 群馬県広聴第2026-000123号); NULL only for documents issued before numbering.
ALTER TABLE disclosure_document ADD COLUMN number text UNIQUE;

DO $$
DECLARE runtime text := current_setting('juki.runtime_role');
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON document_number TO %I', runtime);
END $$;
