"""Kafka topic names: the wire contract's addresses (billing rules, section 3).

Defaults here; each can be renamed by a ``BILLING_TOPIC_*`` setting (``runtime/settings.py``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Kafka topic names (section 3 of the billing rules)."""

    usage: str = "billing.usage"
    payments: str = "billing.payments"
    accounts: str = "billing.accounts"
    control: str = "billing.control"
    account_state: str = "billing.account-state"
    dead_letter: str = "billing.dead-letter"
    usage_rated: str = "billing.usage-rated"
    # Compacted: each account's latest snapshot, for a gateway that starts (rules, section 3).
    account_status: str = "billing.account-status"

    @property
    def inputs(self) -> tuple[str, ...]:
        """The co-partitioned input topics, in the order the worker subscribes to them."""
        return (self.usage, self.payments, self.accounts, self.control)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.inputs, self.account_state, self.dead_letter, self.usage_rated,
                self.account_status)
