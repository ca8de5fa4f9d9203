-- account_state_events: every output event of billing.account-state, its own fields flattened
-- (NULL when the event type does not have the field) and the account snapshot after the change as
-- snapshot_* columns. The credit_purchases, invoices and tier_history tables are fed from it by
-- materialized views.
--
-- Engine ReplacingMergeTree, deduplicated on event_id like rated_usage: output event ids are
-- deterministic, so a redelivered or re-produced event has the same id, account and timestamp.
-- Sort key (account_id, timestamp, event_id): history of one account over time.
-- source_partition/source_offset: the Kafka position the row was read from. The topic is keyed
-- by account_id, so offsets order one account's events as the ledger emitted them; the latest
-- snapshot of an account is the row with the largest source_offset (event timestamps are not
-- monotonic: late usage carries an old timestamp).
CREATE TABLE IF NOT EXISTS account_state_events
(
    event_id String,
    account_id String,
    timestamp DateTime('UTC'),
    timestamp_ms UInt16,
    type String,
    cause_event_id String,
    reason Nullable(String),
    amount Nullable(Decimal(18, 6)),
    top_up_request_id Nullable(String),
    payment_id Nullable(String),
    invoice_id Nullable(String),
    receipt_url Nullable(String),
    applied_to_outstanding Nullable(Decimal(18, 6)),
    applied_to_credit Nullable(Decimal(18, 6)),
    from_tier Nullable(String),
    to_tier Nullable(String),
    rpm_limit Nullable(Int64),
    tpm_limit Nullable(Int64),
    monthly_budget Nullable(Decimal(18, 6)),
    period Nullable(String),
    rejected_type Nullable(String),
    snapshot_billing_model String,
    snapshot_contract String,
    snapshot_status String,
    snapshot_pause_reasons Array(String),
    snapshot_credit_balance Decimal(18, 6),
    snapshot_outstanding_balance Decimal(18, 6),
    snapshot_month_to_date_spend Decimal(18, 6),
    snapshot_open_period String,
    snapshot_lifetime_spend Decimal(18, 6),
    snapshot_lifetime_credits_purchased Decimal(18, 6),
    snapshot_tier String,
    snapshot_monthly_budget Nullable(Decimal(18, 6)),
    snapshot_rpm_limit Int64,
    snapshot_tpm_limit Int64,
    snapshot_has_payment_method UInt8,
    snapshot_pending_top_up_request_id Nullable(String),
    snapshot_auto_top_up_enabled UInt8,
    snapshot_auto_top_up_minimum_balance Decimal(18, 6),
    snapshot_auto_top_up_amount Decimal(18, 6),
    source_partition UInt32,
    source_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (account_id, timestamp, event_id);
