-- One account's pauses, resumes, suspensions and reinstatements in the order the ledger emitted
-- them (Kafka offset), each with the status and pause reasons right after it: what the account
-- page needs to say since when and why the account cannot send, and to shade those periods.
-- Params: account_id.
SELECT
    timestamp,
    type,
    reason,
    snapshot_status AS status_after,
    snapshot_pause_reasons AS pause_reasons_after
FROM account_state_events FINAL
WHERE account_id = %(account_id)s
  AND type IN ('usage_paused', 'usage_resumed', 'account_suspended', 'account_reinstated')
ORDER BY source_offset, event_id;
