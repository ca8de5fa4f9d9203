-- Payments on one account's invoice for a month: which payment or purchase paid how much.
-- Params: account_id, period (YYYY-MM).
-- One row per invoice_settled, in the order they were applied (the unpaid amount only falls).
-- paid_by: credits_purchased (credits bought pay invoices first, oldest first) or invoice_paid;
-- cause_event_id: that input event (it names the payment when payment_id is NULL).
SELECT
    timestamp AS paid_at,
    invoice_id,
    paid_by,
    payment_id,
    cause_event_id,
    amount_paid,
    unpaid
FROM invoice_history FINAL
WHERE account_id = %(account_id)s AND type = 'invoice_settled' AND invoice_id IN
    (SELECT invoice_id FROM invoice_history WHERE account_id = %(account_id)s AND period = %(period)s)
ORDER BY invoice_id, unpaid DESC, timestamp, event_id;
