-- Daily spend per product for one account over a date range (the spend_daily rollup).
-- Params: account_id, first_day, last_day (YYYY-MM-DD).
-- Fast, for dashboards; see sinks/README.md on how the rollup is kept free of duplicates.
SELECT day, product, sum(cost) AS cost, sum(requests) AS requests, sum(events) AS events
FROM spend_daily
WHERE account_id = %(account_id)s
  AND day >= toDate(%(first_day)s) AND day <= toDate(%(last_day)s)
GROUP BY day, product
ORDER BY day, product;
