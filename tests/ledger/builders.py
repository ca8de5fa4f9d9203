"""Building input events and driving the ledger in tests, without I/O.

- :class:`Events` makes the input events of one account as JSON-like dicts (money as strings,
  ISO-8601 times), passes them through :func:`billing.events.normalize_input` and returns the
  canonical event. Event ids are generated (``usage-3``) unless given; the clock moves one minute
  per event unless ``at=`` is given (a later default continues from the last explicit time).
- :class:`Run` holds a :class:`~billing.ledger.Ledger` and the account states, applies events and
  keeps every output, the way the worker would (without the global watermark; use
  :class:`billing.replay.Replay` for that).
- ``TEST_PRICEBOOK`` is the default price book plus a ``metered`` product whose ``usd_micros`` meter
  costs $1 per million units, so ``usage(cost="83")`` charges exactly $83.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.config import BillingConfig, Tier
from billing.events import MICRO, normalize_input, parse_time
from billing.ledger import AccountState, Ledger, Transition, snapshot
from billing.pricebook import PriceBook
from runtime.rules_files import load_pricebook

CUTOVER = "2025-06-01T00:00:00.000Z"
JUST_BEFORE_CUTOVER = "2025-05-31T23:59:59.999Z"
START = "2025-07-01T00:00:00.000Z"  # all accounts below open in July 2025 unless told otherwise

_DEFAULT_BOOK = load_pricebook()
TEST_PRICEBOOK = PriceBook({**_DEFAULT_BOOK.products, "metered": {"usd_micros": Decimal("1")}})
DEFAULT_CONFIG = BillingConfig()

# Tiers whose budget maximum is below the next tier's qualifying amount, so that a tier-default
# budget can be reached without the spend itself lifting the tier (impossible with the defaults:
# the tier-k budget max equals the tier-(k+1) qualifying amount).
SMALL_TIERS_CONFIG = BillingConfig(tiers=(
    Tier("0", Decimal("0"), None, 10, 60_000),
    Tier("1", Decimal("0"), Decimal("10.000000"), 6_000, 3_600_000),
    Tier("2", Decimal("100"), Decimal("1000.000000"), 6_000, 7_200_000),
))


NOW = object()  # a field value meaning "the event's own timestamp"


def money(value: str | int | Decimal) -> Decimal:
    """An exact amount with 6 fractional digits, like the ledger's."""
    return Decimal(str(value)).quantize(MICRO)


def at(value: str) -> datetime:
    return parse_time(value)


def micros(cost: str | int | Decimal) -> int:
    """Units of the ``metered`` product that cost exactly ``cost`` dollars."""
    return int(money(cost) * 1_000_000)


class Events:
    """Input events of one account, canonical, with generated ids and a moving clock."""

    def __init__(self, account_id: str = "acct-1", start: str = START,
                 step: timedelta = timedelta(minutes=1)) -> None:
        self.account_id = account_id
        self.clock = at(start) - step
        self.step = step
        self.counter = 0

    def _make(self, event_type: str, at_time: str | datetime | None, event_id: str | None,
              account_id: str | None = None, **fields: Any) -> dict[str, Any]:
        if at_time is None:
            self.clock += self.step
        else:
            self.clock = at_time if isinstance(at_time, datetime) else at(at_time)
        self.counter += 1
        timestamp = self.clock.isoformat().replace("+00:00", "Z")
        raw = {"type": event_type, "event_id": event_id or f"{event_type}-{self.counter}",
               "account_id": self.account_id if account_id is None else account_id,
               "timestamp": timestamp,
               **{name: timestamp if value is NOW else value for name, value in fields.items()}}
        return normalize_input(raw)

    def opened(self, contract: str = "self_serve", created_at: str | None = None,
               billing_model: str | None = None, *, at: str | None = None,
               event_id: str | None = None) -> dict[str, Any]:
        """``created_at`` defaults to the event's own time."""
        return self._make("account_opened", at, event_id,
                          created_at=NOW if created_at is None else created_at,
                          contract=contract, billing_model=billing_model)

    def usage(self, cost: str | None = None, *, product: str | None = None,
              quantities: dict[str, int] | None = None, requests: int = 1, at: str | None = None,
              event_id: str | None = None) -> dict[str, Any]:
        """Usage costing exactly ``cost`` (metered product), or of ``product``/``quantities``."""
        if cost is not None:
            product, quantities = "metered", {"usd_micros": micros(cost)}
        return self._make("usage", at, event_id, product=product, quantities=quantities,
                          requests=requests)

    def purchase(self, amount: str, *, top_up_request_id: str | None = None,
                 payment_id: str | None = None, at: str | None = None,
                 event_id: str | None = None) -> dict[str, Any]:
        return self._make("credits_purchased", at, event_id, amount=amount,
                          payment_id=payment_id or f"pay-{self.counter + 1}",
                          receipt_url=None, top_up_request_id=top_up_request_id)

    def payment_failed(self, *, top_up_request_id: str | None = None, reason: str = "card_declined",
                       at: str | None = None, event_id: str | None = None) -> dict[str, Any]:
        return self._make("payment_failed", at, event_id, payment_id=f"pay-{self.counter + 1}",
                          reason=reason, top_up_request_id=top_up_request_id)

    def pm_added(self, payment_method_id: str = "pm-1", *, at: str | None = None,
                 event_id: str | None = None) -> dict[str, Any]:
        return self._make("payment_method_added", at, event_id,
                          payment_method_id=payment_method_id)

    def pm_removed(self, payment_method_id: str = "pm-1", *, at: str | None = None,
                   event_id: str | None = None) -> dict[str, Any]:
        return self._make("payment_method_removed", at, event_id,
                          payment_method_id=payment_method_id)

    def invoice_paid(self, invoice_id: str, amount: str, *, at: str | None = None,
                     event_id: str | None = None) -> dict[str, Any]:
        return self._make("invoice_paid", at, event_id, invoice_id=invoice_id, amount=amount)

    def auto_top_up(self, enabled: bool = True, minimum_balance: str = "5",
                    top_up_amount: str = "10", *, at: str | None = None,
                    event_id: str | None = None) -> dict[str, Any]:
        return self._make("auto_top_up_configured", at, event_id, enabled=enabled,
                          minimum_balance=minimum_balance, top_up_amount=top_up_amount)

    def budget(self, monthly_budget: str | None, *, at: str | None = None,
               event_id: str | None = None) -> dict[str, Any]:
        return self._make("budget_set", at, event_id, monthly_budget=monthly_budget)

    def close_period(self, period: str, *, broadcast: bool = False, at: str | None = None,
                     event_id: str | None = None) -> dict[str, Any]:
        return self._make("close_period", at, event_id, account_id="" if broadcast else None,
                          period=period)


