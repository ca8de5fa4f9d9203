-- spend_daily: spend per account, product and UTC day of the event, for dashboards.
--
-- Engine SummingMergeTree fed by a materialized view on rated_usage: each insert adds one row per
-- (account, product, day) and merges add them up, so reads stay small however many events there
-- are. Merges are eventual: always read with sum() ... GROUP BY, never row by row.
-- A materialized view sees inserted blocks, not the deduplicated table: a duplicate inserted into
-- rated_usage would be counted twice here. The sink therefore inserts only events that rated_usage
-- does not hold yet (see sinks/README.md, "Duplicates and the rollups"); exact money (invoices,
-- reconciliation) still reads rated_usage FINAL, and `billing reconcile` reports any drift.
-- Sort key (account_id, product, day): the summing key; partition by month of the day.
CREATE TABLE IF NOT EXISTS spend_daily
(
    day Date,
    account_id String,
    product String,
    cost Decimal(18, 6),
    requests UInt64,
    events UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (account_id, product, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_daily_mv TO spend_daily AS
SELECT
    toDate(timestamp) AS day,
    account_id,
    product,
    CAST(sum(cost) AS Decimal(18, 6)) AS cost,
    CAST(sum(requests) AS UInt64) AS requests,
    CAST(count() AS UInt64) AS events
FROM rated_usage
GROUP BY day, account_id, product;
