"""GENERATED from schemas/*.avsc by `python -m schemas.shapes`; do not edit.

Each event's fields and their kinds; what a kind means: schemas/shapes.py.
"""

# The fields of every input event (`type` is the name of its Avro record).
COMMON_FIELDS: dict[str, str] = {
    "type": "str",
    "event_id": "str",
    "account_id": "str",
    "timestamp": "time",
}

# Input event type -> its own fields -> kind (schemas/usage, payments, accounts, control.avsc).
INPUT_FIELDS: dict[str, dict[str, str]] = {
    "usage": {"product": "str", "quantities": "quantities", "requests": "requests"},
    "credits_purchased": {
        "amount": "money>0",
        "payment_id": "str",
        "receipt_url": "str?",
        "top_up_request_id": "str?",
    },
    "payment_failed": {"payment_id": "str", "reason": "str", "top_up_request_id": "str?"},
    "payment_method_added": {"payment_method_id": "str"},
    "payment_method_removed": {"payment_method_id": "str"},
    "invoice_paid": {"invoice_id": "str", "amount": "money>0", "payment_id": "str?"},
    "account_opened": {
        "created_at": "time",
        "contract": "contract",
        "billing_model": "billing_model?",
    },
    "auto_top_up_configured": {
        "enabled": "bool",
        "minimum_balance": "money",
        "top_up_amount": "money>0",
    },
    "budget_set": {"monthly_budget": "money?"},
    "close_period": {"period": "period"},
}

# Input event type -> field -> the value an absent field takes (besides null).
INPUT_DEFAULTS: dict[str, dict[str, object]] = {"usage": {"requests": 1}}

# Input event type -> the topic kind whose schema holds its record.
TOPIC_OF_TYPE: dict[str, str] = {
    "usage": "usage",
    "credits_purchased": "payments",
    "payment_failed": "payments",
    "payment_method_added": "payments",
    "payment_method_removed": "payments",
    "invoice_paid": "payments",
    "account_opened": "accounts",
    "auto_top_up_configured": "accounts",
    "budget_set": "accounts",
    "close_period": "control",
}

# Input batch type -> the event type of the records it packs (not an event).
BATCH_TYPES: dict[str, str] = {"usage_batch": "usage"}

# Output event type -> its own fields -> kind (schemas/account_state.avsc).
OUTPUT_FIELDS: dict[str, dict[str, str]] = {
    "usage_paused": {"reason": "str"},
    "usage_resumed": {"reason": "str"},
    "account_suspended": {"reason": "str"},
    "account_reinstated": {"reason": "str"},
    "top_up_requested": {"amount": "money", "top_up_request_id": "str"},
    "credits_applied": {
        "amount": "money",
        "payment_id": "str?",
        "invoice_id": "str?",
        "receipt_url": "str?",
        "applied_to_outstanding": "money",
        "applied_to_credit": "money",
    },
    "tier_changed": {"from_tier": "str?", "to_tier": "str"},
    "rate_limits_changed": {"rpm_limit": "int", "tpm_limit": "int"},
    "budget_changed": {"monthly_budget": "money?", "reason": "str"},
    "invoice_issued": {
        "invoice_id": "str",
        "period": "period",
        "amount": "money",
        "due_date": "date?",
    },
    "command_rejected": {"reason": "str", "rejected_type": "str"},
    "invoice_settled": {
        "invoice_id": "str",
        "amount_paid": "money",
        "unpaid": "money",
        "status": "str",
        "payment_id": "str?",
        "paid_by": "str",
    },
}

# The fields every output event has besides its own.
OUTPUT_COMMON_FIELDS: tuple[str, ...] = (
    "type",
    "event_id",
    "account_id",
    "timestamp",
    "cause_event_id",
    "snapshot",
)

# The account after a change (the Snapshot record of every output).
SNAPSHOT_FIELDS: dict[str, str] = {
    "account_id": "str",
    "billing_model": "str",
    "contract": "str",
    "status": "str",
    "pause_reasons": "list[str]",
    "credit_balance": "money",
    "outstanding_balance": "money",
    "month_to_date_spend": "money",
    "open_period": "period",
    "lifetime_spend": "money",
    "lifetime_credits_purchased": "money",
    "tier": "str",
    "monthly_budget": "money?",
    "rpm_limit": "int",
    "tpm_limit": "int",
    "has_payment_method": "bool",
    "auto_top_up": "auto_top_up",
    "pending_top_up_request_id": "str?",
}

# One usage event as the ledger rated it (schemas/usage_rated.avsc).
RATED_USAGE_FIELDS: dict[str, str] = {
    "event_id": "str",
    "account_id": "str",
    "timestamp": "time",
    "product": "str",
    "quantities": "quantities",
    "requests": "int",
    "cost": "money",
    "billed_period": "period",
    "late": "bool",
    "over_limit": "bool",
    "billing_model": "str",
    "tier": "str",
}