class Run:
    """One ledger and its accounts; applies canonical events and remembers every output."""

    def __init__(self, config: BillingConfig = DEFAULT_CONFIG,
                 pricebook: PriceBook = TEST_PRICEBOOK) -> None:
        self.ledger = Ledger(config, pricebook)
        self.states: dict[str, AccountState] = {}
        self.outputs: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> Transition:
        transition = self.ledger.apply(self.states.get(event["account_id"]), event)
        if transition.state is not None:
            self.states[event["account_id"]] = transition.state
        self.outputs.extend(transition.outputs)
        return transition

    def all(self, *events: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply several events; return their outputs, in order."""
        outputs: list[dict[str, Any]] = []
        for event in events:
            outputs.extend(self(event).outputs)
        return outputs

    def state(self, account_id: str = "acct-1") -> AccountState:
        return self.states[account_id]

    def snap(self, account_id: str = "acct-1") -> dict[str, Any]:
        return snapshot(self.states[account_id])

    def copy_state(self, account_id: str = "acct-1") -> AccountState:
        return copy.deepcopy(self.states[account_id])


# -- opening accounts in a known situation ----------------------------------------------------

def prepaid_with_card(run: Run, events: Events, credit: str | None = None) -> None:
    """A new self-serve prepaid account with a payment method and, optionally, ``credit`` bought
    (on top of the $1 free credit)."""
    run(events.opened())
    run(events.pm_added())
    if credit is not None:
        run(events.purchase(credit))


def enterprise_postpaid(run: Run, events: Events, with_card: bool = True) -> None:
    """An enterprise postpaid account: no free credit, no budget, never suspended."""
    run(events.opened("enterprise", billing_model="postpaid"))
    if with_card:
        run(events.pm_added())


def grandfathered_postpaid(run: Run, events: Events, with_card: bool = True) -> None:
    """A self-serve account created before the cutover (postpaid, $1 free credit)."""
    run(events.opened(created_at="2025-01-15T00:00:00Z"))
    if with_card:
        run(events.pm_added())


# -- looking at outputs -----------------------------------------------------------------------

def types(outputs: list[dict[str, Any]]) -> list[str]:
    return [output["type"] for output in outputs]


def of_type(outputs: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [output for output in outputs if output["type"] == event_type]


def only(outputs: list[dict[str, Any]], event_type: str) -> dict[str, Any]:
    """The single output of ``event_type``; fails if there are none or several."""
    found = of_type(outputs, event_type)
    assert len(found) == 1, f"expected one {event_type}, got {types(outputs)}"
    return found[0]


def ledger_view(state: AccountState) -> dict[str, Any]:
    """Everything an event may change, except the dedup memory (ids seen, latest event time)."""
    return {item.name: copy.deepcopy(getattr(state, item.name))
            for item in dataclasses.fields(state)
            if item.name != "last_event_ms"}
