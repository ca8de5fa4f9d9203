-- Credits and payments applied to one account during one calendar month (UTC), and how each was
-- split between what was owed and new credit. Params: account_id, period (YYYY-MM).
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
