-- A COMMENT on every column of the tables created by 001-008 (from 009 on, each CREATE TABLE
-- carries its columns' comments). Both ClickHouse 18.16 and chdb keep them in
-- system.columns.comment; DESCRIBE TABLE shows them. Tables have no comment on 18.16 (no table
-- COMMENT, no system.tables.comment): a table's comment is the -- block at the top of the
-- migration that creates it (sinks/README.md, Comments).
-- Only metadata changes: no data is rewritten. Running it again sets the same texts.
-- Money columns are USD as Decimal(18, 6), exact; times are UTC, whole seconds, with the
-- milliseconds in timestamp_ms (18.16 has no DateTime64).
ALTER TABLE rated_usage
    COMMENT COLUMN event_id 'The usage event (its input event_id, unique per account).',
    COMMENT COLUMN account_id 'The account that used it.',
    COMMENT COLUMN timestamp 'Event time of the usage (whole seconds, UTC).',
    COMMENT COLUMN timestamp_ms 'Milliseconds of timestamp (0-999).',
    COMMENT COLUMN product 'The product (model) used, as in the price book.',
    COMMENT COLUMN `quantities.meter` 'Meters of the usage (input_tokens, output_tokens, ...): one element per meter.',
    COMMENT COLUMN `quantities.count` 'Units of the meter at the same position (ARRAY JOIN quantities: one row per meter).',
    COMMENT COLUMN requests 'Requests the event counts.',
    COMMENT COLUMN cost 'USD the ledger charged for it.',
    COMMENT COLUMN billed_period 'The month it was charged to, YYYY-MM (the open month when it arrived).',
    COMMENT COLUMN late 'Late usage: its own month was already closed, so it was billed to the open month (0/1).',
    COMMENT COLUMN over_limit 'Served while the account was paused or suspended (0/1).',
    COMMENT COLUMN billing_model 'prepaid or postpaid, at rating time.',
    COMMENT COLUMN tier 'The account tier at rating time (0..4 or enterprise).';

ALTER TABLE account_state_events
    COMMENT COLUMN event_id 'The output event, deterministic (the same cause yields the same id).',
    COMMENT COLUMN account_id 'The account it is about (the topic key).',
    COMMENT COLUMN timestamp 'Event time of the input that caused it (whole seconds, UTC); not monotonic per account.',
    COMMENT COLUMN timestamp_ms 'Milliseconds of timestamp (0-999).',
    COMMENT COLUMN type 'The output type (billing rules section 6): credits_applied, invoice_issued, invoice_settled, tier_changed, ...',
    COMMENT COLUMN cause_event_id 'The input event that caused it.',
    COMMENT COLUMN reason 'usage_paused, usage_resumed, account_suspended, account_reinstated, budget_changed, command_rejected: why. NULL otherwise.',
    COMMENT COLUMN amount 'USD: top_up_requested (to buy), credits_applied (paid), invoice_issued (invoiced). NULL otherwise.',
    COMMENT COLUMN top_up_request_id 'top_up_requested: the request, answered by a credits_purchased or payment_failed. NULL otherwise.',
    COMMENT COLUMN payment_id 'credits_applied, invoice_settled: the payment (idempotency key of the purchase or invoice_paid). NULL otherwise.',
    COMMENT COLUMN invoice_id 'invoice_issued, invoice_settled: the invoice; credits_applied: set when it paid an invoice. NULL otherwise.',
    COMMENT COLUMN receipt_url 'credits_applied: the receipt of the purchase, if any. NULL otherwise.',
    COMMENT COLUMN applied_to_outstanding 'credits_applied: USD that paid what was owed. NULL otherwise.',
    COMMENT COLUMN applied_to_credit 'credits_applied: USD that became credit. NULL otherwise.',
    COMMENT COLUMN from_tier 'tier_changed: the tier before (NULL when the account opened). NULL otherwise.',
    COMMENT COLUMN to_tier 'tier_changed: the new tier. NULL otherwise.',
    COMMENT COLUMN rpm_limit 'rate_limits_changed: new requests per minute. NULL otherwise.',
    COMMENT COLUMN tpm_limit 'rate_limits_changed: new tokens per minute. NULL otherwise.',
    COMMENT COLUMN monthly_budget 'budget_changed: new USD monthly budget (NULL also when removed).',
    COMMENT COLUMN period 'invoice_issued: the month invoiced, YYYY-MM. NULL otherwise.',
    COMMENT COLUMN rejected_type 'command_rejected: the input type refused. NULL otherwise.',
    COMMENT COLUMN snapshot_billing_model 'Account after the change: prepaid or postpaid.',
    COMMENT COLUMN snapshot_contract 'Account after the change: self_serve or enterprise.',
    COMMENT COLUMN snapshot_status 'Account after the change: active, paused or suspended.',
    COMMENT COLUMN snapshot_pause_reasons 'Account after the change: sorted pause reasons.',
    COMMENT COLUMN snapshot_credit_balance 'Account after the change: USD of credit left.',
    COMMENT COLUMN snapshot_outstanding_balance 'Account after the change: USD owed (unpaid invoices and the open month charges).',
    COMMENT COLUMN snapshot_month_to_date_spend 'Account after the change: USD spent in the open month.',
    COMMENT COLUMN snapshot_open_period 'Account after the change: the month being charged, YYYY-MM.',
    COMMENT COLUMN snapshot_lifetime_spend 'Account after the change: USD spent since it opened.',
    COMMENT COLUMN snapshot_lifetime_credits_purchased 'Account after the change: USD of credits bought since it opened.',
    COMMENT COLUMN snapshot_tier 'Account after the change: tier (0..4 or enterprise).',
    COMMENT COLUMN snapshot_monthly_budget 'Account after the change: USD monthly budget, NULL when none.',
    COMMENT COLUMN snapshot_rpm_limit 'Account after the change: requests per minute allowed.',
    COMMENT COLUMN snapshot_tpm_limit 'Account after the change: tokens per minute allowed.',
    COMMENT COLUMN snapshot_has_payment_method 'Account after the change: 1 when a payment method is on file.',
    COMMENT COLUMN snapshot_pending_top_up_request_id 'Account after the change: the top-up requested and not answered yet, or NULL.',
    COMMENT COLUMN snapshot_auto_top_up_enabled 'Account after the change: 1 when auto top-up is on.',
    COMMENT COLUMN snapshot_auto_top_up_minimum_balance 'Account after the change: USD balance at or below which a top-up is requested.',
    COMMENT COLUMN snapshot_auto_top_up_amount 'Account after the change: USD bought by each top-up.',
    COMMENT COLUMN source_partition 'Kafka partition of billing.account-state the event was read from.',
    COMMENT COLUMN source_offset 'Kafka offset in that partition: orders one account events as the ledger emitted them.',
    COMMENT COLUMN due_date 'invoice_issued: the day payment is due (issue date + net terms). NULL otherwise.',
    COMMENT COLUMN amount_paid 'invoice_settled: USD of the invoice this payment paid. NULL otherwise.',
    COMMENT COLUMN unpaid 'invoice_settled: USD of the invoice left unpaid. NULL otherwise.',
    COMMENT COLUMN status 'invoice_settled: the invoice after it, partially_paid or paid. NULL otherwise.',
    COMMENT COLUMN paid_by 'invoice_settled: credits_purchased or invoice_paid. NULL otherwise.';

ALTER TABLE credit_purchases
    COMMENT COLUMN event_id 'The credits_applied output event.',
    COMMENT COLUMN account_id 'The account credited.',
    COMMENT COLUMN timestamp 'Event time of the purchase or payment (whole seconds, UTC).',
    COMMENT COLUMN timestamp_ms 'Milliseconds of timestamp (0-999).',
    COMMENT COLUMN cause_event_id 'The credits_purchased or invoice_paid input.',
    COMMENT COLUMN amount 'USD paid.',
    COMMENT COLUMN payment_id 'The payment (idempotency key).',
    COMMENT COLUMN invoice_id 'Set when it paid an invoice (invoice_paid); NULL for a credit purchase.',
    COMMENT COLUMN receipt_url 'The receipt of the purchase, if any.',
    COMMENT COLUMN applied_to_outstanding 'USD that paid what was owed (oldest invoice first).',
    COMMENT COLUMN applied_to_credit 'USD that became credit.';

ALTER TABLE invoices
    COMMENT COLUMN event_id 'The invoice_issued output event.',
    COMMENT COLUMN invoice_id 'The invoice, e.g. inv-acct-1-2026-01.',
    COMMENT COLUMN account_id 'The account invoiced.',
    COMMENT COLUMN period 'The month invoiced, YYYY-MM.',
    COMMENT COLUMN amount 'USD invoiced: the unpaid charges of the month. Payments: invoices_status.',
    COMMENT COLUMN timestamp 'When it was issued: event time of the input that closed the month (whole seconds, UTC).',
    COMMENT COLUMN timestamp_ms 'Milliseconds of timestamp (0-999).',
    COMMENT COLUMN cause_event_id 'The usage or close_period input that closed the month.',
    COMMENT COLUMN billing_model 'The account billing model at issue (postpaid).';

ALTER TABLE tier_history
    COMMENT COLUMN event_id 'The tier_changed output event.',
    COMMENT COLUMN account_id 'The account.',
    COMMENT COLUMN timestamp 'Event time of the change (whole seconds, UTC).',
    COMMENT COLUMN timestamp_ms 'Milliseconds of timestamp (0-999).',
    COMMENT COLUMN cause_event_id 'The input that caused the change.',
    COMMENT COLUMN from_tier 'The tier before; empty when the account opened.',
    COMMENT COLUMN to_tier 'The new tier.',
    COMMENT COLUMN lifetime_spend 'USD spent since the account opened, at the change.',
    COMMENT COLUMN lifetime_credits_purchased 'USD of credits bought since the account opened, at the change.';

ALTER TABLE spend_daily
    COMMENT COLUMN day 'UTC day of the usage events.',
    COMMENT COLUMN account_id 'The account.',
    COMMENT COLUMN product 'The product.',
    COMMENT COLUMN cost 'USD charged (a partial sum until parts merge: read with sum() GROUP BY).',
    COMMENT COLUMN requests 'Requests (partial sum: read with sum()).',
    COMMENT COLUMN events 'Usage events (partial sum: read with sum()).';

ALTER TABLE spend_monthly
    COMMENT COLUMN billed_month 'First day of the month the usage was charged to (billed_period).',
    COMMENT COLUMN account_id 'The account.',
    COMMENT COLUMN product 'The product.',
    COMMENT COLUMN cost 'USD charged (a partial sum until parts merge: read with sum() GROUP BY).',
    COMMENT COLUMN requests 'Requests (partial sum: read with sum()).',
    COMMENT COLUMN events 'Usage events (partial sum: read with sum()).';

-- The record of migrations (created by sinks/migrate.py before any file runs).
ALTER TABLE schema_migrations
    COMMENT COLUMN version 'Migration number: the NNN of sinks/migrations/NNN_name.sql.',
    COMMENT COLUMN name 'The file name of the migration.',
    COMMENT COLUMN checksum 'sha256 of the file as applied (line ends normalised): an applied file must not change.',
    COMMENT COLUMN applied_at 'When it was applied or adopted (UTC).',
    COMMENT COLUMN adopted '1: its tables already existed (created before migrations were recorded), so it was recorded, not run.';
