"""Seeded, realistic input workloads: replay and pipeline tests, benchmarks, load runs.

``generate`` yields input events in the JSON form the pipeline reads (one ``billing replay`` line,
one producer payload): the canonical form of :mod:`billing.events` rendered for JSON, so that
``dumps(normalize_input(event))`` gives back exactly ``orjson.dumps(event)``. Money is a string with
6 fractional digits, times are ISO-8601 with milliseconds and ``Z``, optional fields are ``null``.

What the stream looks like (defaults: one calendar month from 2026-01-01, plus 6 hours of the next
month so the watermark closes the month at +1 h and ``invoice_paid`` for it can follow):

- a population mix (``KINDS``): new self-serve prepaid accounts with and without auto top-up,
  grandfathered self-serve postpaid accounts (signed up before the prepaid cutover), enterprise
  postpaid and prepaid accounts, and free-credit-only accounts that never add a payment method;
- ``account_opened`` first for every account (most in the first minutes, some during the month),
  then payment methods, credit purchases, auto top-up and budget settings, a few removed payment
  methods, failed card payments and ``invoice_paid`` for the previous month (unknown invoices: the
  ledger rejects them, which is the point) and, after the month closes, for the month just invoiced;
- usage from the price book's products with heavy-tailed activity per account, a diurnal and weekly
  cycle, token counts per request from hundreds to tens of thousands and GPU seconds for
  deployments;
- money in proportion (``SPEND_PER_ACTIVITY``): each account spends a planned amount a month, set
  against what its kind buys, whatever the number of events asked for. A usage event is a gateway's
  batch of requests, sized so the account's events add up to that spend: fewer events per account,
  bigger batches. Over a month a good third of manual prepaid customers run out and are paused
  (most buy again), auto top-up accounts top up several times (some payments fail), free-credit-only
  accounts use up their $1 and are suspended, busy accounts cross spend tiers, and postpaid invoices
  run from a few dollars (self-serve) to thousands (enterprise);
- ~0.5 % exact re-sends (same bytes, up to 30 s later), ~0.2 % late usage (event time up to 3 h
  behind its arrival), and, on request, a fraction of invalid lines for dead-letter tests.

The file is in arrival order: timestamps never decrease except on those re-sends and late events,
which is what a producer does. Ties are broken by a sequence number, so the output is a function of
the arguments alone (``random.Random`` seeded with a string; integer sampling, no platform maths).

No payment processor runs offline, yet a top-up request needs an answer. The generator keeps an
integer shadow of each account's credit, using the price book's exact rating: when the shadow
balance falls to the auto top-up minimum it answers (a purchase or, sometimes, a failure) with the
``topup-{account}-{n}`` id the ledger is about to request. Manual prepaid customers refill some
time after running out, and customers mostly stop sending usage while paused or suspended (a little
still arrives, as in flight). The shadow is an estimate: where it drifts from the ledger, an answer
carries an id that is not the pending one and the ledger just applies the money.

Memory stays proportional to accounts, not events: usage is drawn hour by hour and merged with a
heap of scheduled events.
"""

from __future__ import annotations

import heapq
import os
import random
from bisect import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import click
import orjson
from tqdm import tqdm

from billing.config import BillingConfig
from billing.ledger import EPOCH, to_millis
from billing.pricebook import PriceBook
from runtime.rules_files import load_pricebook

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
TAIL = timedelta(hours=6)  # of the month after the span's month: the watermark closes it at +1 h

SELF_SERVE_PREPAID = "self_serve_prepaid"
SELF_SERVE_AUTO_TOP_UP = "self_serve_auto_top_up"
GRANDFATHERED_POSTPAID = "grandfathered_postpaid"
ENTERPRISE_POSTPAID = "enterprise_postpaid"
ENTERPRISE_PREPAID = "enterprise_prepaid"
FREE_CREDIT_ONLY = "free_credit_only"
KINDS = (SELF_SERVE_PREPAID, SELF_SERVE_AUTO_TOP_UP, GRANDFATHERED_POSTPAID, ENTERPRISE_POSTPAID,
         ENTERPRISE_PREPAID, FREE_CREDIT_ONLY)
DEFAULT_MIX: Mapping[str, int] = {
    SELF_SERVE_PREPAID: 30, SELF_SERVE_AUTO_TOP_UP: 15, GRANDFATHERED_POSTPAID: 22,
    ENTERPRISE_POSTPAID: 6, ENTERPRISE_PREPAID: 5, FREE_CREDIT_ONLY: 22,
}
ENTERPRISE_KINDS = (ENTERPRISE_POSTPAID, ENTERPRISE_PREPAID)

SECOND_MS, MINUTE_MS, HOUR_MS, DAY_MS = 1_000, 60_000, 3_600_000, 86_400_000
MONTH_MS = 30 * DAY_MS  # the unit of SPEND_PER_ACTIVITY
MICROS = 1_000_000  # money is handled as integer micro-dollars here, never as a float
CENTS = 10_000  # micros
PER_MILLE = 1_000  # the unit of an account's usage scale

# Relative usage by UTC hour (American and European working days overlap around 14-17 UTC), and
# weekend days in tenths of a weekday.
HOUR_WEIGHTS = (4, 3, 3, 3, 3, 4, 5, 7, 9, 10, 10, 10, 10, 11, 12, 13, 13, 12, 11, 10, 9, 7, 6, 5)
WEEKDAY_TENTHS, WEEKEND_TENTHS = 10, 6


