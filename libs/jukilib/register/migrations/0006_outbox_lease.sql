-- The relay claims outbox rows with a lease instead of a row lock held across the call to the agency
-- (住基法 30-7, 30-42 forwarding). A claim stamps `claimed_until` and the claiming pass's `claim_token`
-- and ends at once; the rows are delivered with no transaction open, then marked delivered, or failed by
-- the holder of the token. A worker that dies mid-delivery leaves its lease behind, and its rows are taken
-- over once the lease has passed: delivery stays at least once, and the agency's idempotency key makes it
-- exactly once.
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz, ADD COLUMN claim_token uuid;

-- The claim walks pending rows in id order (the order per person) and stops at its batch size: an index
-- in that order, so that a large backlog is not sorted at every claim.
DROP INDEX outbox_due;
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
