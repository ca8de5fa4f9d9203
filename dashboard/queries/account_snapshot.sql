-- One account's latest snapshot: the row with the largest Kafka offset (the topic is keyed by
-- account, so offsets order its events as the ledger emitted them; timestamps do not, late usage
-- carries an old one). Params: account_id. No row: ClickHouse has never seen the account.
SELECT
    timestamp AS as_of,
    type AS last_event_type,
    snapshot_billing_model AS billing_model,
    snapshot_contract AS contract,
    snapshot_status AS status,
    snapshot_pause_reasons AS pause_reasons,
    snapshot_credit_balance AS credit_balance,
    snapshot_outstanding_balance AS outstanding_balance,
    snapshot_month_to_date_spend AS month_to_date_spend,
    snapshot_open_period AS open_period,
    snapshot_lifetime_spend AS lifetime_spend,
    snapshot_lifetime_credits_purchased AS lifetime_credits_purchased,
    snapshot_tier AS tier,
    snapshot_monthly_budget AS monthly_budget,
    snapshot_rpm_limit AS rpm_limit,
    snapshot_tpm_limit AS tpm_limit,
    snapshot_has_payment_method AS has_payment_method,
    snapshot_auto_top_up_enabled AS auto_top_up_enabled,
    snapshot_auto_top_up_minimum_balance AS auto_top_up_minimum_balance,
    snapshot_auto_top_up_amount AS auto_top_up_amount,
    snapshot_pending_top_up_request_id AS pending_top_up_request_id
FROM account_state_events
WHERE account_id = %(account_id)s
ORDER BY source_offset DESC
LIMIT 1;
