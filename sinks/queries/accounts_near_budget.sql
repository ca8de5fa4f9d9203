-- Accounts whose spend in a billed month has reached percent % of their monthly budget.
-- Params: period (YYYY-MM), percent (a number, e.g. 80).
-- The budget is the latest snapshot's (account_state_events, largest Kafka offset per account:
-- every budget change emits an event). The spend comes from rated_usage FINAL, because usage emits
-- no account-state event and the latest snapshot's month_to_date_spend can be behind.
SELECT
    budgets.account_id AS account_id,
    budgets.snapshot_status AS status,
    budgets.snapshot_tier AS tier,
    spend.cost AS spend,
    budgets.snapshot_monthly_budget AS monthly_budget,
    spend.cost * 100 / assumeNotNull(budgets.snapshot_monthly_budget) AS percent_used
FROM
(
    SELECT account_id, snapshot_status, snapshot_tier, snapshot_monthly_budget
    FROM account_state_events
    ORDER BY account_id, source_offset DESC
    LIMIT 1 BY account_id
) AS budgets
ALL INNER JOIN
(
    SELECT account_id, sum(cost) AS cost
    FROM rated_usage FINAL
    WHERE billed_period = %(period)s
    GROUP BY account_id
) AS spend USING (account_id)
WHERE budgets.snapshot_monthly_budget IS NOT NULL
  AND spend.cost * 100 >= assumeNotNull(budgets.snapshot_monthly_budget) * %(percent)s
ORDER BY percent_used DESC, account_id;
