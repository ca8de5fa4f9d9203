-- rated_usage: one row per usage event as the ledger rated it (topic billing.usage-rated). The
-- source of every money figure in analytics: invoice lines, spend by tier, reconciliation.
--
-- Engine ReplacingMergeTree: the sink delivers at least once, so an event may be inserted twice.
-- Both copies have the same sort key (account_id and timestamp belong to the event, event_id is
-- unique) and the same partition (the event's month), so they collapse into one; queries that
-- need exact money read the table with FINAL, which collapses copies not merged yet.
-- Sort key (account_id, timestamp, event_id): analysts ask per account and per time range
-- (invoice lines, top accounts); event_id last makes the key unique per event.
-- Quantities are Nested (meter -> count): ARRAY JOIN quantities gives one row per meter.
-- Booleans are UInt8 (0/1): ClickHouse 18.16 has no Bool type.
CREATE TABLE IF NOT EXISTS rated_usage
(
    event_id String,
    account_id String,
    timestamp DateTime('UTC'),
    timestamp_ms UInt16,
    product String,
    quantities Nested(meter String, count UInt64),
    requests UInt64,
    cost Decimal(18, 6),
    billed_period String,
    late UInt8,
    over_limit UInt8,
    billing_model String,
    tier String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (account_id, timestamp, event_id);
