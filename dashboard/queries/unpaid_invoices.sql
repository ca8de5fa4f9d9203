-- Invoices not fully paid (overdue ones only when %(overdue_only)s = 1), the longest overdue and
-- then the biggest unpaid first. Params: as_of (YYYY-MM-DD: overdue means due before it),
-- overdue_only (0 or 1). No LIMIT: the dashboard adds one and counts the whole list.
-- Issued: invoices FINAL; due_date: the invoice_issued row of account_state_events (NULL on data
-- from before migration 008: never counted overdue); paid so far: the invoice's latest
-- invoice_settled row (largest Kafka offset), or nothing paid when it has none (billing rules
-- section 6). A LEFT JOIN without a match gives 0 / '' here (18.16 has no join_use_nulls by
-- default), hence the settled flag.
SELECT
    account_id,
    invoice_id,
    period,
    amount,
    issued_at,
    due_date,
    paid AS amount_paid,
    amount - paid AS unpaid,
    state AS status,
    if(due_date IS NOT NULL AND assumeNotNull(due_date) < toDate(%(as_of)s),
       toRelativeDayNum(toDate(%(as_of)s)) - toRelativeDayNum(assumeNotNull(due_date)),
       0) AS days_overdue
FROM
(
    SELECT
        account_id, invoice_id, period, amount, issued_at, due_date,
        if(settled = 1, amount - settled_unpaid, toDecimal64(0, 6)) AS paid,
        if(settled = 1, settled_status, 'open') AS state
    FROM
    (
        SELECT account_id, invoice_id, period, amount, issued_at, due_date
        FROM
        (
            SELECT account_id, invoice_id, period, amount, timestamp AS issued_at
            FROM invoices FINAL
        ) AS issued
        ALL LEFT JOIN
        (
            SELECT account_id, assumeNotNull(invoice_id) AS invoice_id, due_date
            FROM account_state_events FINAL
            WHERE type = 'invoice_issued'
        ) AS terms USING (account_id, invoice_id)
    ) AS invoice
    ALL LEFT JOIN
    (
        SELECT
            account_id,
            assumeNotNull(invoice_id) AS invoice_id,
            assumeNotNull(unpaid) AS settled_unpaid,
            assumeNotNull(status) AS settled_status,
            1 AS settled
        FROM account_state_events FINAL
        WHERE type = 'invoice_settled'
        ORDER BY account_id, invoice_id, source_offset DESC
        LIMIT 1 BY account_id, invoice_id
    ) AS latest_settlement USING (account_id, invoice_id)
)
WHERE amount - paid > 0
  AND (%(overdue_only)s = 0 OR days_overdue > 0)
ORDER BY days_overdue DESC, unpaid DESC, account_id, invoice_id;
