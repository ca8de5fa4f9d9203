"""Properties over generated event sequences for 1-3 accounts, run through Replay (ledger + the
global watermark): money is conserved, replay is deterministic, duplicates change nothing, output
ids are unique (whatever characters the account and event ids contain), copies and retried payments
change nothing, money is always Decimal with 6 fractional digits, derived state follows the rules.

A scenario is drawn as abstract steps ("answer the pending top-up", "pay an open invoice") and
made concrete by running it once (:func:`materialize`), so that top-up and invoice ids are real;
the properties then replay the concrete event list on fresh ledgers.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.events import InvalidEvent, normalize_input
from billing.ledger import AccountState, id_part, next_period, period_of, period_start
from billing.replay import Replay
from tests.ledger.builders import DEFAULT_CONFIG, Run, at

START = at("2025-07-01T00:00:00Z")
END = at("2025-09-30T23:00:00Z")  # sequences span July to September
# Account ids chosen so that joining ids without escaping would collide: "a" with event "b:e1"
# and "a:b" with event "e1"; "a%3Ab" is what a naive escape of "a:b" would give.
ACCOUNT_IDS = ("a:b", "a", "a%3Ab")
SETTINGS = settings(max_examples=75, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- the strategy -------------------------------------------------------------------------------

# grandfathered (twice as likely), on the cutover, or None: at opening
CREATED_AT = ["2025-03-01T00:00:00Z", "2025-03-01T00:00:00Z", "2025-06-01T00:00:00Z", None]
AMOUNTS = ["0.5", "1", "5", "20", "49.999999", "50", "63.000001", "120", "500", "5000"]
BUDGETS = [None, "0", "1", "10", "30", "50", "100", "500", "100000"]
BOUNDARY_OFFSETS_MS = [-1, 0, 30 * 60_000, 3_600_000 - 1, 3_600_000, 3_600_001]

usage_action = st.one_of(
    st.tuples(st.just("usage"), st.just("metered"),
              st.fixed_dictionaries({"usd_micros": st.integers(0, 2_000_000)
                                     | st.integers(0, 60_000_000)})),
    st.tuples(st.just("usage"), st.just("llama-v3p1-8b"),
              st.fixed_dictionaries({"input_tokens": st.integers(0, 5_000_000),
                                     "output_tokens": st.integers(0, 5_000_000)})),
    st.tuples(st.just("usage"), st.just("deepseek-v3"),
              st.fixed_dictionaries({"input_tokens": st.integers(0, 50),
                                     "cached_input_tokens": st.integers(0, 50),
                                     "output_tokens": st.integers(0, 50)})),
    st.tuples(st.just("usage"), st.just("h100-deployment"),
              st.fixed_dictionaries({"gpu_seconds": st.integers(0, 40_000)})),
)
amount = st.one_of(st.sampled_from(AMOUNTS),
                   st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("80"), places=6)
                   .map(str))
action = st.one_of(
    usage_action, usage_action, usage_action,
    st.tuples(st.just("purchase"), amount),
    st.tuples(st.just("pm_add"), st.sampled_from(["pm-1", "pm-2"])),
    st.tuples(st.just("pm_remove"), st.sampled_from(["pm-1", "pm-2"])),
    st.tuples(st.just("auto_top_up"), st.booleans(), st.sampled_from(["0", "1", "5", "10"]),
              st.sampled_from(["5", "10", "50"])),
    st.tuples(st.just("budget"), st.sampled_from(BUDGETS)),
    st.tuples(st.just("answer_top_up"), st.booleans()),
    st.tuples(st.just("answer_top_up"), st.booleans()),
    st.tuples(st.just("answer_top_up"), st.booleans()),
    st.tuples(st.just("invoice_paid"), st.sampled_from(["full", "part", "part", "over",
                                                        "unknown"])),
    st.tuples(st.just("invoice_paid"), st.sampled_from(["full", "part"])),
    st.tuples(st.just("close"), st.sampled_from(["previous", "current", "broadcast"])),
    st.tuples(st.just("payment_failed_other")),
)
advance = st.one_of(
    st.just(("ms", 0)),
    st.tuples(st.just("ms"), st.integers(1, 60_000)),
    st.tuples(st.just("ms"), st.integers(60_000, 6 * 3_600_000)),
    st.tuples(st.just("ms"), st.integers(86_400_000, 6 * 86_400_000)),
    st.tuples(st.just("ms"), st.integers(86_400_000, 12 * 86_400_000)),
    st.tuples(st.just("boundary"), st.sampled_from(BOUNDARY_OFFSETS_MS)),
)


@st.composite
def scenarios(draw) -> tuple[list[tuple], list[tuple]]:
    accounts = draw(st.lists(
        st.tuples(st.sampled_from(["self_serve", "self_serve", "enterprise"]),
                  st.sampled_from(CREATED_AT), st.sampled_from([None, "prepaid", "postpaid"]),
                  st.booleans(),  # a payment method from the start
                  st.none() | st.tuples(st.sampled_from(["0", "1", "5", "10"]),
                                        st.sampled_from(["5", "10", "50"]))),  # auto top-up
        min_size=1, max_size=3))
    steps = draw(st.lists(st.tuples(advance, st.integers(0, len(accounts) - 1), action),
                          min_size=10, max_size=50))
    return accounts, steps


# -- making a scenario concrete -------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def move(clock: datetime, step: tuple[str, int]) -> datetime:
    kind, value = step
    if kind == "ms":
        target = clock + timedelta(milliseconds=value)
    else:
        target = period_start(next_period(period_of(clock))) + timedelta(milliseconds=value)
    return clock if target > END else max(clock, target)


def resolve(replay: Replay, account_id: str, action: tuple, clock: datetime,
            event_id: str) -> dict[str, Any]:
    """One abstract step -> one raw input event, given the accounts' states so far."""
    state: AccountState = replay.accounts[account_id]
    base = {"event_id": event_id, "account_id": account_id, "timestamp": iso(clock)}
    kind = action[0]
    if kind == "usage":
        return {**base, "type": "usage", "product": action[1], "quantities": action[2]}
    if kind == "purchase":
        return {**base, "type": "credits_purchased", "amount": action[1],
                "payment_id": f"pay-{event_id}"}
    if kind in ("pm_add", "pm_remove"):
        return {**base, "type": "payment_method_added" if kind == "pm_add"
                else "payment_method_removed", "payment_method_id": action[1]}
    if kind == "auto_top_up":
        return {**base, "type": "auto_top_up_configured", "enabled": action[1],
                "minimum_balance": action[2], "top_up_amount": action[3]}
    if kind == "budget":
        return {**base, "type": "budget_set", "monthly_budget": action[1]}
    if kind == "answer_top_up":
        request_id = state.pending_top_up_request_id or f"topup-{account_id}-99"
        if action[1]:
            paid = state.auto_top_up_amount if state.auto_top_up_amount > 0 else Decimal("1")
            return {**base, "type": "credits_purchased", "amount": str(paid),
                    "payment_id": f"pay-{event_id}", "top_up_request_id": request_id}
        return {**base, "type": "payment_failed", "payment_id": f"pay-{event_id}",
                "reason": "card_declined", "top_up_request_id": request_id}
    if kind == "invoice_paid":
        if not state.invoices or action[1] == "unknown":
            return {**base, "type": "invoice_paid", "invoice_id": f"inv-{account_id}-2025-01",
                    "amount": "1"}
        invoice_id, unpaid = next(iter(sorted(state.invoices.items())))
        paid = {"full": unpaid, "over": unpaid + Decimal("0.000001"),
                "part": max((unpaid / 3).quantize(Decimal("0.000001")), Decimal("0.000001"))}
        return {**base, "type": "invoice_paid", "invoice_id": invoice_id,
                "amount": str(paid[action[1]]), "payment_id": f"pay-{event_id}"}
    if kind == "close":
        current = period_of(clock)
        previous = f"{current[:5]}{int(current[5:]) - 1:02d}"  # July to September: same year
        if action[1] == "broadcast":
            return {**base, "account_id": "", "type": "close_period", "period": previous}
        return {**base, "type": "close_period",
                "period": previous if action[1] == "previous" else current}
    assert kind == "payment_failed_other"
    return {**base, "type": "payment_failed", "payment_id": f"pay-{event_id}",
            "reason": "insufficient_funds"}


