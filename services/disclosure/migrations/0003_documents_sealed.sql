-- Written notices sealed at rest (AES-256-GCM under the service's keyring, jukilib.keyring): their PDF and
-- JSON hold the resident's record, 個人番号 included (番号法 12: 安全管理措置). Each part has its own nonce;
-- the associated data binds it to the document's id and part. `pdf_sha256`/`json_sha256` stay the hashes
-- of what the resident receives (the plaintext).
-- A migration cannot encrypt: documents issued before it stay readable in plaintext (`key_id` NULL) until
-- `juki keys rotate` seals them, in batches, while the service keeps answering.
ALTER TABLE disclosure_document
    ALTER COLUMN json TYPE bytea USING convert_to(json, 'UTF8'),
    ADD COLUMN key_id      text,
    ADD COLUMN pdf_nonce   bytea,
    ADD COLUMN json_nonce  bytea,
    ADD CONSTRAINT disclosure_document_sealed_whole CHECK (
        (key_id IS NULL AND pdf_nonce IS NULL AND json_nonce IS NULL)
        OR (key_id IS NOT NULL AND pdf_nonce IS NOT NULL AND json_nonce IS NOT NULL));
-- `juki keys rotate` finds what is not under the active key without reading every document.
CREATE INDEX disclosure_document_key ON disclosure_document (key_id);
