-- The person a usage-suspension case is about, by the ids of their resources in the files (`residents/{id}`,
-- `annexResidents/{id}`): unlike the 住民票コード (住基法 30-4), these never change, so the gateway's refusal
-- follows the person to a code given after the case was opened.
ALTER TABLE usage_suspension_case ADD COLUMN persons text[] NOT NULL DEFAULT '{}';
