-- invoices_status: one row per invoice, as it stands now (billing rules section 6). A plain view
-- (computed when read, so days_overdue is as of the day of the query) over invoice_history (010):
--   account_id, invoice_id, period (YYYY-MM), amount (USD invoiced), issued_at (DateTime UTC),
--   due_date (Date), amount_paid (USD paid so far), unpaid (USD left), status (open,
--   partially_paid or paid), days_overdue (whole days past due_date while unpaid > 0, as of
--   today in UTC; 0 otherwise), last_paid_at (time of the latest payment on it, NULL if none).
-- Money is Decimal(18, 6). Example, unpaid invoices more than 30 days overdue:
--   SELECT * FROM invoices_status WHERE days_overdue > 30
--
-- (This is the view's comment: ClickHouse 18.16 has no table or view COMMENT, and a plain view's
-- columns cannot carry one; sinks/README.md describes them too.)
--
-- Mechanics: no JOIN, one GROUP BY over one table, so it runs the same on 18.16 and chdb (and
-- over the Distributed tables of a cluster: sharded by account, an invoice's rows share a shard).
-- The status follows from the smallest unpaid amount, which only falls: paid at zero,
-- partially_paid once a settlement exists, otherwise open. amount_paid = amount - unpaid. Rows
-- of a settled invoice whose invoice_issued is missing are left out (issues = 0).
-- The inner names differ from the table's columns, so no alias shadows a column it aggregates.
CREATE VIEW IF NOT EXISTS invoices_status AS
SELECT
    account_id,
    invoice_id,
    assumeNotNull(issued_period) AS period,
    CAST(assumeNotNull(issued_amount) AS Decimal(18, 6)) AS amount,
    issued_time AS issued_at,
    assumeNotNull(issued_due_date) AS due_date,
    CAST(assumeNotNull(issued_amount) - least_unpaid AS Decimal(18, 6)) AS amount_paid,
    least_unpaid AS unpaid,
    multiIf(least_unpaid = 0, 'paid', settlements > 0, 'partially_paid', 'open') AS status,
    toUInt32(if(least_unpaid > 0 AND toDate(now(), 'UTC') > assumeNotNull(issued_due_date),
                dateDiff('day', assumeNotNull(issued_due_date), toDate(now(), 'UTC')), 0))
        AS days_overdue,
    if(settlements = 0, NULL, last_settled_time) AS last_paid_at
FROM
(
    SELECT
        account_id,
        invoice_id,
        max(period) AS issued_period,
        max(amount) AS issued_amount,
        minIf(timestamp, type = 'invoice_issued') AS issued_time,
        max(due_date) AS issued_due_date,
        CAST(min(unpaid) AS Decimal(18, 6)) AS least_unpaid,
        countIf(type = 'invoice_settled') AS settlements,
        maxIf(timestamp, type = 'invoice_settled') AS last_settled_time,
        countIf(type = 'invoice_issued') AS issues
    FROM invoice_history FINAL
    GROUP BY account_id, invoice_id
)
WHERE issues > 0;
