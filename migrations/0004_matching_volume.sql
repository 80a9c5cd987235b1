-- Matching at volume (`accord bench match`: a million transactions a side).
--
-- The stage tables are written only by accord's staging and decision
-- statements, which take every referenced id from the referenced table in
-- the same statement (payments and scheme records from `transactions` and
-- the MID lookup, matches from claimed rows); merchants and transactions
-- are never deleted. A foreign key there checks what the statement already
-- guarantees, one trigger call per row: 41 of the 72 s it took to insert
-- 700,000 payments. The keys of `reviews` (a person's queue, low volume)
-- stay.
ALTER TABLE payments
    DROP CONSTRAINT payments_transaction_id_fkey,
    DROP CONSTRAINT payments_merchant_fkey,
    -- The MID a payment was identified through, as it was then: offboarding
    -- the MID later does not rewrite the payment.
    DROP CONSTRAINT payments_identifier_fkey;
ALTER TABLE payment_legs
    DROP CONSTRAINT payment_legs_transaction_id_fkey,
    DROP CONSTRAINT payment_legs_payment_id_fkey;
ALTER TABLE scheme_transactions
    DROP CONSTRAINT scheme_transactions_transaction_id_fkey,
    DROP CONSTRAINT scheme_transactions_merchant_fkey;
ALTER TABLE matches
    DROP CONSTRAINT matches_merchant_fkey,
    DROP CONSTRAINT matches_payment_id_fkey,
    DROP CONSTRAINT matches_scheme_id_fkey;

-- A transaction's payment is found through `payment_legs` (its primary key
-- is the transaction); this second, randomly ordered index cost a page
-- write on every payment update.
DROP INDEX payments_transaction;

-- Room on every page for the decision's new row version: a payment (its
-- status and last attempt) and a merchant record (its status) are updated
-- once each when matched, and the new version then stays on its page, next
-- to its neighbours of the same merchant, instead of moving to the end of
-- the table.
ALTER TABLE payments SET (fillfactor = 75);
ALTER TABLE scheme_transactions SET (fillfactor = 85);