def materialize(scenario: tuple[list[tuple], list[tuple]]) -> list[dict[str, Any]]:
    """The concrete, canonical input events of a scenario (opens first, then the steps)."""
    accounts, steps = scenario
    replay = Replay(Run().ledger)
    events: list[dict[str, Any]] = []
    clock = START

    def feed(raw: dict[str, Any]) -> None:
        event = normalize_input(raw)
        events.append(event)
        replay.apply(copy.deepcopy(event))

    for index, (contract, created_at, model, card, auto) in enumerate(accounts):
        account_id = ACCOUNT_IDS[index]
        feed({"type": "account_opened", "event_id": f"open-{index}", "account_id": account_id,
              "timestamp": iso(clock), "created_at": created_at or iso(clock),
              "contract": contract, "billing_model": model})
        if card:
            feed({"type": "payment_method_added", "event_id": f"card-{index}",
                  "account_id": account_id, "timestamp": iso(clock), "payment_method_id": "pm-1"})
        if auto:
            feed({"type": "auto_top_up_configured", "event_id": f"auto-{index}",
                  "account_id": account_id, "timestamp": iso(clock), "enabled": True,
                  "minimum_balance": auto[0], "top_up_amount": auto[1]})
    for number, (step, account, action) in enumerate(steps):
        clock = move(clock, step)
        # Event ids with a colon too, so that "a" + "b:e1" and "a:b" + "e1" can both occur.
        event_id = f"b:e{number}" if account == 1 else f"e{number}"
        feed(resolve(replay, ACCOUNT_IDS[account], action, clock, event_id))
    return events


