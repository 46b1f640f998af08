-- Every policy catalogue the gateway loaded or refused, by the SHA-256 of its exact text (issue 19: any past
-- catalogue can be read back, not only its digest). The operation log's `policy-catalogue/load` entry names
-- the digest; anyone can check that the text kept here hashes to it. Catalogues hold no personal data.
CREATE TABLE policy_catalogue (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content     text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    -- No UPDATE, no DELETE: a copy, once kept, is never changed.
    EXECUTE format('GRANT SELECT, INSERT ON policy_catalogue TO %I', current_setting('juki.runtime_role'));
END $$;
