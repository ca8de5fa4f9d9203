-- The invoice issued to one account for one month (postpaid accounts with unpaid charges only).
-- Params: account_id, period (YYYY-MM).
SELECT invoice_id, period, amount, timestamp AS issued_at, billing_model
FROM invoices FINAL
WHERE account_id = %(account_id)s AND period = %(period)s
ORDER BY invoice_id;
