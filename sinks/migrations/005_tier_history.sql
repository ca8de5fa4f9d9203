-- tier_history: every tier_changed event, with the lifetime figures that decide the tier
-- (qualifying amount = max(lifetime spend, lifetime credits purchased)) at the time of the change.
--
-- Filled by a materialized view from account_state_events; ReplacingMergeTree on event_id like
-- its source (read with FINAL). Sort key (account_id, timestamp, event_id): one account's path.
CREATE TABLE IF NOT EXISTS tier_history
(
    event_id String,
    account_id String,
    timestamp DateTime('UTC'),
    timestamp_ms UInt16,
    cause_event_id String,
    from_tier String,
    to_tier String,
    lifetime_spend Decimal(18, 6),
    lifetime_credits_purchased Decimal(18, 6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (account_id, timestamp, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS tier_history_mv TO tier_history AS
SELECT
    event_id,
    account_id,
    timestamp,
    timestamp_ms,
    cause_event_id,
    assumeNotNull(from_tier) AS from_tier,
    assumeNotNull(to_tier) AS to_tier,
    snapshot_lifetime_spend AS lifetime_spend,
    snapshot_lifetime_credits_purchased AS lifetime_credits_purchased
FROM account_state_events
WHERE type = 'tier_changed';
