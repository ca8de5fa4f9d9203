-- Invoice lines: usage of one account charged to one month, per product.
-- Params: account_id, period (YYYY-MM).
-- Billed month, not event month: late usage appears on the month that was open when it arrived,
-- as on the invoice. Exact money: rated_usage FINAL.
SELECT
    product,
    count() AS events,
    sum(requests) AS requests,
    countIf(late = 1) AS late_events,
    countIf(over_limit = 1) AS over_limit_events,
    sum(cost) AS cost
FROM rated_usage FINAL
WHERE account_id = %(account_id)s AND billed_period = %(period)s
GROUP BY product
ORDER BY product;
