"""What an account has already seen: event ids within the dedup horizon, payment ids for ever.

The ledger needs two memories besides the account's balances, and neither belongs in the hot
per-account record that is rewritten after every batch:

- **Event ids**, for dedup. Every accepted event must be checked against every earlier accepted
  event of its account within the acceptance window (35 days by default). A busy account sends
  millions of events in that time; keeping their ids in its state made one record grow past
  Kafka's 1 MB limit (issue "No message, no account and no setting can stop the worker").
- **Payment ids**, the idempotency key of a payment for ever: a retry of a purchase under a new
  event id must not credit twice, however late it comes.

This module says what such a memory must answer (:class:`SeenIds`) and gives the in-memory one
that replay and the tests use (:class:`MemorySeenIds`); the Faust worker keeps the same memory in a
changelog-backed table (``streams/seen_table.py``). It does no I/O.

Event ids are kept in **buckets of one hour of the event's own time**. A copy is the same event,
so it carries its original's timestamp and is looked up in its original's bucket: a lookup reads
one bucket, not 35 days of them. A bucket is forgotten once the account's newest applied event is
more than the horizon past the bucket's end: any copy of an event in it would now be dead-lettered
as older than the horizon before it is looked up, so forgetting never lets a copy through.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple, Protocol

BUCKET_MS = 3_600_000  # one hour of event time


def bucket_of(millis: int) -> int:
    """The dedup bucket (hour number since the epoch) of an event time in milliseconds."""
    return millis // BUCKET_MS


class PaymentRecord(NamedTuple):
    """What a payment id was first used for: the event type, its amount and invoice (if any)."""

    event_type: str
    amount: Decimal | None
    invoice_id: str | None


class SeenIds(Protocol):
    """The account memory the ledger reads and extends; one per ledger, keyed by account."""

    def has_event(self, account_id: str, bucket: int, event_id: str) -> bool:
        """Whether ``event_id`` was applied for the account in that hour of event time."""

    def add_event(self, account_id: str, bucket: int, event_id: str) -> None:
        """Record an applied event."""

    def start_account(self, account_id: str) -> None:
        """The account was just opened: it has no ids yet (a store may start an index)."""

    def forget_buckets(self, account_id: str, first: int, end: int, newest: int) -> None:
        """Forget the event ids of the buckets ``first`` (inclusive) to ``end`` (exclusive).
        ``newest`` is the bucket of the account's newest applied event: no later bucket holds
        ids, and none before ``first`` (forgotten before)."""

    def payment(self, account_id: str, payment_id: str) -> PaymentRecord | None:
        """The first use of ``payment_id`` by the account, or None."""

    def add_payment(self, account_id: str, payment_id: str, record: PaymentRecord) -> None:
        """Record the first use of a payment id (kept for ever)."""


class MemorySeenIds:
    """:class:`SeenIds` in dictionaries: for replay, tests and benchmarks."""

    def __init__(self) -> None:
        self._events: dict[str, dict[int, set[str]]] = {}  # account -> bucket -> event ids
        self._payments: dict[str, dict[str, PaymentRecord]] = {}

    def has_event(self, account_id: str, bucket: int, event_id: str) -> bool:
        buckets = self._events.get(account_id)
        if buckets is None:
            return False
        ids = buckets.get(bucket)
        return ids is not None and event_id in ids

    def add_event(self, account_id: str, bucket: int, event_id: str) -> None:
        buckets = self._events.get(account_id)
        if buckets is None:
            buckets = self._events[account_id] = {}
        ids = buckets.get(bucket)
        if ids is None:
            buckets[bucket] = {event_id}
        else:
            ids.add(event_id)

    def start_account(self, account_id: str) -> None:
        pass  # its buckets are found by the dictionary of the account

    def forget_buckets(self, account_id: str, first: int, end: int, newest: int) -> None:
        buckets = self._events.get(account_id)
        if not buckets:
            return
        if end - first < len(buckets):
            for bucket in range(first, end):
                buckets.pop(bucket, None)
        else:
            for bucket in [bucket for bucket in buckets if first <= bucket < end]:
                del buckets[bucket]

    def payment(self, account_id: str, payment_id: str) -> PaymentRecord | None:
        payments = self._payments.get(account_id)
        return None if payments is None else payments.get(payment_id)

    def add_payment(self, account_id: str, payment_id: str, record: PaymentRecord) -> None:
        self._payments.setdefault(account_id, {})[payment_id] = record

    def event_ids(self, account_id: str) -> int:
        """How many event ids the account's memory holds (tests, benchmarks)."""
        return sum(len(ids) for ids in self._events.get(account_id, {}).values())
