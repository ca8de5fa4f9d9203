-- Every account by its latest snapshot (largest Kafka offset per account): how many are active,
-- paused or suspended, at which tier and on which billing model, with the snapshot figures the
-- dashboard needs to bring balances up to date (usage moves them without emitting an event).
SELECT
    snapshot_status AS status,
    snapshot_tier AS tier,
    snapshot_billing_model AS billing_model,
    count() AS accounts,
    sum(snapshot_credit_balance) AS credit_balance,
    sum(snapshot_outstanding_balance) AS outstanding_balance,
    sum(snapshot_lifetime_spend) AS lifetime_spend
FROM
(
    SELECT account_id, snapshot_status, snapshot_tier, snapshot_billing_model,
           snapshot_credit_balance, snapshot_outstanding_balance, snapshot_lifetime_spend
    FROM account_state_events
    ORDER BY account_id, source_offset DESC
    LIMIT 1 BY account_id
)
GROUP BY status, tier, billing_model
ORDER BY status, tier, billing_model;
