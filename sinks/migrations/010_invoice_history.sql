-- invoice_history: every change of an invoice (billing rules section 6): its invoice_issued
-- (unpaid = the amount, status open) and each invoice_settled (a credit purchase or an
-- invoice_paid paid amount_paid of it, unpaid is what is left, status partially_paid or paid).
-- The view invoices_status (011) reads it: one row per invoice with its current state.
--
-- (This is the table's comment: ClickHouse 18.16 has no table COMMENT; the columns carry theirs.)
--
-- Filled by a materialized view from account_state_events, like credit_purchases and invoices,
-- so the sink writes one table and the history cannot disagree with the events. Engine
-- ReplacingMergeTree: event ids are deterministic, so a redelivered event has the same key and
-- partition and collapses (read with FINAL). The aggregates the view takes over an invoice's rows
-- (min of unpaid, max of the time paid, the issued row's fields) give the same answer with or
-- without a duplicate; only counting settlements needs FINAL.
-- Sort key (account_id, invoice_id, timestamp, event_id): one invoice's changes in time order.
CREATE TABLE IF NOT EXISTS invoice_history
(
    event_id String COMMENT 'The output event (invoice_issued or invoice_settled); deterministic.',
    account_id String COMMENT 'The account the invoice is addressed to.',
    invoice_id String COMMENT 'The invoice, e.g. inv-acct-1-2026-01.',
    type String COMMENT 'invoice_issued (the invoice) or invoice_settled (a payment on it).',
    timestamp DateTime('UTC') COMMENT 'Event time of the cause: the month close, or the payment (whole seconds, UTC).',
    timestamp_ms UInt16 COMMENT 'Milliseconds of timestamp (0-999).',
    cause_event_id String COMMENT 'The input that caused it: the usage or close_period that closed the month, or the credits_purchased or invoice_paid.',
    period Nullable(String) COMMENT 'invoice_issued: the month invoiced, YYYY-MM. NULL on invoice_settled.',
    amount Nullable(Decimal(18, 6)) COMMENT 'invoice_issued: USD invoiced. NULL on invoice_settled.',
    due_date Nullable(Date) COMMENT 'invoice_issued: the day payment is due (issue date + net terms). NULL on invoice_settled.',
    amount_paid Nullable(Decimal(18, 6)) COMMENT 'invoice_settled: USD of the invoice this payment paid. NULL on invoice_issued.',
    unpaid Decimal(18, 6) COMMENT 'USD of the invoice left unpaid after this change (invoice_issued: the amount).',
    status String COMMENT 'The invoice after this change: open (issued), partially_paid or paid.',
    payment_id Nullable(String) COMMENT 'invoice_settled: the payment_id of the credits_purchased or invoice_paid. NULL on invoice_issued.',
    paid_by Nullable(String) COMMENT 'invoice_settled: credits_purchased or invoice_paid. NULL on invoice_issued.'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (account_id, invoice_id, timestamp, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS invoice_history_mv TO invoice_history AS
SELECT
    event_id,
    account_id,
    assumeNotNull(invoice_id) AS invoice_id,
    type,
    timestamp,
    timestamp_ms,
    cause_event_id,
    period,
    amount,
    due_date,
    amount_paid,
    CAST(assumeNotNull(coalesce(unpaid, amount)) AS Decimal(18, 6)) AS unpaid,
    assumeNotNull(coalesce(status, 'open')) AS status,
    payment_id,
    paid_by
FROM account_state_events
WHERE type IN ('invoice_issued', 'invoice_settled');

-- Backfill: the invoice events a database already holds (it got them before this file) go
-- through the view above by being inserted into account_state_events again. A copy has its
-- original's sort key and partition, so it collapses like a redelivered event (here, in
-- invoice_history and in invoices: every reader uses FINAL or the latest offset), and the
-- mapping stays in one place. Running the file again only adds copies that collapse.
INSERT INTO account_state_events
SELECT * FROM account_state_events WHERE type IN ('invoice_issued', 'invoice_settled');
