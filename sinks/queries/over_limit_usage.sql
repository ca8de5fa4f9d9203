-- Usage served while paused or suspended, per account and product, in one billed month.
-- Params: period (YYYY-MM).
-- Such usage was served by the gateway in flight and is charged all the same.
SELECT
    account_id,
    product,
    count() AS events,
    sum(requests) AS requests,
    sum(cost) AS cost,
    min(timestamp) AS first_seen,
    max(timestamp) AS last_seen
FROM rated_usage FINAL
WHERE over_limit = 1 AND billed_period = %(period)s
GROUP BY account_id, product
ORDER BY cost DESC, account_id, product;
