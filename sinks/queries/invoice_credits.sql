-- Credits and payments applied to one account in one calendar month (UTC), with their split.
-- Params: account_id, period (YYYY-MM).
-- The split: how much of each went to what was owed and how much became new credit.
SELECT
    timestamp,
    payment_id,
    invoice_id,
    amount,
    applied_to_outstanding,
    applied_to_credit,
    receipt_url
FROM credit_purchases FINAL
WHERE account_id = %(account_id)s AND toStartOfMonth(timestamp) = toDate(concat(%(period)s, '-01'))
ORDER BY timestamp, event_id;
