-- One account's most recent account-state events, newest first (by Kafka offset: the order the
-- ledger emitted them), with each event's own fields and the balances right after it.
-- Params: account_id, limit.
SELECT
    timestamp,
    type,
    reason,
    amount,
    payment_id,
    invoice_id,
    applied_to_outstanding,
    applied_to_credit,
    from_tier,
    to_tier,
    rpm_limit,
    tpm_limit,
    monthly_budget,
    period,
    rejected_type,
    snapshot_status AS status_after,
    snapshot_credit_balance AS credit_balance_after,
    snapshot_outstanding_balance AS outstanding_balance_after
FROM account_state_events FINAL
WHERE account_id = %(account_id)s
ORDER BY source_offset DESC, event_id
LIMIT %(limit)s;
