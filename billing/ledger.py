"""The credit ledger: every billing rule, as one pure state machine.

``apply(state, event)`` takes an account's state (or ``None`` before it is opened) and one input
event in canonical form (see :mod:`billing.events`) and returns the state after it, the output
events it caused and, for usage, the rated usage record. It does no I/O and reads no clock: the
same state and event always give the same result, which is what lets the Faust worker, the replay
oracle and the tests share it. Nothing else in the project decides money.

Reading order follows the billing rules (section 5): opening an account, usage, payments,
configuration, month close; then :meth:`Ledger._settle`, which re-derives tier, limits, budget,
top-up, suspension and pause after every change and emits what changed.

Before any rule, :meth:`Ledger._admit` applies the boundary (billing rules section 4, "Time and
identity at the boundary"): an event stamped more than the future tolerance after the broker
received it (``ingested_at``), later than the maximum lateness, or older than its account's newest
applied event by more than the dedup horizon is refused (dead letter). It then changes no state and
moves no watermark: one gateway's bad clock cannot close anybody's month.

Invariants (checked by the property tests):
- money is conserved: ``credit_balance - outstanding_balance == free credit + purchases +
  invoice payments - lifetime spend`` after every event;
- a copy of an accepted event (same ``event_id``, delivered at any delay the window accepts)
  changes nothing and emits nothing; so does a payment retried under a new event id with a known
  ``payment_id`` (:mod:`billing.seen_ids` keeps both memories, outside the account's state);
- every output ``event_id`` is derived from the account, its cause and its type, so reprocessing
  yields the same ids, and the parts are escaped (:func:`id_part`) so two different outputs never
  share one. Month-close outputs are derived from the account and the month alone, so they are the
  same whether the close came from the watermark, a timer or a ``close_period``.

State is updated in place and returned; every check that can fail (unknown product, unopened
account) runs before the first change, so a rejected event leaves the state untouched. An
unexpected error inside the rules (a bug) is turned into :class:`LedgerFault`, an
:class:`InvalidEvent`, after the account's state is put back as it was: the event is
dead-lettered with the error, and billing goes on for everyone else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any, NamedTuple

from billing.config import ENTERPRISE_TIER, BillingConfig, Tier
from billing.events import MONEY_LIMIT, ZERO, InvalidEvent, format_time
from billing.pricebook import PriceBook
from billing.seen_ids import BUCKET_MS, MemorySeenIds, PaymentRecord, SeenIds

PREPAID, POSTPAID = "prepaid", "postpaid"
SELF_SERVE, ENTERPRISE = "self_serve", "enterprise"
BUDGET_REACHED, CREDITS_EXHAUSTED = "budget_reached", "credits_exhausted"
TOP_UP_FAILED = "top_up_failed"
WATERMARK_CAUSE_PREFIX = "watermark:"
# Inputs whose payment_id is an idempotency key for ever (billing rules section 4).
PAYMENT_TYPES = frozenset({"credits_purchased", "payment_failed", "invoice_paid"})


@dataclass(slots=True)
class AccountState:
    """One account's ledger. Money fields are ``Decimal`` with 6 fractional digits.

    ``tier``, ``rpm_limit``, ``tpm_limit``, ``monthly_budget``, ``suspended`` and ``pause_reasons``
    are the values last published on ``billing.account-state``; :meth:`Ledger._settle` recomputes
    them after every event and emits an output for each that changed.
    """

    account_id: str
    contract: str
    billing_model: str
    open_period: str  # oldest month not yet closed
    current_period: str  # month of the latest event seen (>= open_period): month-to-date spend
    tier: str
    rpm_limit: int
    tpm_limit: int
    monthly_budget: Decimal | None
    credit_balance: Decimal = ZERO
    outstanding_balance: Decimal = ZERO
    lifetime_spend: Decimal = ZERO
    lifetime_credits_purchased: Decimal = ZERO
    lifetime_invoice_payments: Decimal = ZERO
    free_credit_granted: Decimal = ZERO
    customer_budget: Decimal | None = None  # None: follow the tier's maximum
    payment_methods: list[str] = field(default_factory=list)
    auto_top_up_enabled: bool = False
    auto_top_up_minimum: Decimal = ZERO
    auto_top_up_amount: Decimal = ZERO
    pending_top_up_request_id: str | None = None
    top_up_failed: bool = False  # blocks new requests until a purchase or a re-configuration
    top_ups_requested: int = 0  # sequence for deterministic top_up_request_ids
    suspended: bool = False
    pause_reasons: tuple[str, ...] = ()
    month_spend: dict[str, Decimal] = field(default_factory=dict)  # unclosed month -> spend
    month_unpaid: dict[str, Decimal] = field(default_factory=dict)  # unclosed month -> unpaid
    invoices: dict[str, Decimal] = field(default_factory=dict)  # open invoice -> unpaid, oldest 1st
    # Open invoice -> the payment ids of the ``invoice_paid`` events that paid part of it (values
    # replaced, never changed): what tells :meth:`Ledger.remember_again` that such an event was
    # applied, not refused, while a retry of it could still pay the invoice again.
    invoice_payment_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Payment id -> time of the event that closed the invoice, of every ``invoice_paid`` that paid
    # part or the rest of an invoice now closed, while the dedup horizon still reaches that time:
    # what tells ``remember_again`` the same after the invoice closed, when a retry is refused as
    # not open but the id must still guard against its reuse by another payment.
    closed_invoice_payment_ids: dict[str, int] = field(default_factory=dict)
    last_event_ms: int = 0  # newest applied event time: the dedup horizon counts back from it

    @property
    def has_payment_method(self) -> bool:
        return bool(self.payment_methods)

    @property
    def status(self) -> str:
        if self.suspended:
            return "suspended"
        return "paused" if self.pause_reasons else "active"

    @property
    def month_to_date_spend(self) -> Decimal:
        return self.month_spend.get(self.current_period, ZERO)


_FIELD_VALUES = attrgetter(*(item.name for item in fields(AccountState)))
_FIELD_NAMES = tuple(item.name for item in fields(AccountState))


def _saved(state: AccountState) -> tuple[tuple[Any, ...], tuple[dict[str, Any], ...]]:
    """What :func:`_restore` needs to undo an event: every field, and copies of the dicts the
    rules change in place (lists and tuples are replaced, never changed). Sub-microsecond."""
    return _FIELD_VALUES(state), (dict(state.month_spend), dict(state.month_unpaid),
                                  dict(state.invoices), dict(state.invoice_payment_ids),
                                  dict(state.closed_invoice_payment_ids))


def _restore(state: AccountState,
             saved: tuple[tuple[Any, ...], tuple[dict[str, Any], ...]]) -> None:
    values, (month_spend, month_unpaid, invoices, invoice_payment_ids, closed) = saved
    for name, value in zip(_FIELD_NAMES, values, strict=True):
        setattr(state, name, value)
    state.month_spend, state.month_unpaid, state.invoices = month_spend, month_unpaid, invoices
    state.invoice_payment_ids, state.closed_invoice_payment_ids = invoice_payment_ids, closed


# Events whose handler checks their payment id before anything else, recording it when unknown.
PAYMENT_ID_FIRST = frozenset({"credits_purchased", "payment_failed"})


class LedgerFault(InvalidEvent):
    """The rules failed on an event with an unexpected error (a bug, or input no check foresaw).

    The account's state is as before the event; the event is dead-lettered with the error, so
    that one event costs one dead letter and never stops billing for the other accounts."""


def id_part(text: str) -> str:
    """One component of an output id: ``%`` and ``:`` escaped, so that components joined with
    ``:`` never run into each other (account ``a:b`` with event ``c`` and account ``a`` with
    event ``b:c`` once both gave ``a:b:c:...``). Ids without either character are unchanged."""
    if ":" in text or "%" in text:
        return text.replace("%", "%25").replace(":", "%3A")
    return text


def describe_duration(delta: timedelta) -> str:
    """A duration for a person: ``3 days 2:00:00``, ``0:05:00``."""
    return str(delta).replace(", ", " ")


class Transition(NamedTuple):
    """What one input event did: the state after it, its output events, its rated usage."""

    state: AccountState | None
    outputs: list[dict[str, Any]]
    rated_usage: dict[str, Any] | None = None
    duplicate: bool = False  # a copy, or a payment retried under a new event id: nothing changed


# -- calendar helpers: periods are "YYYY-MM" strings, which sort chronologically -------------

_PERIODS: dict[int, str] = {}  # year * 100 + month -> "YYYY-MM": formatting is slow, months few


def period_of(moment: datetime) -> str:
    key = moment.year * 100 + moment.month
    period = _PERIODS.get(key)
    if period is None:
        period = _PERIODS[key] = f"{moment.year:04d}-{moment.month:02d}"
    return period


def next_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def previous_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:])
    return f"{year - (month == 1):04d}-{(month - 2) % 12 + 1:02d}"


def period_start(period: str) -> datetime:
    return datetime(int(period[:4]), int(period[5:]), 1, tzinfo=UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def from_millis(millis: int) -> datetime:
    """The UTC time ``millis`` milliseconds after the epoch (a Kafka record timestamp)."""
    return EPOCH + millis * MILLISECOND


def to_millis(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (integer arithmetic; a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // MILLISECOND


class _Emitter:
    """Collects the output events of one transition, giving each a deterministic id."""

    __slots__ = ("account_id", "outputs", "payment", "seen_ids")

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.outputs: list[dict[str, Any]] = []
        self.seen_ids: set[str] = set()
        self.payment: tuple[str, PaymentRecord] | None = None  # recorded once the event applied

    def emit(self, id_prefix: str, cause_event_id: str, timestamp: datetime, event_type: str,
             **fields: Any) -> None:
        event_id = f"{id_prefix}:{event_type}"
        number = 1
        while event_id in self.seen_ids:
            number += 1
            event_id = f"{id_prefix}:{event_type}:{number}"
        self.seen_ids.add(event_id)
        self.outputs.append({"event_id": event_id, "account_id": self.account_id,
                             "timestamp": timestamp, "type": event_type,
                             "cause_event_id": cause_event_id, **fields})


# Who caused a change: the id prefix of its outputs, the cause's event id and time. A plain tuple
# (not a NamedTuple, whose constructor is a Python call) as one is built for every event.
_Cause = tuple[str, str, datetime]


class Ledger:
    """The billing rules with their configuration and price book bound once."""

    def __init__(self, config: BillingConfig, pricebook: PriceBook,
                 seen: SeenIds | None = None) -> None:
        self.config = config
        self.pricebook = pricebook
        # The accounts' event and payment ids: in memory for replay and tests, a changelog-backed
        # table in the worker (see billing.seen_ids).
        self.seen: SeenIds = MemorySeenIds() if seen is None else seen
        self._horizon_ms = config.dedup_horizon // MILLISECOND
        self._close_after: dict[str, datetime] = {}  # period -> when the watermark closes it
        # Tier lookups run after every event: by name, and the rank of each self-serve tier, so
        # neither a linear search nor tuple.index (dataclass __eq__ field by field) is needed.
        self._tier_by_name = {tier.name: tier for tier in config.tiers}
        self._tier_by_name[config.enterprise.name] = config.enterprise
        self._tier_rank = {tier.name: rank for rank, tier in enumerate(config.tiers)
                           if tier.name != config.enterprise.name}

    def with_seen(self, seen: SeenIds) -> Ledger:
        """The same rules over another memory of seen ids (the worker's table)."""
        return Ledger(self.config, self.pricebook, seen)

    # -- entry point ---------------------------------------------------------------------

    def apply(self, state: AccountState | None, event: dict[str, Any]) -> Transition:
        """Apply one canonical input event to an account's state (``None`` if never opened).

        Raises :class:`InvalidEvent` for input that must go to the dead-letter topic (outside
        the acceptance window, unopened account, unknown product or meter), or
        :class:`LedgerFault` for an unexpected error; the state is then unchanged.
        """
        millis = self._admit(state, event)
        if state is None:
            if event["type"] != "account_opened":
                raise InvalidEvent(f"account {event['account_id']!r} was never opened "
                                   "(no account_opened event for it)", "account_id")
            return self._guarded(self._open, None, event, millis)
        if self.seen.has_event(state.account_id, millis // BUCKET_MS, event["event_id"]) \
                or (event["type"] in PAYMENT_TYPES and self._is_payment_retry(state, event)):
            return Transition(state, [], None, True)
        return self._guarded(self._apply, state, event, millis)

    def _guarded(self, step: Any, state: AccountState | None, event: dict[str, Any],
                 millis: int) -> Transition:
        """Run ``step``; an error that is not an :class:`InvalidEvent` becomes a
        :class:`LedgerFault` naming it, with the account's state put back as it was."""
        saved = None if state is None else _saved(state)
        try:
            return step(state, event, millis) if state is not None else step(event, millis)
        except InvalidEvent:
            raise
        except Exception as error:
            if saved is not None and state is not None:
                _restore(state, saved)
            raise LedgerFault(f"the billing rules failed on this event ({type(error).__name__}: "
                              f"{error}); nothing was applied. Report it with this dead letter, "
                              "then re-drive the event once fixed") from error

    def _admit(self, state: AccountState | None, event: dict[str, Any]) -> int:
        """The acceptance window (billing rules section 4); returns the event time in ms.

        The broker's append time (``ingested_at``; a replay line without it counts as ingested at
        its own time) is the reference clock: gateways' clocks are not. An event older than its
        account's newest applied event by more than the dedup horizon is refused too: its ids
        may be forgotten, so it cannot be proven not to be a copy.
        """
        timestamp: datetime = event["timestamp"]
        ingested: datetime = event.get("ingested_at") or timestamp
        config = self.config
        if timestamp - ingested > config.future_tolerance:
            raise InvalidEvent(
                f"timestamp {format_time(timestamp)} is "
                f"{describe_duration(timestamp - ingested)} after the broker received the event "
                f"({format_time(ingested)}), more than the future tolerance of "
                f"{describe_duration(config.future_tolerance)}: check the producer's clock",
                "timestamp")
        if config.max_lateness is not None and ingested - timestamp > config.max_lateness:
            raise InvalidEvent(
                f"timestamp {format_time(timestamp)} is "
                f"{describe_duration(ingested - timestamp)} before the broker received the event "
                f"({format_time(ingested)}), later than the maximum lateness of "
                f"{describe_duration(config.max_lateness)}", "timestamp")
        millis = to_millis(timestamp)
        if state is not None and millis < state.last_event_ms - self._horizon_ms:
            newest = from_millis(state.last_event_ms)
            raise InvalidEvent(
                f"older than the dedup horizon: cannot prove it is not a copy (timestamp "
                f"{format_time(timestamp)} is {describe_duration(newest - timestamp)} before the "
                f"account's newest applied event at {format_time(newest)}; the horizon is "
                f"{describe_duration(config.dedup_horizon)})", "timestamp")
        return millis

    def _apply(self, state: AccountState, event: dict[str, Any], millis: int) -> Transition:
        """Apply an admitted event that is not a copy to an open account."""
        event_type = event["type"]
        cost = self.pricebook.rate(event["product"], event["quantities"]) \
            if event_type == "usage" else ZERO
        self._check_totals_fit(state, event, cost)
        emitter = _Emitter(state.account_id)
        timestamp: datetime = event["timestamp"]
        if timestamp >= (self._close_after.get(state.open_period)
                         or self.watermark_close_time(state.open_period)):
            self._close_months_before(state, timestamp, emitter)
        event_period = period_of(timestamp)
        cause = (f"{id_part(state.account_id)}:{id_part(event['event_id'])}", event["event_id"],
                 timestamp)
        if event_period > state.current_period:
            # The calendar month rolled over before this event: what depends on month-to-date
            # spend (a budget pause) is re-derived at the event's time, before it is charged.
            state.current_period = event_period
            self._settle(state, cause, emitter)
        rated = None
        if event_type == "usage":
            rated = self._usage(state, event, cost, event_period)
        else:
            getattr(self, f"_{event_type}")(state, event, cause, emitter)
        self._settle(state, cause, emitter)
        self._remember(state, event["event_id"], millis, emitter)
        if not emitter.outputs:  # most usage changes nothing that is published
            return Transition(state, emitter.outputs, rated)
        return Transition(state, self._with_snapshot(state, emitter), rated)

    @staticmethod
    def _check_totals_fit(state: AccountState, event: dict[str, Any], cost: Decimal) -> None:
        """Refuse an event whose money would take a running total past what outputs carry
        (decimal(18, 6)), before anything changes. Totals bound every balance: credit by what
        was purchased and granted, what is owed and month spend by lifetime spend."""
        if state.lifetime_spend + cost >= MONEY_LIMIT:
            raise InvalidEvent(f"usage costing {cost} would take the account's lifetime spend "
                               "past 1,000,000,000,000 (decimal(18, 6)); check its quantities",
                               "quantities")
        amount = event.get("amount")
        if event["type"] == "credits_purchased" \
                and state.lifetime_credits_purchased + amount >= MONEY_LIMIT:
            raise InvalidEvent(f"a purchase of {amount} would take the account's lifetime "
                               "purchases past 1,000,000,000,000 (decimal(18, 6))", "amount")

    def close_through(self, state: AccountState, period: str, cause_event_id: str,
                      timestamp: datetime) -> Transition:
        """Close every open month of ``state`` up to and including ``period``.

        Used for the watermark (by replay and by the worker's broadcast ``close_period``) and for
        ``close_period`` commands; closing an already closed month does nothing.
        """
        emitter = _Emitter(state.account_id)
        while state.open_period <= period:
            self._close_month(state, cause_event_id, timestamp, emitter)
        return Transition(state, self._with_snapshot(state, emitter))

    def closable_through(self, watermark: datetime) -> str:
        """The latest month whose close time the watermark has reached (all before it too)."""
        return previous_period(period_of(watermark - self.config.close_grace))

    def watermark_close_time(self, period: str) -> datetime:
        """When the event-time watermark closes ``period``: start of the next month + grace."""
        moment = self._close_after.get(period)
        if moment is None:
            moment = period_start(next_period(period)) + self.config.close_grace
            self._close_after[period] = moment
        return moment

    # -- opening an account --------------------------------------------------------------

    def _open(self, event: dict[str, Any], millis: int) -> Transition:
        config = self.config
        contract, requested = event["contract"], event["billing_model"]
        if contract == SELF_SERVE:
            model = PREPAID if event["created_at"] >= config.prepaid_cutover else POSTPAID
        else:
            model = requested or PREPAID
        period = period_of(event["timestamp"])
        tier = config.enterprise if contract == ENTERPRISE else config.tiers[0]
        state = AccountState(
            account_id=event["account_id"], contract=contract, billing_model=model,
            open_period=period, current_period=period, tier=tier.name,
            rpm_limit=tier.rpm_limit, tpm_limit=tier.tpm_limit, monthly_budget=tier.budget_max)
        if contract == SELF_SERVE:
            state.credit_balance = state.free_credit_granted = config.free_credit
        self.seen.start_account(state.account_id)
        emitter = _Emitter(state.account_id)
        cause = (f"{id_part(state.account_id)}:{id_part(event['event_id'])}", event["event_id"],
                 event["timestamp"])
        emitter.emit(*cause, "tier_changed", from_tier=None, to_tier=tier.name)
        emitter.emit(*cause, "rate_limits_changed", rpm_limit=tier.rpm_limit,
                     tpm_limit=tier.tpm_limit)
        if tier.budget_max is not None:
            emitter.emit(*cause, "budget_changed", monthly_budget=tier.budget_max,
                         reason="tier_default")
        if requested is not None and requested != model:
            emitter.emit(*cause, "command_rejected", rejected_type="account_opened",
                         reason=f"a self-serve account's billing model follows its sign-up date: "
                                f"{model}, not the requested {requested}")
        self._settle(state, cause, emitter)
        self._remember(state, event["event_id"], millis, emitter)
        return Transition(state, self._with_snapshot(state, emitter))

    def _account_opened(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                        emitter: _Emitter) -> None:
        emitter.emit(*cause, "command_rejected", rejected_type="account_opened",
                     reason=f"account {state.account_id} is already open")

    # -- usage ---------------------------------------------------------------------------

    def _usage(self, state: AccountState, event: dict[str, Any], cost: Decimal,
               own_period: str) -> dict[str, Any]:
        """Charge one usage event (``own_period``: the month of its timestamp). Usage in flight is
        always charged, even while paused."""
        late = own_period < state.open_period
        billed_period = state.current_period if late else own_period
        over_limit = state.suspended or bool(state.pause_reasons)
        if state.billing_model == PREPAID:
            state.credit_balance -= cost
        else:
            from_credit = min(cost, max(state.credit_balance, ZERO))
            state.credit_balance -= from_credit
            accrued = cost - from_credit
            if accrued:
                state.outstanding_balance += accrued
                state.month_unpaid[billed_period] = \
                    state.month_unpaid.get(billed_period, ZERO) + accrued
        state.month_spend[billed_period] = state.month_spend.get(billed_period, ZERO) + cost
        state.lifetime_spend += cost
        return {
            "event_id": event["event_id"], "account_id": state.account_id,
            "timestamp": event["timestamp"], "product": event["product"],
            "quantities": event["quantities"], "requests": event["requests"], "cost": cost,
            "billed_period": billed_period, "late": late, "over_limit": over_limit,
            "billing_model": state.billing_model, "tier": state.tier,
        }

    # -- payments ------------------------------------------------------------------------

    @staticmethod
    def _payment_record(event: dict[str, Any]) -> PaymentRecord:
        return PaymentRecord(event["type"], event.get("amount"), event.get("invoice_id"))

    def _is_payment_retry(self, state: AccountState, event: dict[str, Any]) -> bool:
        """Whether the event repeats a payment already recorded, identically: a retry under a
        new event id, which changes nothing."""
        payment_id = event.get("payment_id")
        if payment_id is None:
            return False
        return self.seen.payment(state.account_id, payment_id) == self._payment_record(event)

    def _payment_conflict(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                          emitter: _Emitter) -> bool:
        """A payment id already used differently: ``command_rejected`` naming both uses (a
        payment id is an idempotency key for ever). Otherwise the payment is recorded once the
        event is applied."""
        payment_id = event.get("payment_id")
        if payment_id is None:
            return False
        known = self.seen.payment(state.account_id, payment_id)
        if known is None:
            emitter.payment = (payment_id, self._payment_record(event))
            return False
        emitter.emit(*cause, "command_rejected", rejected_type=event["type"],
                     reason=f"payment_id {payment_id} was already used for {_describe(known)}; "
                            f"this {_describe(self._payment_record(event))} under the same "
                            "payment_id is refused (a new payment needs a new payment_id)")
        return True

    def _credits_purchased(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                           emitter: _Emitter) -> None:
        """Credits pay what is owed first (oldest invoice first), the rest becomes credit."""
        if self._payment_conflict(state, event, cause, emitter):
            return
        amount: Decimal = event["amount"]
        state.lifetime_credits_purchased += amount
        to_outstanding = min(amount, state.outstanding_balance)
        self._pay_outstanding(state, to_outstanding, event, cause, emitter)
        state.credit_balance += amount - to_outstanding
        if event["top_up_request_id"] is not None \
                and event["top_up_request_id"] == state.pending_top_up_request_id:
            state.pending_top_up_request_id = None
        state.top_up_failed = False
        emitter.emit(*cause, "credits_applied", amount=amount, payment_id=event["payment_id"],
                     invoice_id=None, receipt_url=event["receipt_url"],
                     applied_to_outstanding=to_outstanding,
                     applied_to_credit=amount - to_outstanding)

    def _pay_outstanding(self, state: AccountState, amount: Decimal, event: dict[str, Any],
                         cause: _Cause, emitter: _Emitter) -> None:
        """Settle ``amount`` of the outstanding balance, oldest charge first: issued invoices
        (each change an ``invoice_settled``), then the unclosed months' charges. Both are keyed
        so that sorting is chronological."""
        state.outstanding_balance -= amount
        for owed in (state.invoices, state.month_unpaid):
            for key in sorted(owed):
                if not amount:
                    return
                paid = min(amount, owed[key])
                amount -= paid
                if owed is state.invoices:
                    self._settle_invoice(state, key, paid, event, cause, emitter)
                elif paid == owed[key]:
                    del owed[key]
                else:
                    owed[key] -= paid

    @staticmethod
    def _settle_invoice(state: AccountState, invoice_id: str, paid: Decimal,
                        event: dict[str, Any], cause: _Cause, emitter: _Emitter) -> None:
        """``paid`` of an open invoice's unpaid amount is paid by ``event`` (a purchase or an
        ``invoice_paid``): the invoice closes at zero; ``invoice_settled`` says what is left."""
        unpaid = state.invoices[invoice_id] - paid
        payment_ids = state.invoice_payment_ids.get(invoice_id, ())
        if event["type"] == "invoice_paid" and event["payment_id"] is not None:
            payment_ids = (*payment_ids, event["payment_id"])
        if unpaid:
            state.invoices[invoice_id] = unpaid
            if payment_ids:
                state.invoice_payment_ids[invoice_id] = payment_ids
        else:
            del state.invoices[invoice_id]
            state.invoice_payment_ids.pop(invoice_id, None)
            if payment_ids:
                millis = to_millis(event["timestamp"])
                state.closed_invoice_payment_ids = {
                    **state.closed_invoice_payment_ids,
                    **dict.fromkeys(payment_ids, millis)}
        emitter.emit(*cause, "invoice_settled", invoice_id=invoice_id, amount_paid=paid,
                     unpaid=unpaid, status="partially_paid" if unpaid else "paid",
                     payment_id=event["payment_id"], paid_by=event["type"])

    def _payment_failed(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                        emitter: _Emitter) -> None:
        """A failed auto top-up blocks further requests; other failed payments change nothing."""
        if self._payment_conflict(state, event, cause, emitter):
            return
        if event["top_up_request_id"] is not None \
                and event["top_up_request_id"] == state.pending_top_up_request_id:
            state.pending_top_up_request_id = None
            state.top_up_failed = True

    def _invoice_paid(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                      emitter: _Emitter) -> None:
        invoice_id, amount = event["invoice_id"], event["amount"]
        unpaid = state.invoices.get(invoice_id)
        if unpaid is None or amount > unpaid:
            reason = (f"invoice {invoice_id} is not open (unknown or already settled)"
                      if unpaid is None else
                      f"payment {amount} exceeds the {unpaid} still unpaid on invoice {invoice_id}")
            emitter.emit(*cause, "command_rejected", rejected_type="invoice_paid", reason=reason)
            return
        if self._payment_conflict(state, event, cause, emitter):
            return
        self._settle_invoice(state, invoice_id, amount, event, cause, emitter)
        state.outstanding_balance -= amount
        state.lifetime_invoice_payments += amount
        emitter.emit(*cause, "credits_applied", amount=amount, payment_id=event["payment_id"],
                     invoice_id=invoice_id, receipt_url=None, applied_to_outstanding=amount,
                     applied_to_credit=ZERO)

    def _payment_method_added(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                              emitter: _Emitter) -> None:
        if event["payment_method_id"] not in state.payment_methods:
            state.payment_methods = sorted([*state.payment_methods, event["payment_method_id"]])

    def _payment_method_removed(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                                emitter: _Emitter) -> None:
        method = event["payment_method_id"]
        if method not in state.payment_methods:
            emitter.emit(*cause, "command_rejected", rejected_type="payment_method_removed",
                         reason=f"payment method {method} is not on file")
            return
        state.payment_methods = [known for known in state.payment_methods if known != method]

    # -- account settings ----------------------------------------------------------------

    def _auto_top_up_configured(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                                emitter: _Emitter) -> None:
        reason = None
        if state.billing_model != PREPAID:
            reason = "auto top-up applies to prepaid accounts only; this account is postpaid"
        elif event["enabled"] and not state.has_payment_method:
            reason = "auto top-up needs a payment method on file"
        if reason:
            emitter.emit(*cause, "command_rejected", rejected_type="auto_top_up_configured",
                         reason=reason)
            return
        state.auto_top_up_enabled = event["enabled"]
        state.auto_top_up_minimum = event["minimum_balance"]
        state.auto_top_up_amount = event["top_up_amount"]
        state.top_up_failed = False

    def _budget_set(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                    emitter: _Emitter) -> None:
        budget: Decimal | None = event["monthly_budget"]
        maximum = self._tier(state).budget_max
        if budget is not None and maximum is not None and budget > maximum:
            emitter.emit(*cause, "command_rejected", rejected_type="budget_set",
                         reason=f"monthly budget {budget} is above the tier {state.tier} "
                                f"maximum of {maximum}")
            return
        state.customer_budget = budget

    # -- month close ---------------------------------------------------------------------

    def _close_period(self, state: AccountState, event: dict[str, Any], cause: _Cause,
                      emitter: _Emitter) -> None:
        _, cause_event_id, timestamp = cause
        while state.open_period <= event["period"]:
            self._close_month(state, cause_event_id, timestamp, emitter)

    def _close_months_before(self, state: AccountState, timestamp: datetime,
                             emitter: _Emitter) -> None:
        """An event past a month's close time proves the watermark passed it: close it first.

        The watermark is the largest usage time seen; an account's own event beyond a month's
        close time means the watermark is beyond it too. Closing here keeps an account's invoice
        independent of how the pipeline interleaves other accounts.
        """
        while timestamp >= self.watermark_close_time(state.open_period):
            period = state.open_period
            self._close_month(state, WATERMARK_CAUSE_PREFIX + period,
                              self.watermark_close_time(period), emitter)

    def _close_month(self, state: AccountState, cause_event_id: str, timestamp: datetime,
                     emitter: _Emitter) -> None:
        """Close the oldest open month: invoice its unpaid postpaid charges, reset its spend."""
        period = state.open_period
        cause = (f"{id_part(state.account_id)}:close:{period}", cause_event_id, timestamp)
        state.month_spend.pop(period, None)
        unpaid = state.month_unpaid.pop(period, ZERO)
        if state.billing_model == POSTPAID and unpaid > 0:
            invoice_id = f"inv-{state.account_id}-{period}"
            state.invoices[invoice_id] = unpaid
            emitter.emit(*cause, "invoice_issued", invoice_id=invoice_id, period=period,
                         amount=unpaid, due_date=(timestamp + self.config.invoice_net_terms).date())
        state.open_period = next_period(period)
        if state.current_period < state.open_period:
            state.current_period = state.open_period
        self._settle(state, cause, emitter)

    # -- derived state: tier, limits, budget, top-up, suspension, pause -----------------

    def _tier(self, state: AccountState) -> Tier:
        return self._tier_by_name[state.tier]

    def _earned_tier(self, state: AccountState) -> Tier:
        """The tier the account qualifies for now; never below the one it already has."""
        config = self.config
        if state.contract == ENTERPRISE:
            return config.enterprise
        tiers = config.tiers
        current = self._tier_rank[state.tier]
        if state.payment_methods and current + 1 < len(tiers):
            # Qualifying amounts increase from tier to tier (BillingConfig checks it), so when the
            # next tier is out of reach so is every tier above it: the common case stops here.
            reach = tiers[current + 1].qualifying_amount
            if state.lifetime_spend >= reach or state.lifetime_credits_purchased >= reach:
                qualifying = max(state.lifetime_spend, state.lifetime_credits_purchased)
                for rank in range(len(tiers) - 1, current, -1):  # the highest reached
                    if qualifying >= tiers[rank].qualifying_amount:
                        return tiers[rank]
        return tiers[current]

    def _settle(self, state: AccountState, cause: _Cause, emitter: _Emitter) -> None:
        """Re-derive everything that depends on balances and settings; emit what changed."""
        tier = self._earned_tier(state)
        if tier.name != state.tier:
            emitter.emit(*cause, "tier_changed", from_tier=state.tier, to_tier=tier.name)
            state.tier = tier.name
        rpm_limit = tier.rpm_limit
        if state.contract == SELF_SERVE and not state.payment_methods:
            rpm_limit = self.config.no_payment_method_rpm
        if rpm_limit != state.rpm_limit or tier.tpm_limit != state.tpm_limit:
            state.rpm_limit, state.tpm_limit = rpm_limit, tier.tpm_limit
            emitter.emit(*cause, "rate_limits_changed", rpm_limit=rpm_limit,
                         tpm_limit=tier.tpm_limit)
        budget = tier.budget_max if state.customer_budget is None else (
            state.customer_budget if tier.budget_max is None
            else min(state.customer_budget, tier.budget_max))
        if budget != state.monthly_budget:
            state.monthly_budget = budget
            set_by_customer = state.customer_budget is not None and budget == state.customer_budget
            emitter.emit(*cause, "budget_changed", monthly_budget=budget,
                         reason="customer" if set_by_customer else "tier_default")
        # The guards skip calls that cannot change anything in the common case (auto top-up off;
        # not suspended and a payment method on file): this runs after every usage event.
        if state.auto_top_up_enabled:
            self._maybe_request_top_up(state, cause, emitter)
        if state.suspended or not state.payment_methods:
            self._update_suspension(state, cause, emitter)
        reasons = self._pause_reasons(state)
        if reasons != state.pause_reasons:
            self._update_pause(state, reasons, cause, emitter)

    def _maybe_request_top_up(self, state: AccountState, cause: _Cause,
                              emitter: _Emitter) -> None:
        if (state.billing_model == PREPAID and state.auto_top_up_enabled
                and state.has_payment_method and not state.top_up_failed
                and state.pending_top_up_request_id is None
                and state.credit_balance <= state.auto_top_up_minimum):
            state.top_ups_requested += 1
            request_id = f"topup-{state.account_id}-{state.top_ups_requested}"
            state.pending_top_up_request_id = request_id
            emitter.emit(*cause, "top_up_requested", amount=state.auto_top_up_amount,
                         top_up_request_id=request_id)

    def _update_suspension(self, state: AccountState, cause: _Cause, emitter: _Emitter) -> None:
        """Self-serve accounts without a payment method are suspended when credit runs out;
        only adding a payment method reinstates them."""
        if state.suspended and state.has_payment_method:
            state.suspended = False
            emitter.emit(*cause, "account_reinstated", reason="payment_method_added")
        elif (not state.suspended and state.contract == SELF_SERVE
              and not state.has_payment_method and state.credit_balance <= 0):
            state.suspended = True
            emitter.emit(*cause, "account_suspended", reason="free_credit_exhausted")

    def _pause_reasons(self, state: AccountState) -> tuple[str, ...]:
        """The reasons, sorted: budget_reached < credits_exhausted < top_up_failed, so adding
        them in that order needs no sort."""
        budget = state.monthly_budget
        over_budget = budget is not None \
            and state.month_spend.get(state.current_period, ZERO) >= budget  # month_to_date_spend
        credit = None
        if state.billing_model == PREPAID and state.credit_balance <= 0:
            if state.top_up_failed:
                credit = TOP_UP_FAILED
            elif (state.pending_top_up_request_id is None
                  or state.credit_balance <= -state.auto_top_up_amount):
                credit = CREDITS_EXHAUSTED
        if credit is None:
            return (BUDGET_REACHED,) if over_budget else ()
        return (BUDGET_REACHED, credit) if over_budget else (credit,)

    def _update_pause(self, state: AccountState, reasons: tuple[str, ...], cause: _Cause,
                      emitter: _Emitter) -> None:
        """The pause reasons changed: ``usage_paused`` for each new one; ``usage_resumed`` when
        none is left (and the account is not suspended, which ``account_reinstated`` announces
        instead)."""
        previous, state.pause_reasons = state.pause_reasons, reasons
        for reason in reasons:
            if reason not in previous:
                emitter.emit(*cause, "usage_paused", reason=reason)
        if not reasons and not state.suspended:
            emitter.emit(*cause, "usage_resumed", reason=",".join(previous))

    # -- bookkeeping ---------------------------------------------------------------------

    def _remember(self, state: AccountState, event_id: str, millis: int,
                  emitter: _Emitter) -> None:
        """Record an applied event's id (and payment id); forget the buckets of ids that the
        horizon now refuses before looking them up (see :mod:`billing.seen_ids`).

        Ids exist only up to the newest event's bucket, and the buckets before the old cut were
        forgotten when it was reached, so the range to forget is short whatever the gap.
        """
        seen, account_id = self.seen, state.account_id
        seen.add_event(account_id, millis // BUCKET_MS, event_id)
        if emitter.payment is not None:
            seen.add_payment(account_id, *emitter.payment)
        newest = state.last_event_ms
        if millis > newest:
            state.last_event_ms = millis
            if state.closed_invoice_payment_ids:
                self._forget_closed_payments(state)
            if newest:
                first = (newest - self._horizon_ms) // BUCKET_MS
                end = min((millis - self._horizon_ms) // BUCKET_MS, newest // BUCKET_MS + 1)
                if end > first:
                    seen.forget_buckets(account_id, first, end, millis // BUCKET_MS)

    def _forget_closed_payments(self, state: AccountState) -> None:
        """Drop the closed invoices' payment ids the horizon has passed: an event that old is
        refused as late, so its redelivery never reaches :meth:`remember_again`."""
        oldest = state.last_event_ms - self._horizon_ms
        closed = state.closed_invoice_payment_ids
        if min(closed.values()) < oldest:
            state.closed_invoice_payment_ids = {
                payment_id: millis for payment_id, millis in closed.items() if millis >= oldest}

    def remember_again(self, state: AccountState, event: dict[str, Any]) -> None:
        """Record again the ids of an event that ``state`` shows applied (by its input position),
        in case they were lost: the worker makes a batch's states durable before its seen ids,
        and a crash between the two keeps the states and loses the ids (``streams/commit.py``).
        Without them, a later copy of the event would be charged again.

        Exactly what applying it recorded: its event id (unless the horizon has passed it: its
        bucket is forgotten), and the payment id of a purchase or a failed payment if the
        account has none under that id (those check their payment id first, and record it when
        unknown). An ``invoice_paid`` recorded its payment id only if it was applied, not
        refused for its invoice. The state tells: while the invoice stays open, its
        ``invoice_payment_ids`` (a retry could pay it again), and once it is paid, its
        ``closed_invoice_payment_ids`` within the horizon (a retry is refused as not open, but
        another payment under the same id must still be refused as a conflict). The buckets
        its application forgot are not forgotten again: they are past the horizon, never looked
        up (they only take space)."""
        seen, account_id = self.seen, state.account_id
        millis = to_millis(event["timestamp"])
        if millis >= state.last_event_ms - self._horizon_ms:
            bucket = millis // BUCKET_MS
            if not seen.has_event(account_id, bucket, event["event_id"]):
                seen.add_event(account_id, bucket, event["event_id"])
        payment_id = event.get("payment_id")
        if payment_id is None or seen.payment(account_id, payment_id) is not None:
            return
        if event["type"] in PAYMENT_ID_FIRST \
                or payment_id in state.invoice_payment_ids.get(event.get("invoice_id"), ()) \
                or payment_id in state.closed_invoice_payment_ids:
            seen.add_payment(account_id, payment_id, self._payment_record(event))

    def _with_snapshot(self, state: AccountState, emitter: _Emitter) -> list[dict[str, Any]]:
        if emitter.outputs:
            shared = snapshot(state)
            for output in emitter.outputs:
                output["snapshot"] = shared
        return emitter.outputs


def _describe(record: PaymentRecord) -> str:
    amount = "" if record.amount is None else f" of {record.amount}"
    invoice = "" if record.invoice_id is None else f" on invoice {record.invoice_id}"
    return f"{record.event_type}{amount}{invoice}"


def snapshot(state: AccountState) -> dict[str, Any]:
    """The account as published in every output event (section 6)."""
    return {
        "account_id": state.account_id,
        "billing_model": state.billing_model,
        "contract": state.contract,
        "status": state.status,
        "pause_reasons": list(state.pause_reasons),
        "credit_balance": state.credit_balance,
        "outstanding_balance": state.outstanding_balance,
        "month_to_date_spend": state.month_to_date_spend,
        "open_period": state.current_period,
        "lifetime_spend": state.lifetime_spend,
        "lifetime_credits_purchased": state.lifetime_credits_purchased,
        "tier": state.tier,
        "monthly_budget": state.monthly_budget,
        "rpm_limit": state.rpm_limit,
        "tpm_limit": state.tpm_limit,
        "has_payment_method": state.has_payment_method,
        "auto_top_up": {
            "enabled": state.auto_top_up_enabled,
            "minimum_balance": state.auto_top_up_minimum,
            "top_up_amount": state.auto_top_up_amount,
        },
        "pending_top_up_request_id": state.pending_top_up_request_id,
    }


__all__ = ["ENTERPRISE_TIER", "AccountState", "Ledger", "LedgerFault", "Transition", "id_part",
           "snapshot"]