class _Table:
    """A discrete distribution of integers: buckets of (weight, low, high), uniform inside one.

    Draws use ``random()`` and integer arithmetic only, so a seed gives the same numbers on every
    platform (``lognormvariate`` and friends go through libm and need not).
    """

    __slots__ = ("cumulative", "lows", "spans", "total")

    def __init__(self, *buckets: tuple[int, int, int]) -> None:
        self.cumulative: list[int] = []
        self.lows = [low for _, low, _ in buckets]
        self.spans = [high - low + 1 for _, low, high in buckets]
        running = 0
        for weight, _, _ in buckets:
            running += weight
            self.cumulative.append(running)
        self.total = running

    def draw(self, rand: Callable[[], float]) -> int:
        index = bisect(self.cumulative, rand() * self.total)
        return self.lows[index] + int(rand() * self.spans[index])

    def mean(self) -> Fraction:
        """The exact mean of :meth:`draw`."""
        previous, total = 0, Fraction(0)
        for running, low, span in zip(self.cumulative, self.lows, self.spans, strict=True):
            total += (running - previous) * (low + Fraction(span - 1, 2))
            previous = running
        return total / self.total


def _choice(*weighted: tuple[int, int]) -> _Table:
    """A table of exact values: (weight, value) pairs."""
    return _Table(*((weight, value, value) for weight, value in weighted))


def _dollars(*weighted: tuple[int, int]) -> _Table:
    return _choice(*((weight, dollars * MICROS) for weight, dollars in weighted))


def _cents(*buckets: tuple[int, int, int]) -> _Table:
    """Amounts uniform in whole cents: (weight, low, high) in cents."""
    return _Table(*((weight, low * CENTS, high * CENTS) for weight, low, high in buckets))


INPUT_TOKENS = _Table((15, 50, 300), (25, 300, 1_000), (30, 1_000, 4_000), (20, 4_000, 16_000),
                      (8, 16_000, 64_000), (2, 64_000, 128_000))
OUTPUT_TOKENS = _Table((20, 10, 100), (40, 100, 500), (30, 500, 2_000), (10, 2_000, 8_000))
CACHED_INPUT_PERCENT = 35  # of requests to models that price cached input
GPU_SECONDS = _Table((30, 30, 120), (45, 120, 600), (25, 600, 3_600))  # one metering interval
OTHER_UNITS = _Table((1, 1, 1_000))  # a meter this module has no model for
CACHED_INPUT = "cached_input_tokens"
METER_TABLES = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                "gpu_seconds": GPU_SECONDS}
REQUESTS = _Table((60, 1, 1), (30, 2, 5), (10, 6, 20))
ACTIVITY = _choice((40, 1), (30, 3), (18, 10), (9, 30), (3, 100))  # relative usage per account
ENTERPRISE_ACTIVITY = 4
# Usage spend per month per unit of activity, by kind: an account's monthly spend is its activity
# times a draw of this, heavy-tailed like activity. Sized against what each kind pays: manual
# prepaid customers start with $5-$250 (STARTER_CREDITS), auto top-ups bring $20-$100, the tiers
# are at $50 and $500, enterprise contracts buy thousands and the free credit is $1.
SPEND_PER_ACTIVITY: Mapping[str, _Table] = {
    SELF_SERVE_PREPAID: _cents((1, 200, 600)),
    SELF_SERVE_AUTO_TOP_UP: _cents((1, 400, 1_200)),
    GRANDFATHERED_POSTPAID: _cents((1, 300, 1_000)),
    ENTERPRISE_POSTPAID: _cents((1, 4_000, 12_000)),
    ENTERPRISE_PREPAID: _cents((1, 4_000, 12_000)),
    FREE_CREDIT_ONLY: _cents((1, 30, 150)),
}

STARTER_CREDITS = _dollars((20, 5), (25, 10), (20, 20), (10, 25), (12, 50), (8, 100), (5, 250))
REFILL_CREDITS = _dollars((20, 10), (30, 20), (25, 50), (15, 100), (7, 250), (3, 500))
ENTERPRISE_CREDITS = _dollars((30, 1_000), (30, 2_500), (25, 5_000), (15, 10_000))
PAYDOWN = _dollars((30, 10), (30, 20), (25, 50), (15, 100))
TOP_UP_MINIMUM = _dollars((40, 5), (40, 10), (20, 20))
TOP_UP_AMOUNT = _dollars((30, 20), (45, 50), (25, 100))
ENTERPRISE_TOP_UP_MINIMUM = _dollars((50, 200), (50, 500))
ENTERPRISE_TOP_UP_AMOUNT = _dollars((50, 1_000), (50, 2_500))
SELF_SERVE_BUDGET = _dollars((20, 5), (25, 10), (25, 20), (15, 30), (15, 40))  # <= tier 1's $50
ENTERPRISE_BUDGET = _dollars((40, 2_000), (40, 5_000), (20, 20_000))
OLD_INVOICE_PAYMENT = _dollars((40, 10), (40, 50), (20, 500))

ANSWER_DELAY_MS = _Table((1, 2 * SECOND_MS, 90 * SECOND_MS))  # payment processor round trip
REFILL_DELAY_MS = _Table((50, 5 * MINUTE_MS, HOUR_MS), (35, HOUR_MS, 6 * HOUR_MS),
                         (15, 6 * HOUR_MS, 48 * HOUR_MS))
