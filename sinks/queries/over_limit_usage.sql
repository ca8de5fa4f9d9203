-- Usage served while the account was paused or suspended (charged all the same), per account and
-- product, in one billed month. Params: period (YYYY-MM).
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
