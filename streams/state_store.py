"""Account state <-> bytes for the Faust table (and its changelog topic).

Compact JSON via orjson: money as strings so it stays exact, field names kept so a changelog record
is readable with any Kafka tool during an incident. The table stores bytes (``raw`` serializer);
this module is the only place that knows the layout.
"""

from __future__ import annotations

from dataclasses import fields
from decimal import Decimal
from typing import Any

import orjson

from billing.ledger import AccountState

_MONEY = {"credit_balance", "outstanding_balance", "lifetime_spend", "lifetime_credits_purchased",
          "lifetime_invoice_payments", "free_credit_granted", "auto_top_up_minimum",
          "auto_top_up_amount"}
_OPTIONAL_MONEY = {"monthly_budget", "customer_budget"}
_MONEY_MAPS = {"month_spend", "month_unpaid", "invoices"}
_FIELD_NAMES = tuple(item.name for item in fields(AccountState))


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value).__name__)


def dump_state(state: AccountState) -> bytes:
    return orjson.dumps({name: getattr(state, name) for name in _FIELD_NAMES}, default=_default)


def load_state(data: bytes) -> AccountState:
    record = orjson.loads(data)
    for name in _MONEY:
        record[name] = Decimal(record[name])
    for name in _OPTIONAL_MONEY:
        if record[name] is not None:
            record[name] = Decimal(record[name])
    for name in _MONEY_MAPS:
        record[name] = {key: Decimal(value) for key, value in record[name].items()}
    record["pause_reasons"] = tuple(record["pause_reasons"])
    return AccountState(**record)