# -- running a concrete sequence ----------------------------------------------------------------


class Result:
    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.rated: list[dict[str, Any]] = []
        self.dead: list[str] = []
        self.snapshots: dict[str, dict[str, Any]] = {}


def replay_all(events: list[dict[str, Any]], after_each=None) -> Result:
    replay = Replay(Run().ledger)
    result = Result()
    for event in events:
        try:
            outputs, rated = replay.apply(copy.deepcopy(event))
        except InvalidEvent as error:
            result.dead.append(error.reason)
            continue
        result.outputs.extend(outputs)
        if rated is not None:
            result.rated.append(rated)
        if after_each is not None:
            after_each(replay, event, outputs, rated)
    result.snapshots = replay.snapshots()
    return result


# -- invariants -------------------------------------------------------------------------------


def check_money(state: AccountState) -> None:
    assert (state.credit_balance - state.outstanding_balance
            == state.free_credit_granted + state.lifetime_credits_purchased
            + state.lifetime_invoice_payments - state.lifetime_spend)
    assert state.outstanding_balance == (sum(state.invoices.values(), Decimal(0))
                                         + sum(state.month_unpaid.values(), Decimal(0)))
    assert state.outstanding_balance >= 0
    assert all(amount > 0 for amount in state.invoices.values())
    assert all(amount > 0 for amount in state.month_unpaid.values())
    assert all(period >= state.open_period for period in state.month_unpaid)
    assert all(period >= state.open_period for period in state.month_spend)
    if state.billing_model == "postpaid":
        assert state.credit_balance >= 0
    else:
        assert state.outstanding_balance == 0 and not state.invoices


