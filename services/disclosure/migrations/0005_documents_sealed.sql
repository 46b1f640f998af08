-- Written notices sealed at rest (AES-256-GCM under the service's keyring, jukilib.keyring): their PDF and
-- JSON hold the resident's record, 個人番号 included (番号法 12: 安全管理措置). Each part has its own nonce;
-- the associated data binds it to the document's id and part. `pdf_sha256`/`json_sha256` stay the hashes
-- of what the resident receives (the plaintext).
-- A correction case's requested values (`items[].requested_value`, a 個人番号 among them) and the values each
-- organ received (`wrong_value_recipients[].received_values`) are sealed the same way inside their jsonb
-- (`sealed_value`, `sealed_received_values`: key id, nonce, ciphertext), bound to the case and the entry.
-- A migration cannot encrypt: documents and cases stored before it stay readable in clear (`key_id` NULL, an
-- entry without its sealed member) until `juki keys rotate` seals them, in batches, while the service answers.
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
