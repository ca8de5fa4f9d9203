-- The invoice of one account for one month as it stands today: paid, unpaid, due date, overdue.
-- Params: account_id, period (YYYY-MM).
-- From the view invoices_status (status open, partially_paid or paid; days_overdue as of today
-- in UTC, 0 once paid or before the due date).
SELECT
    invoice_id,
    status,
    amount,
    amount_paid,
    unpaid,
    issued_at,
    due_date,
    days_overdue,
    last_paid_at
FROM invoices_status
WHERE account_id = %(account_id)s AND period = %(period)s
ORDER BY invoice_id;
