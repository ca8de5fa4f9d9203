-- Accounts whose id contains %(search)s (every account when it is empty) and whose status is
-- %(status)s (any when it is empty), with their latest snapshot and their lifetime usage spend,
-- the biggest spenders first. Params: search, status. No LIMIT: the dashboard adds one to show a
-- page, and counts the whole list as SELECT count() FROM (this).
-- Status and tier are the latest snapshot's (largest Kafka offset per account, see sinks/README.md):
-- they change only through account-state events. Spend is rated_usage FINAL: usage emits no event.
SELECT
    latest.account_id AS account_id,
    latest.snapshot_status AS status,
    latest.snapshot_pause_reasons AS pause_reasons,
    latest.snapshot_tier AS tier,
    latest.snapshot_billing_model AS billing_model,
    latest.snapshot_contract AS contract,
    spend.events AS usage_events,
    spend.cost AS lifetime_spend
FROM
(
    SELECT account_id, snapshot_status, snapshot_pause_reasons, snapshot_tier,
           snapshot_billing_model, snapshot_contract
    FROM account_state_events
    WHERE position(account_id, %(search)s) > 0
    ORDER BY account_id, source_offset DESC
    LIMIT 1 BY account_id
) AS latest
ALL LEFT JOIN
(
    SELECT account_id, count() AS events, sum(cost) AS cost
    FROM rated_usage FINAL
    WHERE position(account_id, %(search)s) > 0
    GROUP BY account_id
) AS spend USING (account_id)
WHERE %(status)s = '' OR latest.snapshot_status = %(status)s
ORDER BY lifetime_spend DESC, account_id;