RESEND_DELAY_MS = _Table((1, 100, 30 * SECOND_MS))
LATENESS_MS = _Table((80, SECOND_MS, 10 * MINUTE_MS), (20, 10 * MINUTE_MS, 3 * HOUR_MS))
PAYMENT_FAILURES = ("card_declined", "insufficient_funds", "expired_card", "do_not_honor")
TOP_UP_FAILURE_PERCENT = 8
REFILL_PERCENT = 80  # of manual prepaid customers who buy more credit after running out
IN_FLIGHT_PERCENT = 3  # of usage a paused or suspended account still sends
REPICKS = 4  # draws of another account when the drawn one is paused or suspended
INVOICE_PAYER_PERCENT = 35  # postpaid accounts paying half their invoice in the tail
INVOICE_PAYMENT_DELAY_MS = 90 * MINUTE_MS  # after the month start: the close (1 h grace) is past
INITIAL_COHORT_MS = 5 * MINUTE_MS
BAD_PRODUCT = "unreleased-model-v0"


def month_after(moment: datetime) -> datetime:
    """Midnight UTC on the first day of the month after ``moment``'s month."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    year, month = divmod(moment.year * 12 + moment.month, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


def _money(micros: int) -> str:
    return f"{micros // MICROS}.{micros % MICROS:06d}"


MINUTE_TEXTS = [f"{minute:02d}:" for minute in range(60)]


@cache
def _second_texts() -> list[str]:
    """"SS.mmmZ" for every millisecond of a minute, by index (built on first use: ~60,000)."""
    return [f"{second:02d}.{milli:03d}Z" for second in range(60) for milli in range(1000)]


def _half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-even, in integers (the rating rule's rounding)."""
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient & 1):
        quotient += 1
    return quotient


class _Product:
    """A product's meters with prices as integers, so the shadow rates exactly like the ledger."""

    __slots__ = ("mean_cost", "meters", "name", "scale")

    def __init__(self, name: str, prices: Mapping[str, Any]) -> None:
        self.name = name
        digits = max(max(0, -price.as_tuple().exponent) for price in prices.values())
        self.scale = 10 ** digits  # cost in micros = sum(quantity * price) / scale, half-even
        # Cached input is sent only by some requests (unless it is the product's only meter) and
        # is a share of the request's input; every other meter has its own distribution.
        alone = set(prices) == {CACHED_INPUT}
        self.meters = [(meter, int(price.scaleb(digits)),
                        None if meter == CACHED_INPUT else METER_TABLES.get(meter, OTHER_UNITS),
                        meter == CACHED_INPUT and not alone)
                       for meter, price in prices.items()]
        self.mean_cost = self._mean_cost()

    def _mean_cost(self) -> Fraction:
        """Expected micros of one usage event at scale 1 (how :meth:`_Workload._usage` draws)."""
        total = Fraction(0)
        for _, price, table, optional in self.meters:
            if table is None:  # 1 + a uniform share of an input token count
                quantity = (1 + INPUT_TOKENS.mean()) / 2
                quantity *= Fraction(CACHED_INPUT_PERCENT, 100) if optional else 1
            else:
                quantity = table.mean()
            total += quantity * price
        return total / self.scale


class _Account:
    """What the generator knows of one account: its plan and a shadow of the ledger's balances."""

    __slots__ = ("accrued", "auto_amount", "auto_enabled", "auto_minimum", "balance", "budget",
                 "contract", "id", "kind", "mean_cost", "open_ms", "payment_methods",
                 "pending_top_up", "prepaid", "product_cumulative", "product_total", "products",
                 "purchase_due", "spend", "spend_per_activity", "spend_period", "suspended",
                 "top_up_failed", "top_ups_requested", "usage_scale", "weight")

    def __init__(self, account_id: str, kind: str) -> None:
        self.id = account_id
        self.kind = kind
        self.contract = "enterprise" if kind in ENTERPRISE_KINDS else "self_serve"
        self.prepaid = kind not in (GRANDFATHERED_POSTPAID, ENTERPRISE_POSTPAID)
        self.open_ms = 0
        self.weight = 1
        self.products: list[_Product] = []
        self.product_cumulative: list[int] = []
        self.product_total = 0
        self.mean_cost = Fraction(0)  # of a usage event at scale 1, micros
        self.spend_per_activity = 0  # micros a month
        self.usage_scale = PER_MILLE  # usage event size, in thousandths of one at scale 1
        self.balance = 0  # credit_balance, micros
        self.payment_methods: set[str] = set()
        self.auto_enabled = False
        self.auto_minimum = 0
        self.auto_amount = 0
        self.pending_top_up: str | None = None
        self.top_up_failed = False
        self.top_ups_requested = 0
        self.purchase_due = False  # a purchase is on its way: no refill decision needed
        self.suspended = False
        self.budget: int | None = None  # set by the customer
        self.spend_period = ""
        self.spend = 0  # month-to-date, for the budget
        self.accrued: dict[str, int] = {}  # postpaid: month -> charges not covered by credit

    def blocked(self) -> bool:
        """Paused or suspended, as far as the shadow can tell (mirrors the ledger's rules)."""
        if self.suspended or (self.budget is not None and self.spend >= self.budget):
            return True
        return self.prepaid and self.balance <= 0 and (
            self.top_up_failed or self.pending_top_up is None or self.balance <= -self.auto_amount)


Event = dict[str, Any]  # JSON-ready: what orjson.dumps turns into one input line
_Handler = Callable[[_Account, int, Any], Event]


