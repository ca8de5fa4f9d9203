-- Invoices not fully paid (overdue ones only when %(overdue_only)s = 1), the longest overdue and
-- then the biggest unpaid first. Params: as_of (YYYY-MM-DD: overdue means due before it),
-- overdue_only (0 or 1). No LIMIT: the dashboard adds one and counts the whole list.
-- Status, paid and unpaid come from the sink's view invoices_status (migration 011: the one place
-- that says what an invoice's state is); only days_overdue is counted here, as of as_of rather
-- than the view's today, so a page and its tests can look at any day.
SELECT
    account_id,
    invoice_id,
    period,
    amount,
    issued_at,
    due_date,
    amount_paid,
    unpaid,
    status,
    if(due_date < toDate(%(as_of)s),
       toRelativeDayNum(toDate(%(as_of)s)) - toRelativeDayNum(due_date), 0) AS days_overdue
FROM
(
    SELECT account_id, invoice_id, period, amount, issued_at, due_date, amount_paid, unpaid,
           status
    FROM invoices_status
    WHERE unpaid > 0
)
WHERE %(overdue_only)s = 0 OR days_overdue > 0
ORDER BY days_overdue DESC, unpaid DESC, account_id, invoice_id;
