-- A merchant-side record is matched when a match names it: `matches` has at
-- most one row per record (its unique `scheme_id`), and that row is the
-- truth. The record's own `status` column now keeps what staging made of
-- it (unassigned / pending / refund) and is no longer set to 'matched' by a
-- decision; accord shows the status of a record a match names as
-- `matched`. Records matched before this migration keep 'matched'.
--
-- Why: the decision's update of the record cost a new row version and a
-- new entry in each of the table's indexes (the status was in the
-- candidate index's predicate), one random write per match, 17 of the
-- ~240 CPU-seconds of `accord bench match`; the candidate lookup now skips
-- matched records with a probe of `matches`' unique index instead.
--
-- The candidate index gets `created_at`: matched records stay in it, and the
-- lookback window (C3) then leaves the old ones out in the index, without
-- visiting their rows.
DROP INDEX scheme_candidates;
CREATE INDEX scheme_candidates ON scheme_transactions (merchant, provider, amount_minor, created_at)
    WHERE status = 'pending';