def check_derived(state: AccountState, config=DEFAULT_CONFIG) -> None:
    """The published status, limits and budget follow from the balances and settings."""
    no_card = state.contract == "self_serve" and not state.has_payment_method
    assert state.rpm_limit == (config.no_payment_method_rpm if no_card
                               else config.tier_named(state.tier).rpm_limit)
    if state.suspended:
        assert no_card
    elif no_card:
        assert state.credit_balance > 0
    budget = state.monthly_budget
    tier_max = config.tier_named(state.tier).budget_max
    if tier_max is not None:
        assert budget is not None and budget <= tier_max
    reasons = set(state.pause_reasons)
    assert ("budget_reached" in reasons) == (budget is not None
                                             and state.month_to_date_spend >= budget)
    credit_reasons = reasons & {"credits_exhausted", "top_up_failed"}
    if state.billing_model == "postpaid" or state.credit_balance > 0:
        assert not credit_reasons
    elif (state.pending_top_up_request_id is None
          or state.credit_balance <= -state.auto_top_up_amount):
        assert len(credit_reasons) == 1
    if state.pending_top_up_request_id is not None:
        assert state.billing_model == "prepaid"
    if (state.billing_model == "prepaid" and state.auto_top_up_enabled
            and state.has_payment_method and not state.top_up_failed
            and state.credit_balance <= state.auto_top_up_minimum):
        assert state.pending_top_up_request_id is not None
    assert state.open_period <= state.current_period


