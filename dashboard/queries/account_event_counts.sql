-- How many account-state events of each type one account has had (pauses, top-ups, ...).
-- Params: account_id.
SELECT type, count() AS events
FROM account_state_events FINAL
WHERE account_id = %(account_id)s
GROUP BY type
ORDER BY type;
