-- Invoices still unpaid more than `days` days after their due date (today, UTC), oldest first.
-- Params: days (a whole number; 0: every overdue invoice).
SELECT
    account_id,
    invoice_id,
    period,
    status,
    amount,
    amount_paid,
    unpaid,
    due_date,
    days_overdue,
    last_paid_at
FROM invoices_status
WHERE days_overdue > %(days)s
ORDER BY days_overdue DESC, account_id, invoice_id;
