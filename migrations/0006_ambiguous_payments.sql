-- Pending payments whose last attempt saw several candidates and chose none
-- (ambiguous). When one of those candidates is matched to another payment,
-- the ambiguity may be gone: the decision that matched it flags these
-- payments again (matching-rules.md §6 `refine`, retried with what is left).
-- Usually few rows, so the probe per matched record is cheap.
CREATE INDEX payments_ambiguous ON payments (merchant, provider, amount_minor)
    WHERE status = 'pending' AND NOT needs_match AND last_candidates > 1;
