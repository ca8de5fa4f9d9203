-- One account's usage per billed month (the month the ledger charged it to, as on invoices: late
-- usage counts in the month that was open when it arrived). Exact money: rated_usage FINAL.
-- Params: account_id.
SELECT
    billed_period,
    count() AS events,
    sum(requests) AS requests,
    countIf(late = 1) AS late_events,
    countIf(over_limit = 1) AS over_limit_events,
    sum(cost) AS cost,
    min(timestamp) AS first_usage,
    max(timestamp) AS last_usage
FROM rated_usage FINAL
WHERE account_id = %(account_id)s
GROUP BY billed_period
ORDER BY billed_period;
