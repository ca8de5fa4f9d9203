-- accounts_current: one row per account, its latest account-status record (topic
-- billing.account-status, compacted, billing rules sections 3 and 6): the snapshot's fields under
-- their own names, may_send, blocked_reasons, updated_at and version.
--
-- READ IT WITH FINAL: SELECT ... FROM accounts_current FINAL. Without FINAL an account can show
-- several rows (older versions not merged away yet).
--
-- (This is the table's comment: ClickHouse 18.16 has no table COMMENT in CREATE TABLE, so it
-- stays here; the columns carry COMMENTs, which 18.16 and chdb both store in system.columns.)
--
-- Engine ReplacingMergeTree(version): the worker writes one record per account per batch in
-- which its snapshot changed, with a version that only grows with every input applied to the
-- account; the same batch applied again after a crash yields the same version. Rows with the
-- same account_id collapse into the one with the largest version, whatever order they arrive in
-- (an older record redelivered after a newer one, a sink reading the topic again). Equal versions
-- are copies of one record.
-- Sort key account_id: the table's key is the account. No PARTITION BY: ReplacingMergeTree only
-- collapses rows within one partition, and every version of an account must share one.
-- source_partition/source_offset: the Kafka position of the record, to trace a row to its
-- message; version, not the offset, orders an account's records.
CREATE TABLE IF NOT EXISTS accounts_current
(
    account_id String COMMENT 'The account (the topic key).',
    billing_model String COMMENT 'prepaid or postpaid.',
    contract String COMMENT 'self_serve or enterprise.',
    status String COMMENT 'active, paused or suspended.',
    pause_reasons Array(String) COMMENT 'Sorted reasons usage is paused (budget_reached, credits_exhausted, top_up_failed).',
    credit_balance Decimal(18, 6) COMMENT 'USD of prepaid/promotional credit left; may be negative after usage in flight.',
    outstanding_balance Decimal(18, 6) COMMENT 'USD owed (postpaid): issued invoices unpaid plus the charges of the open month.',
    month_to_date_spend Decimal(18, 6) COMMENT 'USD spent in the open month.',
    open_period String COMMENT 'The month being charged, YYYY-MM.',
    lifetime_spend Decimal(18, 6) COMMENT 'USD spent since the account opened.',
    lifetime_credits_purchased Decimal(18, 6) COMMENT 'USD of credits bought since the account opened.',
    tier String COMMENT '0..4 or enterprise.',
    monthly_budget Nullable(Decimal(18, 6)) COMMENT 'USD monthly spend limit; NULL when there is none.',
    rpm_limit Int64 COMMENT 'Requests per minute allowed.',
    tpm_limit Int64 COMMENT 'Tokens per minute upper bound.',
    has_payment_method UInt8 COMMENT '1 when a payment method is on file (UInt8: 18.16 has no Bool).',
    pending_top_up_request_id Nullable(String) COMMENT 'The top-up requested and not yet answered, or NULL.',
    may_send UInt8 COMMENT '1 when the gateway may serve the account now: only when status is active.',
    blocked_reasons Array(String) COMMENT 'Why it may not (sorted): the pause reasons, plus suspended. Empty when may_send.',
    auto_top_up_enabled UInt8 COMMENT '1 when a top-up is requested at credit_balance <= auto_top_up_minimum_balance.',
    auto_top_up_minimum_balance Decimal(18, 6) COMMENT 'USD: the balance at or below which a top-up is requested.',
    auto_top_up_amount Decimal(18, 6) COMMENT 'USD bought by each top-up.',
    updated_at DateTime('UTC') COMMENT 'Event time of the last input applied to the account (whole seconds, UTC).',
    updated_at_ms UInt16 COMMENT 'Milliseconds of updated_at (0-999), kept apart like timestamp_ms on other tables.',
    version UInt64 COMMENT 'Grows with every input applied to the account; the row with the largest wins (read with FINAL).',
    source_partition UInt32 COMMENT 'Kafka partition of billing.account-status the record was read from.',
    source_offset UInt64 COMMENT 'Kafka offset of the record in that partition.'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY account_id;
