-- spend_monthly: spend per account, product and billed month (the month the cost was charged to:
-- late usage counts in the month that was open when it arrived, as on the invoice).
--
-- Same design as spend_daily: SummingMergeTree fed by a materialized view on rated_usage, read
-- with sum() ... GROUP BY; the same caveat on duplicates applies. billed_month is the first day of
-- billed_period, so the table is partitioned by month like the others.
-- Sort key (account_id, product, billed_month): the summing key.
CREATE TABLE IF NOT EXISTS spend_monthly
(
    billed_month Date,
    account_id String,
    product String,
    cost Decimal(18, 6),
    requests UInt64,
    events UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(billed_month)
ORDER BY (account_id, product, billed_month);

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_monthly_mv TO spend_monthly AS
SELECT
    toDate(concat(billed_period, '-01')) AS billed_month,
    account_id,
    product,
    CAST(sum(cost) AS Decimal(18, 6)) AS cost,
    CAST(sum(requests) AS UInt64) AS requests,
    CAST(count() AS UInt64) AS events
FROM rated_usage
GROUP BY billed_month, account_id, product;