def money_values(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every Decimal (and every float, which must not exist) inside an output or snapshot."""
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in money_values(inner, key)]
    if isinstance(value, list | tuple):
        return [item for inner in value for item in money_values(inner, path)]
    if isinstance(value, Decimal | float):
        return [(path, value)]
    return []


MONEY_KEYS = {"credit_balance", "outstanding_balance", "month_to_date_spend", "lifetime_spend",
              "lifetime_credits_purchased", "minimum_balance", "top_up_amount", "amount",
              "applied_to_outstanding", "applied_to_credit", "cost"}


def check_money_format(document: dict[str, Any]) -> None:
    for key, value in money_values(document):
        assert isinstance(value, Decimal), (key, value)
        assert value.as_tuple().exponent == -6, (key, value)
    for key in MONEY_KEYS & set(document):
        assert isinstance(document[key], Decimal), key


TIER_ORDER = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "enterprise": 5}

# -- the properties ---------------------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_money_is_conserved_and_derived_state_follows_the_rules(scenario):
    events = materialize(scenario)
    tiers: dict[str, int] = {}

    def after_each(replay, event, outputs, rated):
        for account_id, state in replay.accounts.items():
            check_money(state)
            check_derived(state)
            assert TIER_ORDER[state.tier] >= tiers.get(account_id, 0), "tier went down"
            tiers[account_id] = TIER_ORDER[state.tier]
        for output in outputs:
            snap = output["snapshot"]
            assert snap["outstanding_balance"] >= 0
            if snap["billing_model"] == "postpaid":
                assert snap["credit_balance"] >= 0

    result = replay_all(events, after_each)
    assert result.dead == []


@SETTINGS
@given(scenarios())
def test_replay_is_deterministic(scenario):
    events = materialize(scenario)
    first, second = replay_all(events), replay_all(events)
    assert first.outputs == second.outputs
    assert first.rated == second.rated
    assert first.snapshots == second.snapshots


PAYMENTS = ("credits_purchased", "payment_failed", "invoice_paid")


@SETTINGS
@given(scenarios(), st.data())
def test_copies_at_any_delay_and_retried_payments_change_nothing(scenario, data):
    """Copies of any events, delivered at any later point, and payments retried under new event
    ids: the same snapshots, outputs and rated usage as without them. A copy the window refuses
    (older than the dedup horizon) is dead-lettered with that reason, never applied."""
    events = materialize(scenario)
    with_copies = list(events)
    for number in range(data.draw(st.integers(1, 8), label="copies")):
        position = data.draw(st.integers(1, len(with_copies)), label="position")
        original = data.draw(st.sampled_from(with_copies[:position]), label="original")
        duplicate = copy.deepcopy(original)
        if original["type"] in PAYMENTS and original.get("payment_id") \
                and data.draw(st.booleans(), label="retry under a new event id"):
            duplicate["event_id"] = f"retry-{number}-{original['event_id']}"
        with_copies.insert(position, duplicate)
    plain, copied = replay_all(events), replay_all(with_copies)
    assert copied.outputs == plain.outputs
    assert copied.rated == plain.rated
    assert copied.snapshots == plain.snapshots
    extra_dead = copied.dead[len(plain.dead):] if copied.dead[:len(plain.dead)] == plain.dead \
        else copied.dead
    assert all(reason.startswith("older than the dedup horizon") for reason in extra_dead)


@SETTINGS
@given(scenarios())
def test_output_ids_are_unique_and_money_is_exact(scenario):
    result = replay_all(materialize(scenario))
    ids = [output["event_id"] for output in result.outputs]
    assert len(ids) == len(set(ids))
    for output in result.outputs:
        # {account}:{cause_event_id}:{type}[:n] or {account}:close:{YYYY-MM}:{type}[:n], each
        # part escaped: no raw ':' inside a part
        account, cause = id_part(output["account_id"]), id_part(output["cause_event_id"])
        assert re.fullmatch(rf"{re.escape(account)}:({re.escape(cause)}|close:\d{{4}}-\d\d):"
                            rf"{output['type']}(:[2-9])?", output["event_id"]), output["event_id"]
        check_money_format(output)
        check_money_format(output["snapshot"])
    for rated in result.rated:
        check_money_format(rated)
    for snap in result.snapshots.values():
        check_money_format(snap)
        assert snap == snapshot_shape(snap)


def snapshot_shape(snap: dict[str, Any]) -> dict[str, Any]:
    """The snapshot has exactly the contract's fields (section 6)."""
    expected = {"account_id", "billing_model", "contract", "status", "pause_reasons",
                "credit_balance", "outstanding_balance", "month_to_date_spend", "open_period",
                "lifetime_spend", "lifetime_credits_purchased", "tier", "monthly_budget",
                "rpm_limit", "tpm_limit", "has_payment_method", "auto_top_up",
                "pending_top_up_request_id"}
    assert set(snap) == expected
    assert snap["pause_reasons"] == sorted(snap["pause_reasons"])
    assert snap["status"] in ("active", "paused", "suspended")
    assert (snap["status"] == "paused") == (snap["status"] != "suspended"
                                            and bool(snap["pause_reasons"]))
    return snap


def test_the_strategy_reaches_the_interesting_states():
    """A fixed scenario through the same machinery: invoices, top-ups, suspension, closes."""
    scenario = (
        [("self_serve", None, None, False, None), ("enterprise", None, "postpaid", True, None)],
        [(("ms", 60_000), 0, ("pm_add", "pm-1")),
         (("ms", 60_000), 0, ("auto_top_up", True, "5", "10")),
         (("ms", 0), 1, ("usage", "metered", {"usd_micros": 20_000_000})),
         (("ms", 60_000), 0, ("answer_top_up", True)),
         (("boundary", 3_600_000), 1, ("usage", "metered", {"usd_micros": 1})),
         (("ms", 60_000), 1, ("invoice_paid", "part")),
         (("ms", 60_000), 0, ("pm_remove", "pm-1")),
         (("ms", 60_000), 0, ("usage", "metered", {"usd_micros": 30_000_000})),
         (("ms", 60_000), 0, ("close", "broadcast"))],
    )
    events = materialize(scenario)
    result = replay_all(events)
    kinds = {output["type"] for output in result.outputs}
    assert {"top_up_requested", "credits_applied", "invoice_issued",
            "account_suspended"} <= kinds
    assert result.snapshots["a:b"]["status"] == "suspended"
    assert result.snapshots["a"]["outstanding_balance"] > 0
