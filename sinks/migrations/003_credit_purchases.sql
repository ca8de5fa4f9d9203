-- credit_purchases: every credits_applied event (credits bought, or an invoice payment when
-- invoice_id is set) with how it was split between the outstanding balance and credit.
--
-- Filled by a materialized view from account_state_events, so the sink writes one table and the
-- split can never disagree with the event. Engine ReplacingMergeTree on the same key as its
-- source: a duplicate source row yields a duplicate row here, which collapses the same way (FINAL).
-- Sort key (account_id, timestamp, event_id): an account's payments in time order.
CREATE TABLE IF NOT EXISTS credit_purchases
(
    event_id String,
    account_id String,
    timestamp DateTime('UTC'),
    timestamp_ms UInt16,
    cause_event_id String,
    amount Decimal(18, 6),
    payment_id Nullable(String),
    invoice_id Nullable(String),
    receipt_url Nullable(String),
    applied_to_outstanding Decimal(18, 6),
    applied_to_credit Decimal(18, 6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (account_id, timestamp, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS credit_purchases_mv TO credit_purchases AS
SELECT
    event_id,
    account_id,
    timestamp,
    timestamp_ms,
    cause_event_id,
    CAST(assumeNotNull(amount) AS Decimal(18, 6)) AS amount,
    payment_id,
    invoice_id,
    receipt_url,
    CAST(assumeNotNull(applied_to_outstanding) AS Decimal(18, 6)) AS applied_to_outstanding,
    CAST(assumeNotNull(applied_to_credit) AS Decimal(18, 6)) AS applied_to_credit
FROM account_state_events
WHERE type = 'credits_applied';
