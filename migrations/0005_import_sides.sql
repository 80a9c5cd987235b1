-- Which sides an import's rows are on ('payment', 'merchant', 'standalone'),
-- recorded when it is parsed. Staging uses it to stage a merchant-side feed
-- beside a payment-side one (they take different locks): payment-side
-- imports stay serial among themselves, in import order (an auth before its
-- settlement), as do merchant-side ones. NULL for imports parsed before
-- this migration: staged as if they held both sides.
ALTER TABLE imports ADD COLUMN sides text[];
