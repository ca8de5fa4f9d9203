-- One account's row of accounts_current (the billing.account-status record the gateway reads:
-- may_send and blocked_reasons; read with FINAL, see migration 009). No row: the sink has not
-- written the account's status (or the table is empty), and the latest snapshot stands in.
-- Params: account_id.
SELECT may_send, blocked_reasons, status, updated_at
FROM accounts_current FINAL
WHERE account_id = %(account_id)s;
