-- The invoice lifecycle on account_state_events (billing rules section 6): invoice_issued carries
-- due_date; the new invoice_settled output records each change to an invoice's unpaid amount
-- (amount_paid, unpaid, status partially_paid/paid, and paid_by: the credits_purchased or
-- invoice_paid that paid, whose payment_id is in the existing payment_id column).
-- Nullable like every type's own column: other output types leave them NULL.
ALTER TABLE account_state_events ADD COLUMN due_date Nullable(Date);
ALTER TABLE account_state_events ADD COLUMN amount_paid Nullable(Decimal(18, 6));
ALTER TABLE account_state_events ADD COLUMN unpaid Nullable(Decimal(18, 6));
ALTER TABLE account_state_events ADD COLUMN status Nullable(String);
ALTER TABLE account_state_events ADD COLUMN paid_by Nullable(String);
