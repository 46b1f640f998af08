-- The record versions each answer disclosed (issue 5: "fields and record versions disclosed"), as
-- version resource names (`residents/{id}/versions/{n}`). Rows written before have none; the chain
-- hash covers the column only when it is not empty, so their hashes stay valid.
ALTER TABLE operation_log ADD COLUMN disclosed_versions text[] NOT NULL DEFAULT '{}';
