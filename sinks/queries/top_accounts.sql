-- The accounts that spent most in one billed month.
-- Params: period (YYYY-MM), limit (a number).
SELECT
    account_id,
    any(billing_model) AS billing_model,
    count() AS events,
    sum(requests) AS requests,
    sum(cost) AS cost
FROM rated_usage FINAL
WHERE billed_period = %(period)s
GROUP BY account_id
ORDER BY cost DESC, account_id
LIMIT %(limit)s;
