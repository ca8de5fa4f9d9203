-- Spend per tier in one billed month, by the tier each event was rated at.
-- Params: period (YYYY-MM).
SELECT
    tier,
    uniqExact(account_id) AS accounts,
    count() AS events,
    sum(requests) AS requests,
    sum(cost) AS cost
FROM rated_usage FINAL
WHERE billed_period = %(period)s
GROUP BY tier
ORDER BY tier;