class _Workload:
    """One generation run: the plan, the shadow and the merged, time-ordered stream."""

    def __init__(self, accounts: int, events: int, seed: int, start: datetime, end: datetime,
                 bad_fraction: float, duplicate_fraction: float, late_fraction: float,
                 mix: Mapping[str, int], pricebook: PriceBook, config: BillingConfig) -> None:
        self.seed = seed
        self.start_ms, self.end_ms = to_millis(start), to_millis(end)
        self.bad_fraction = bad_fraction
        self.duplicate_fraction = duplicate_fraction
        self.late_fraction = late_fraction
        self.cutover_ms = to_millis(config.prepaid_cutover)
        self.free_credit = int(config.free_credit * MICROS)
        # Two streams: the population depends on the seed and the accounts, not on the event count.
        self.plan_random = random.Random(f"workload-plan:{seed}").random
        self.random = random.Random(f"workload-stream:{seed}").random
        products = [_Product(name, prices) for name, prices in pricebook.products.items()]
        self.deployments = [product for product in products
                            if any(meter == "gpu_seconds" for meter, *_ in product.meters)]
        self.models = [p for p in products if p not in self.deployments] or self.deployments
        self.hour, self.hour_text = -1, ""  # the last hour _time formatted
        self.second_texts = _second_texts()
        self.event_prefix = f"evt-{seed}-"
        self.heap: list[tuple[int, int, _Handler, _Account, Any]] = []
        self.sequence = 0  # tie-break of scheduled events: deterministic order for equal times
        self.event_count = 0
        self.payment_count = 0
        self.active: list[_Account] = []  # opened accounts, usage drawn by weight
        self.active_cumulative: list[int] = []
        self.postpaid: list[_Account] = []
        population = [self._plan(index, kind)
                      for index, kind in enumerate(self._kinds(accounts, mix))]
        self.slots_left = events - len(self.heap)  # usage events still to come
        if self.slots_left < accounts:
            raise ValueError(f"{events} events are too few for {accounts} accounts: their "
                             f"account settings alone take {len(self.heap)}")
        self._size_usage(population)
        self.owed = 0  # usage slots given up to unplanned events (answers, refills, re-sends)
        self.next_close_ms = to_millis(month_after(start)) + INVOICE_PAYMENT_DELAY_MS

    # -- the population ------------------------------------------------------------------

    def _kinds(self, accounts: int, mix: Mapping[str, int]) -> list[str]:
        """Kinds apportioned exactly (each weighted kind once at least, if accounts allow)."""
        unknown = set(mix) - set(KINDS)
        if unknown or not any(mix.values()) or min(mix.values()) < 0:
            raise ValueError(f"mix must map some of {KINDS} to weights >= 0, got {dict(mix)}")
        weighted = [(kind, mix[kind]) for kind in KINDS if mix.get(kind)]
        total = sum(weight for _, weight in weighted)
        counts = {kind: 1 if accounts >= len(weighted) else 0 for kind, _ in weighted}
        rest = accounts - sum(counts.values())
        shares = [(rest * weight // total, rest * weight % total, kind)
                  for kind, weight in weighted]
        for share, _, kind in shares:
            counts[kind] += share
        leftover = rest - sum(share for share, _, _ in shares)
        for _, _, kind in sorted(shares, key=lambda item: -item[1])[:leftover]:
            counts[kind] += 1
        kinds = [kind for kind, _ in weighted for _ in range(counts[kind])]
        random.Random(f"workload-kinds:{self.seed}").shuffle(kinds)
        return kinds

    def _between(self, low: int, high: int) -> int:
        """A planning time in [low, high) (low when the range is empty)."""
        return low + int(self.plan_random() * max(high - low, 0))

    def _plan(self, index: int, kind: str) -> _Account:
        """One account's sign-up and settings: everything about it that does not react to usage."""
        rand = self.plan_random
        account = _Account(f"acct-{index:06d}", kind)
        enterprise = kind in ENTERPRISE_KINDS
        account.weight = ACTIVITY.draw(rand) * (ENTERPRISE_ACTIVITY if enterprise else 1)
        account.spend_per_activity = SPEND_PER_ACTIVITY[kind].draw(rand)
        self._pick_products(account, enterprise)
        start, end = self.start_ms, self.end_ms
        new_customer = kind in (SELF_SERVE_PREPAID, SELF_SERVE_AUTO_TOP_UP, FREE_CREDIT_ONLY)
        if index == 0:
            opened = start  # someone is open from the first millisecond on
        elif new_customer and rand() < 0.3:
            opened = self._between(start + INITIAL_COHORT_MS, start + (end - start) * 4 // 5)
        else:
            opened = self._between(start, start + INITIAL_COHORT_MS)
        account.open_ms = opened
        if kind == GRANDFATHERED_POSTPAID:
            created = self._between(self.cutover_ms - 900 * DAY_MS, self.cutover_ms - DAY_MS)
        elif enterprise:
            created = self._between(self.cutover_ms - 1200 * DAY_MS, start)
        elif opened > start + INITIAL_COHORT_MS:
            created = max(opened - self._between(0, MINUTE_MS), self.cutover_ms)  # just signed up
        else:
            created = self._between(self.cutover_ms, max(start, self.cutover_ms + 1))
        model = {ENTERPRISE_POSTPAID: "postpaid",
                 ENTERPRISE_PREPAID: "prepaid" if rand() < 0.5 else None}.get(kind)
        if not enterprise and rand() < 0.1:  # some clients state the model; it must agree
            model = "prepaid" if created >= self.cutover_ms else "postpaid"
        self._push(opened, self._opened, account, (created, model))
        self._plan_settings(account, kind, opened, end)
        return account

    def _pick_products(self, account: _Account, enterprise: bool) -> None:
        rand = self.plan_random
        count = min(1 + int(rand() * 3), len(self.models))
        chosen = random.Random(f"{self.seed}:{account.id}").sample(self.models, count)
        weights = [(1, 3, 6)[int(rand() * 3)] for _ in chosen]
        deploy_percent = 0 if account.kind == FREE_CREDIT_ONLY else 30 if enterprise else 6
        if self.deployments and rand() * 100 < deploy_percent:
            chosen.append(self.deployments[int(rand() * len(self.deployments))])
            weights.append(2)
        account.products = chosen
        for weight in weights:
            account.product_total += weight
            account.product_cumulative.append(account.product_total)
        account.mean_cost = sum((weight * product.mean_cost
                                 for weight, product in zip(weights, chosen, strict=True)),
                                Fraction(0)) / account.product_total

    def _plan_settings(self, account: _Account, kind: str, opened: int, end: int) -> None:
        rand, between = self.plan_random, self._between
        card = None
        if kind in (SELF_SERVE_PREPAID, SELF_SERVE_AUTO_TOP_UP) \
                or (kind == GRANDFATHERED_POSTPAID and rand() < 0.9) \
                or (kind in ENTERPRISE_KINDS and rand() < 0.5):
            card = between(opened + MINUTE_MS, opened + 20 * MINUTE_MS)
            self._push(card, self._payment_method_added, account, f"pm-{account.id}-1")
        if kind == SELF_SERVE_PREPAID and card is not None:
            account.purchase_due = True
            self._push(between(card + MINUTE_MS, card + 10 * MINUTE_MS), self._purchased, account,
                       (STARTER_CREDITS.draw(rand), None))
            if rand() < 0.04:  # a declined card, then a second attempt that goes through
                declined = between(card + HOUR_MS, end)
                self._push(declined, self._payment_failed, account, None)
                self._push(between(declined + MINUTE_MS, declined + 30 * MINUTE_MS),
                           self._purchased, account, (REFILL_CREDITS.draw(rand), None))
        if kind == SELF_SERVE_AUTO_TOP_UP and card is not None:
            # Configured with only the free credit left: the ledger requests a top-up at once.
            self._push(between(card + MINUTE_MS, card + 5 * MINUTE_MS), self._auto_top_up, account,
                       (TOP_UP_MINIMUM.draw(rand), TOP_UP_AMOUNT.draw(rand)))
        if kind == ENTERPRISE_PREPAID:
            account.purchase_due = True
            self._push(between(opened + 5 * MINUTE_MS, opened + 2 * HOUR_MS), self._purchased,
                       account, (ENTERPRISE_CREDITS.draw(rand), None))
            if card is not None and rand() < 0.5:
                self._push(between(card + MINUTE_MS, card + 5 * MINUTE_MS), self._auto_top_up,
                           account, (ENTERPRISE_TOP_UP_MINIMUM.draw(rand),
                                     ENTERPRISE_TOP_UP_AMOUNT.draw(rand)))
        if kind == GRANDFATHERED_POSTPAID and rand() < 0.1:  # pays down usage with credits
            self._push(between(opened + DAY_MS, end), self._purchased, account,
                       (PAYDOWN.draw(rand), None))
        if kind in (GRANDFATHERED_POSTPAID, ENTERPRISE_POSTPAID):
            self.postpaid.append(account)
            if rand() < 0.15:  # last month's invoice, which this ledger never issued: rejected
                previous = EPOCH + timedelta(milliseconds=self.start_ms - 1)
                self._push(between(opened + HOUR_MS, opened + 7 * DAY_MS), self._invoice_paid,
                           account, (f"inv-{account.id}-{previous:%Y-%m}",
                                     OLD_INVOICE_PAYMENT.draw(rand)))
        if kind != FREE_CREDIT_ONLY and rand() < (0.1 if kind in ENTERPRISE_KINDS else 0.15):
            budget = (ENTERPRISE_BUDGET if kind in ENTERPRISE_KINDS else SELF_SERVE_BUDGET)
            self._push(between((card or opened) + 10 * MINUTE_MS, opened + 10 * DAY_MS),
                       self._budget_set, account, budget.draw(rand))
        if card is not None and rand() < 0.04:  # the card is removed; most add another later
            removed = between(card + HOUR_MS, end)
            self._push(removed, self._payment_method_removed, account, f"pm-{account.id}-1")
            if rand() < 0.6:
                self._push(between(removed + HOUR_MS, removed + 3 * DAY_MS),
                           self._payment_method_added, account, f"pm-{account.id}-2")

    def _size_usage(self, population: list[_Account]) -> None:
        """Size each account's usage events so that its spend over the span is about its planned
        monthly spend (activity x spend per activity), whatever the number of events asked for.

        An account gets a share of the usage slots proportional to activity x time open, so one
        of its events should cost spend_per_activity x (activity-time of all accounts) / (slots x
        a month). The scale multiplies an event's token counts (or GPU seconds) and its requests,
        which keeps tokens per request as the tables draw them; it never shrinks an event below
        what the tables draw (nor sizes one of an account whose products are all free).
        """
        exposure = sum(account.weight * (self.end_ms - account.open_ms) for account in population)
        per_activity = Fraction(exposure, self.slots_left * MONTH_MS)
        for account in population:
            if account.mean_cost:
                target = account.spend_per_activity * per_activity
                account.usage_scale = max(PER_MILLE,
                                          round(PER_MILLE * target / account.mean_cost))

    # -- scheduling ----------------------------------------------------------------------

    def _push(self, at_ms: int, handler: _Handler, account: _Account, payload: Any) -> None:
        """Schedule an event of the plan (it does not replace usage); dropped past the end."""
        if at_ms < self.end_ms:
            self.sequence += 1
            heapq.heappush(self.heap, (at_ms, self.sequence, handler, account, payload))

    def _push_extra(self, at_ms: int, handler: _Handler, account: _Account, payload: Any) -> None:
        """Schedule an event that reacts to the stream; it takes a usage event's place, so the
        total stays exactly what was asked for. Nothing is scheduled once no usage is left."""
        if at_ms < self.end_ms and self.slots_left > self.owed:
            self.owed += 1
            self._push(at_ms, handler, account, payload)

    # -- the stream ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        heap, rand, pop = self.heap, self.random, heapq.heappop
        for hour_ms, length, count in self._slots_by_hour():
            for at_ms in sorted([hour_ms + int(rand() * length) for _ in range(count)]):
                while heap and heap[0][0] <= at_ms:
                    yield self._scheduled(*pop(heap))
                if at_ms >= self.next_close_ms:
                    self._month_closed(at_ms)
                self.slots_left -= 1
                if self.owed:
                    self.owed -= 1
                    continue
                yield self._usage_slot(at_ms)
        while heap:
            yield self._scheduled(*pop(heap))

    def _slots_by_hour(self) -> list[tuple[int, int, int]]:
        """(hour start, length, usage count) for each hour of the span, counts apportioned exactly
        (largest remainder) by hour-of-day and weekday weights."""
        hours: list[tuple[int, int, int]] = []
        moment = self.start_ms
        while moment < self.end_ms:
            length = min(moment - moment % HOUR_MS + HOUR_MS, self.end_ms) - moment
            weekend = (moment // DAY_MS + 3) % 7 >= 5  # 1970-01-01 was a Thursday
            weight = HOUR_WEIGHTS[moment // HOUR_MS % 24] * length \
                * (WEEKEND_TENTHS if weekend else WEEKDAY_TENTHS)
            hours.append((moment, length, weight))
            moment += length
        total, slots = sum(weight for _, _, weight in hours), self.slots_left
        counts = [slots * weight // total for _, _, weight in hours]
        by_remainder = sorted(range(len(hours)), key=lambda i: -(slots * hours[i][2] % total))
        for index in by_remainder[:slots - sum(counts)]:
            counts[index] += 1
        return [(moment, length, count) for (moment, length, _), count in zip(hours, counts,
                                                                                 strict=True)]

    def _scheduled(self, at_ms: int, _: int, handler: _Handler, account: _Account,
                   payload: Any) -> dict[str, Any]:
        event = handler(account, at_ms, payload)
        if handler != self._resent:
            self._react(account, at_ms)
            self._maybe_resend(event, at_ms)
        return event

    def _usage_slot(self, at_ms: int) -> dict[str, Any]:
        rand = self.random
        if self.bad_fraction and rand() < self.bad_fraction:
            return self._bad(at_ms)
        account = self._draw_account()
        timestamp = at_ms
        if self.late_fraction and rand() < self.late_fraction:
            timestamp = max(at_ms - LATENESS_MS.draw(rand), account.open_ms)
        event, cost = self._usage(account, timestamp)
        self._charge(account, cost, event["timestamp"][:7])
        self._react(account, at_ms)
        self._maybe_resend(event, at_ms)
        return event

    def _draw_account(self) -> _Account:
        """An open account by activity weight; paused or suspended ones mostly send nothing."""
        rand, active, cumulative = self.random, self.active, self.active_cumulative
        total = cumulative[-1]
        for _ in range(REPICKS):
            account = active[bisect(cumulative, rand() * total)]
            if not account.blocked() or rand() * 100 < IN_FLIGHT_PERCENT:
                break
        return account

    def _usage(self, account: _Account, at_ms: int) -> tuple[dict[str, Any], int]:
        """A usage event of one of the account's products, and its exact cost in micros."""
        rand, scale = self.random, account.usage_scale
        product = account.products[bisect(account.product_cumulative,
                                          rand() * account.product_total)]
        quantities: dict[str, int] = {}
        cost, input_tokens = 0, 0  # input_tokens: as drawn, before the scale
        for meter, price, table, optional in product.meters:
            if optional and rand() * 100 >= CACHED_INPUT_PERCENT:
                continue
            if table is None:
                quantity = 1 + int(rand() * (input_tokens or INPUT_TOKENS.draw(rand)))
            else:
                quantity = table.draw(rand)
                if meter == "input_tokens":
                    input_tokens = quantity
            quantity = quantity * scale // PER_MILLE
            quantities[meter] = quantity
            cost += quantity * price
        self.event_count += 1
        event = {"type": "usage", "event_id": f"{self.event_prefix}{self.event_count:09d}",
                 "timestamp": self._time(at_ms), "account_id": account.id,
                 "product": product.name, "quantities": quantities,
                 "requests": REQUESTS.draw(rand) * scale // PER_MILLE}
        return event, _half_even(cost, product.scale)

    def _bad(self, at_ms: int) -> dict[str, Any]:
        """An invalid line for dead-letter tests; the shadow ignores it, as the ledger will."""
        rand = self.random
        event, _ = self._usage(self._draw_account(), at_ms)
        defect = int(rand() * 4)
        if defect == 0:
            meter = next(iter(event["quantities"]))
            event["quantities"][meter] = -event["quantities"][meter]
        elif defect == 1:
            event["product"] = BAD_PRODUCT
        elif defect == 2:
            event["account_id"] = f"acct-ghost-{int(rand() * 1_000_000):06d}"  # never opened
        else:
            del event["product"]
        return event

    def _maybe_resend(self, event: dict[str, Any], at_ms: int) -> None:
        if self.duplicate_fraction and self.random() < self.duplicate_fraction:
            self._push_extra(at_ms + RESEND_DELAY_MS.draw(self.random), self._resent,
                             self.active[0], event)

    def _resent(self, account: _Account, at_ms: int, event: dict[str, Any]) -> dict[str, Any]:
        """A producer retry: the same bytes, same event_id and event time, a little later."""
        return dict(event)

    def _month_closed(self, at_ms: int) -> None:
        """Past a month's close: some postpaid customers pay half of the invoice just issued."""
        rand = self.random
        period = self._time(self.next_close_ms - INVOICE_PAYMENT_DELAY_MS - 1)[:7]
        for account in self.postpaid:
            owed = account.accrued.pop(period, 0) // 2 // 10_000 * 10_000  # whole cents
            if owed and rand() * 100 < INVOICE_PAYER_PERCENT:
                when = at_ms + int(rand() * min(4 * HOUR_MS, self.end_ms - at_ms))
                self._push_extra(when, self._invoice_paid, account,
                                 (f"inv-{account.id}-{period}", owed))
        self.next_close_ms = INVOICE_PAYMENT_DELAY_MS + to_millis(
            month_after(EPOCH + timedelta(milliseconds=at_ms)))

    # -- the shadow ledger ---------------------------------------------------------------

    def _charge(self, account: _Account, cost: int, period: str) -> None:
        if period > account.spend_period:
            account.spend_period, account.spend = period, 0
        account.spend += cost
        if account.prepaid:
            account.balance -= cost
            return
        from_credit = min(cost, max(account.balance, 0))
        account.balance -= from_credit
        if cost > from_credit:
            account.accrued[period] = account.accrued.get(period, 0) + cost - from_credit

    def _react(self, account: _Account, at_ms: int) -> None:
        """What the ledger and the customer do after any event: suspension, auto top-up (answered
        by the processor shortly after) and, for manual prepaid customers, a later refill."""
        if account.suspended:
            account.suspended = not account.payment_methods
        elif account.contract == "self_serve" and not account.payment_methods \
                and account.balance <= 0:
            account.suspended = True
        if not account.prepaid:
            return
        rand = self.random
        if account.auto_enabled and account.payment_methods and not account.top_up_failed \
                and account.pending_top_up is None and account.balance <= account.auto_minimum:
            account.top_ups_requested += 1
            request_id = account.pending_top_up = f"topup-{account.id}-{account.top_ups_requested}"
            answer_ms = at_ms + ANSWER_DELAY_MS.draw(rand)
            if rand() * 100 < TOP_UP_FAILURE_PERCENT:
                self._push_extra(answer_ms, self._payment_failed, account, request_id)
            else:
                self._push_extra(answer_ms, self._purchased, account,
                                 (account.auto_amount, request_id))
        if account.balance <= 0 and not account.purchase_due and account.kind != FREE_CREDIT_ONLY \
                and (account.payment_methods or account.contract == "enterprise") \
                and (not account.auto_enabled or account.top_up_failed):
            account.purchase_due = True  # stays set for those who give up: they have churned
            if rand() * 100 < REFILL_PERCENT:
                amount = (ENTERPRISE_CREDITS if account.contract == "enterprise"
                          else REFILL_CREDITS).draw(rand)
                self._push_extra(at_ms + REFILL_DELAY_MS.draw(rand), self._purchased, account,
                                 (amount, None))

    # -- events (each handler updates the shadow and returns the JSON-ready event) -------------

    def _event_id(self) -> str:
        self.event_count += 1
        return f"{self.event_prefix}{self.event_count:09d}"

    def _time(self, at_ms: int) -> str:
        """ISO-8601 UTC with milliseconds. Events come in time order, so the formatted hour is
        kept and the rest looked up: formatting is otherwise the generator's slowest step."""
        hour, within = divmod(at_ms, HOUR_MS)
        if hour != self.hour:
            self.hour = hour
            self.hour_text = f"{EPOCH + timedelta(hours=hour):%Y-%m-%dT%H:}"
        minute, within = divmod(within, MINUTE_MS)
        return self.hour_text + MINUTE_TEXTS[minute] + self.second_texts[within]

    def _header(self, event_type: str, account: _Account, at_ms: int) -> dict[str, Any]:
        return {"type": event_type, "event_id": self._event_id(), "timestamp": self._time(at_ms),
                "account_id": account.id}

    def _opened(self, account: _Account, at_ms: int, payload: tuple[int, str | None]) -> Event:
        created, model = payload
        if account.contract == "self_serve":
            account.balance = self.free_credit
        self.active.append(account)
        self.active_cumulative.append(
            (self.active_cumulative[-1] if self.active_cumulative else 0) + account.weight)
        return {**self._header("account_opened", account, at_ms),
                "created_at": self._time(created), "contract": account.contract,
                "billing_model": model}

    def _payment_method_added(self, account: _Account, at_ms: int, method: str) -> Event:
        account.payment_methods.add(method)
        return {**self._header("payment_method_added", account, at_ms), "payment_method_id": method}

    def _payment_method_removed(self, account: _Account, at_ms: int, method: str) -> Event:
        account.payment_methods.discard(method)
        return {**self._header("payment_method_removed", account, at_ms),
                "payment_method_id": method}

    def _payment_id(self) -> str:
        self.payment_count += 1
        return f"pay-{self.seed}-{self.payment_count:08d}"

    def _purchased(self, account: _Account, at_ms: int, payload: tuple[int, str | None]) -> Event:
        amount, request_id = payload
        if request_id is not None and request_id == account.pending_top_up:
            account.pending_top_up = None
        account.top_up_failed = account.purchase_due = False
        for period in sorted(account.accrued):  # postpaid: pays the oldest charges first
            paid = min(amount, account.accrued[period])
            account.accrued[period] -= paid
            amount -= paid
        account.balance += amount
        payment_id = self._payment_id()
        return {**self._header("credits_purchased", account, at_ms), "amount": _money(payload[0]),
                "payment_id": payment_id,
                "receipt_url": f"https://pay.example.com/receipts/{payment_id}",
                "top_up_request_id": request_id}

    def _payment_failed(self, account: _Account, at_ms: int, request_id: str | None) -> Event:
        if request_id is not None and request_id == account.pending_top_up:
            account.pending_top_up = None
            account.top_up_failed = True
        return {**self._header("payment_failed", account, at_ms), "payment_id": self._payment_id(),
                "reason": PAYMENT_FAILURES[int(self.random() * len(PAYMENT_FAILURES))],
                "top_up_request_id": request_id}

    def _auto_top_up(self, account: _Account, at_ms: int, payload: tuple[int, int]) -> Event:
        minimum, amount = payload
        if account.payment_methods:  # the ledger refuses it without one
            account.auto_enabled, account.top_up_failed = True, False
            account.auto_minimum, account.auto_amount = minimum, amount
        return {**self._header("auto_top_up_configured", account, at_ms), "enabled": True,
                "minimum_balance": _money(minimum), "top_up_amount": _money(amount)}

    def _budget_set(self, account: _Account, at_ms: int, budget: int) -> Event:
        account.budget = budget
        return {**self._header("budget_set", account, at_ms), "monthly_budget": _money(budget)}

    def _invoice_paid(self, account: _Account, at_ms: int, payload: tuple[str, int]) -> Event:
        invoice_id, amount = payload
        return {**self._header("invoice_paid", account, at_ms), "invoice_id": invoice_id,
                "amount": _money(amount), "payment_id": self._payment_id()}


def generate(accounts: int, events: int, seed: int, start: datetime = DEFAULT_START,
             end: datetime | None = None, *, bad_fraction: float = 0.0,
             duplicate_fraction: float = 0.005, late_fraction: float = 0.002,
             mix: Mapping[str, int] = DEFAULT_MIX,
             pricebook: PriceBook | None = None,
             config: BillingConfig | None = None) -> Iterator[dict[str, Any]]:
    """Exactly ``events`` input events for ``accounts`` accounts, as JSON-ready dicts.

    Each dict is the JSON form of a canonical event (``orjson.dumps`` of it is a ``billing replay``
    line; ``normalize_input`` accepts it unless it is one of the ``bad_fraction`` invalid lines).
    ``end`` defaults to 6 hours into the month after ``start``'s month; naive datetimes are UTC.
    ``pricebook`` and ``config`` (default: the shipped ones) give the products, the prepaid cutover
    and the free credit, and the prices the shadow balances use. Raises ``ValueError`` up front for
    arguments that cannot make a sensible workload.
    """
    if accounts < 1 or events < 1:
        raise ValueError("accounts and events must be positive")
    for name, fraction in (("bad_fraction", bad_fraction),
                           ("duplicate_fraction", duplicate_fraction),
                           ("late_fraction", late_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    end = end if end is not None else month_after(start) + TAIL
    if to_millis(end) - to_millis(start) < HOUR_MS:
        raise ValueError(f"the span {start} .. {end} must be at least an hour long")
    return iter(_Workload(accounts, events, seed, start, end, bad_fraction, duplicate_fraction,
                          late_fraction, mix, pricebook or load_pricebook(),
                          config or BillingConfig()))


def write_jsonl(path: str | Path, workload: Iterable[dict[str, Any]], *, total: int | None = None,
                progress: bool = False) -> int:
    """Stream ``workload`` to ``path`` as JSON lines; return the count.

    Written to a temporary file renamed at the end, so an interrupted run leaves no half workload
    that a later replay could mistake for a whole one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    dumps, written, batch = orjson.dumps, 0, []
    with open(partial, "wb") as sink, tqdm(total=total, unit="ev", unit_scale=True,
                                           desc="generate", disable=not progress) as bar:
        for event in workload:
            batch.append(dumps(event))
            if len(batch) == 8192:
                sink.write(b"\n".join(batch) + b"\n")
                written += len(batch)
                bar.update(len(batch))
                batch.clear()
        if batch:
            sink.write(b"\n".join(batch) + b"\n")
            written += len(batch)
            bar.update(len(batch))
    partial.replace(path)
    return written


@click.command("generate")
@click.option("--accounts", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--events", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Exact number of lines to write.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--start", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              default="2026-01-01", show_default=True, help="Start of the span (UTC).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="End of the span (UTC); default 6 h into the month after START's month.")
@click.option("--bad-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True, help="Share of invalid lines, for dead-letter tests.")
@click.option("--duplicate-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.005,
              show_default=True, help="Share of events re-sent with the same event_id.")
@click.option("--late-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.002,
              show_default=True, help="Share of usage whose event time lags its arrival.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output JSON-lines file.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: on when stderr is a terminal).")
def generate_command(accounts: int, events: int, seed: int, start: datetime, end: datetime | None,
                     bad_fraction: float, duplicate_fraction: float, late_fraction: float,
                     out: Path, progress: bool | None) -> None:
    """Write a seeded, realistic workload of input events (JSON lines) for replay and load tests."""
    try:
        workload = generate(accounts, events, seed, start, end, bad_fraction=bad_fraction,
                            duplicate_fraction=duplicate_fraction, late_fraction=late_fraction)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    show_progress = os.isatty(2) if progress is None else progress
    written = write_jsonl(out, workload, total=events, progress=show_progress)
    click.echo(f"wrote {written} events to {out}", err=True)
