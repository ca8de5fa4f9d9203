-- invoices: every invoice_issued event (postpaid month close): what the customer is billed.
--
-- Filled by a materialized view from account_state_events. Engine ReplacingMergeTree: invoice ids
-- and their event ids are deterministic, so a duplicate collapses (read with FINAL).
-- Sort key (account_id, period, event_id): "the invoice of this account for this month".
CREATE TABLE IF NOT EXISTS invoices
(
    event_id String,
    invoice_id String,
    account_id String,
    period String,
    amount Decimal(18, 6),
    timestamp DateTime('UTC'),
    timestamp_ms UInt16,
    cause_event_id String,
    billing_model String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (account_id, period, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS invoices_mv TO invoices AS
SELECT
    event_id,
    assumeNotNull(invoice_id) AS invoice_id,
    account_id,
    assumeNotNull(period) AS period,
    CAST(assumeNotNull(amount) AS Decimal(18, 6)) AS amount,
    timestamp,
    timestamp_ms,
    cause_event_id,
    snapshot_billing_model AS billing_model
FROM account_state_events
WHERE type = 'invoice_issued';
