"""The workload generator: deterministic, canonical, ordered, and it exercises the billing rules.

The replay test is the point of the generator: a month of generated traffic must go through the
ledger without dead letters and must trigger every rule a month of real traffic triggers (pauses,
suspensions, top-ups and their answers, tier changes, invoices, rejected commands).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from billing.events import InvalidEvent, dumps, normalize_input, parse_time
from billing.ledger import Ledger
from billing.replay import Replay, run_replay
from devkit.workload import (
    BAD_PRODUCT,
    ENTERPRISE_POSTPAID,
    ENTERPRISE_PREPAID,
    FREE_CREDIT_ONLY,
    GRANDFATHERED_POSTPAID,
    KINDS,
    SELF_SERVE_AUTO_TOP_UP,
    SELF_SERVE_PREPAID,
    generate,
    generate_command,
    write_jsonl,
)
from runtime.rules_files import load_config, load_pricebook

CUTOVER = load_config().prepaid_cutover


def lines_of(**arguments: Any) -> list[bytes]:
    buffer = io.BytesIO()
    for event in generate(**arguments):
        buffer.write(orjson.dumps(event) + b"\n")
    return buffer.getvalue().splitlines()


@pytest.fixture(scope="module")
def month() -> list[bytes]:
    """A month of traffic for 200 accounts: the workload the replay test is about."""
    return lines_of(accounts=200, events=20_000, seed=7)


@pytest.fixture(scope="module")
def replayed(month: list[bytes]) -> tuple[Replay, list[dict[str, Any]], list[Any]]:
    replay = Replay(Ledger(load_config(), load_pricebook()))
    events_out = io.BytesIO()
    dead_letters = run_replay(replay, enumerate(month, start=1), events_out, None)
    return replay, [orjson.loads(line) for line in events_out.getvalue().splitlines()], \
        dead_letters


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    arguments = {"accounts": 50, "events": 3_000}
    assert lines_of(seed=3, **arguments) == lines_of(seed=3, **arguments)
    assert lines_of(seed=3, **arguments) != lines_of(seed=4, **arguments)


def test_exactly_the_requested_number_of_events(month: list[bytes]) -> None:
    assert len(month) == 20_000
    assert len(lines_of(accounts=30, events=2_345, seed=1, bad_fraction=0.05)) == 2_345


def test_every_line_is_the_canonical_json_of_a_valid_event(month: list[bytes]) -> None:
    for line in month:
        assert dumps(normalize_input(orjson.loads(line))) == line


def test_arrival_order_keeps_timestamps_non_decreasing_without_resends_or_late_usage() -> None:
    lines = lines_of(accounts=80, events=8_000, seed=5, duplicate_fraction=0, late_fraction=0)
    times = [orjson.loads(line)["timestamp"] for line in lines]  # same format: sorts as text
    assert times == sorted(times)


def test_only_resends_and_late_usage_go_back_in_time_and_not_far(month: list[bytes]) -> None:
    seen: set[str] = set()
    latest = datetime.min.replace(tzinfo=UTC)
    kinds = Counter()
    for line in month:
        event = orjson.loads(line)
        moment = parse_time(event["timestamp"])
        if moment < latest:
            # Late usage lags its arrival by 3 h at most; a re-send of it arrives 30 s later.
            assert latest - moment <= timedelta(hours=3, minutes=1)
            if event["event_id"] in seen:
                kinds["resend"] += 1
            else:
                kinds["late"] += 1
                assert event["type"] == "usage"
        latest = max(latest, moment)
        seen.add(event["event_id"])
    assert kinds["resend"] > 0 and kinds["late"] > 0


def test_about_half_a_percent_are_resent_with_the_same_bytes(month: list[bytes]) -> None:
    counts = Counter(month)
    resent = sum(count - 1 for count in counts.values())
    assert 40 <= resent <= 200  # 0.5 % of 20,000 is 100
    ids = Counter(orjson.loads(line)["event_id"] for line in month)
    assert sum(count - 1 for count in ids.values()) == resent  # a re-send is byte for byte


def test_every_account_is_opened_before_anything_else_happens_to_it(month: list[bytes]) -> None:
    opened: dict[str, datetime] = {}
    for line in month:
        event = orjson.loads(line)
        moment = parse_time(event["timestamp"])
        if event["type"] == "account_opened" and event["account_id"] not in opened:
            opened[event["account_id"]] = moment
            continue
        assert event["account_id"] in opened, event
        assert moment >= opened[event["account_id"]]
    assert len(opened) == 200
    late_openers = [moment for moment in opened.values()
                    if moment > datetime(2026, 1, 2, tzinfo=UTC)]
    assert late_openers, "some accounts should open during the month"


def kinds_from_events(lines: list[bytes]) -> dict[str, str]:
    """Each account's population kind, told from its events alone."""
    by_account: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        event = orjson.loads(line)
        by_account.setdefault(event["account_id"], []).append(event)
    kinds = {}
    for account, events in by_account.items():
        opened = events[0]
        types = {event["type"] for event in events}
        if opened["contract"] == "enterprise":
            kind = ENTERPRISE_POSTPAID if opened["billing_model"] == "postpaid" \
                else ENTERPRISE_PREPAID
        elif parse_time(opened["created_at"]) < CUTOVER:
            kind = GRANDFATHERED_POSTPAID
        elif "auto_top_up_configured" in types:
            kind = SELF_SERVE_AUTO_TOP_UP
        elif "payment_method_added" in types:
            kind = SELF_SERVE_PREPAID
        else:
            kind = FREE_CREDIT_ONLY
        kinds[account] = kind
    return kinds


def test_the_population_has_every_kind_in_roughly_the_default_shares(month: list[bytes]) -> None:
    counts = Counter(kinds_from_events(month).values())
    assert set(counts) == set(KINDS)
    assert counts[SELF_SERVE_PREPAID] > counts[ENTERPRISE_PREPAID]
    small = lines_of(accounts=len(KINDS), events=2_000, seed=9)
    assert set(kinds_from_events(small).values()) == set(KINDS)


def test_usage_uses_the_price_books_products_and_meters_with_realistic_sizes(
        month: list[bytes]) -> None:
    """An event is a gateway's batch of requests: big, but each request is of a real size."""
    products = load_pricebook().products
    tokens_per_request, gpu_seconds, requests = [], [], []
    for line in month:
        event = orjson.loads(line)
        if event["type"] != "usage":
            continue
        assert set(event["quantities"]) <= set(products[event["product"]])
        tokens = sum(count for meter, count in event["quantities"].items() if "tokens" in meter)
        if "gpu_seconds" in event["quantities"]:
            gpu_seconds.append(event["quantities"]["gpu_seconds"])
        else:
            tokens_per_request.append(tokens / event["requests"])
        requests.append(event["requests"])
    assert min(requests) >= 1 and sorted(requests)[len(requests) // 2] > 20
    assert gpu_seconds and min(gpu_seconds) >= 30
    tokens_per_request.sort()
    assert 500 <= tokens_per_request[len(tokens_per_request) // 2] <= 5_000
    assert tokens_per_request[-1] <= 600_000  # a 128k-token prompt, its cached part, the answer


def test_a_month_replays_without_dead_letters_and_triggers_every_rule(
        replayed: tuple[Replay, list[dict[str, Any]], list[Any]]) -> None:
    replay, outputs, dead_letters = replayed
    assert dead_letters == []
    types = Counter(output["type"] for output in outputs)
    for expected in ("usage_paused", "usage_resumed", "account_suspended", "top_up_requested",
                     "credits_applied", "tier_changed", "rate_limits_changed", "budget_changed",
                     "invoice_issued", "command_rejected"):
        assert types[expected] > 0, f"no {expected} in {dict(types)}"
    reasons = {output["reason"] for output in outputs if output["type"] == "usage_paused"}
    assert reasons == {"budget_reached", "credits_exhausted", "top_up_failed"}
    upgrades = {(output["from_tier"], output["to_tier"]) for output in outputs
                if output["type"] == "tier_changed" and output["from_tier"] is not None}
    assert ("0", "1") in upgrades and ("1", "2") in upgrades
    statuses = Counter(snapshot["status"] for snapshot in replay.snapshots().values())
    assert statuses["suspended"] > 0


def accounts_with(outputs: list[dict[str, Any]], output_type: str,
                  reason: str | None = None) -> Counter[str]:
    """How many outputs of a type (and reason) each account got."""
    return Counter(output["account_id"] for output in outputs if output["type"] == output_type
                   and (reason is None or output["reason"] == reason))


def test_a_month_of_money_runs_prepaid_customers_out_and_tops_up_auto_top_up_ones(
        month: list[bytes], replayed: tuple[Replay, list[dict[str, Any]], list[Any]]) -> None:
    outputs = replayed[1]
    kinds = kinds_from_events(month)
    manual = {account for account, kind in kinds.items() if kind == SELF_SERVE_PREPAID}
    ran_out = set(accounts_with(outputs, "usage_paused", "credits_exhausted")) & manual
    assert 0.15 <= len(ran_out) / len(manual) <= 0.6
    assert len(ran_out & set(accounts_with(outputs, "usage_resumed"))) >= len(ran_out) / 2
    # Auto top-up accounts are configured with only the free credit left (one top-up at once);
    # a good share spends it and more within the month.
    auto = [account for account, kind in kinds.items() if kind == SELF_SERVE_AUTO_TOP_UP]
    top_ups = accounts_with(outputs, "top_up_requested")
    assert sum(top_ups[account] >= 2 for account in auto) >= 0.25 * len(auto)
    failed = [event for event in map(orjson.loads, month)
              if event["type"] == "payment_failed" and event["top_up_request_id"]]
    assert failed and len(failed) < 0.2 * sum(top_ups.values())
    assert accounts_with(outputs, "usage_paused", "top_up_failed")
    free = [account for account, kind in kinds.items() if kind == FREE_CREDIT_ONLY]
    suspended = accounts_with(outputs, "account_suspended")
    assert sum(account in suspended for account in free) >= 0.5 * len(free)


def test_a_month_of_money_crosses_tiers_and_invoices_plausible_amounts(
        month: list[bytes], replayed: tuple[Replay, list[dict[str, Any]], list[Any]]) -> None:
    replay, outputs, _ = replayed
    upgrades = Counter((output["from_tier"], output["to_tier"]) for output in outputs
                       if output["type"] == "tier_changed" and output["from_tier"] is not None)
    assert upgrades[("1", "2")] >= 20 and upgrades[("2", "3")] > 0
    kinds = kinds_from_events(month)
    invoices = {kind: sorted(Decimal(output["amount"]) for output in outputs
                             if output["type"] == "invoice_issued"
                             and kinds[output["account_id"]] == kind)
                for kind in (GRANDFATHERED_POSTPAID, ENTERPRISE_POSTPAID)}
    self_serve, enterprise = invoices[GRANDFATHERED_POSTPAID], invoices[ENTERPRISE_POSTPAID]
    assert 5 <= self_serve[len(self_serve) // 2] <= 100
    assert 300 <= enterprise[len(enterprise) // 2] <= 10_000
    purchased = sum(Decimal(event["amount"]) for event in map(orjson.loads, month)
                    if event["type"] == "credits_purchased")
    spent = sum(snapshot["lifetime_spend"] for snapshot in replay.snapshots().values())
    assert spent / 3 <= purchased <= 3 * spent


def test_monthly_spend_does_not_depend_on_the_number_of_events() -> None:
    """Fewer events for the same month make bigger batches, not a cheaper month."""
    spent = []
    for events in (4_000, 16_000):
        replay = Replay(Ledger(load_config(), load_pricebook()))
        run_replay(replay, enumerate(lines_of(accounts=100, events=events, seed=3), start=1),
                   io.BytesIO(), None)
        spent.append(sum(snapshot["lifetime_spend"] for snapshot in replay.snapshots().values()))
    assert spent[0] / 2 <= spent[1] <= spent[0] * 2


def test_top_up_answers_mostly_carry_the_id_the_ledger_requested(
        month: list[bytes], replayed: tuple[Replay, list[dict[str, Any]], list[Any]]) -> None:
    requested = {output["top_up_request_id"] for output in replayed[1]
                 if output["type"] == "top_up_requested"}
    answered = {event["top_up_request_id"] for event in map(orjson.loads, month)
                if event.get("top_up_request_id")}
    assert requested and len(requested & answered) >= 0.8 * len(requested)


def test_invoices_of_the_closed_month_are_paid_in_part_and_unknown_ones_rejected(
        month: list[bytes], replayed: tuple[Replay, list[dict[str, Any]], list[Any]]) -> None:
    outputs = replayed[1]
    paid = {output["invoice_id"] for output in outputs
            if output["type"] == "credits_applied" and output["invoice_id"]}
    issued = {output["invoice_id"] for output in outputs if output["type"] == "invoice_issued"}
    assert paid and paid <= issued and all(invoice.endswith("-2026-01") for invoice in paid)
    rejected = [output["reason"] for output in outputs if output["type"] == "command_rejected"]
    assert any("2025-12 is not open" in reason for reason in rejected)


def test_bad_lines_are_the_only_dead_letters_and_have_the_intended_reasons() -> None:
    lines = lines_of(accounts=60, events=6_000, seed=11, bad_fraction=0.03)
    bad = []
    for number, line in enumerate(lines, start=1):
        event = orjson.loads(line)
        try:
            normalize_input(event)
        except InvalidEvent:
            bad.append(number)
            continue
        if event.get("product") == BAD_PRODUCT or event["account_id"].startswith("acct-ghost-"):
            bad.append(number)
    assert 100 <= len(bad) <= 260  # 3 % of the usage slots
    replay = Replay(Ledger(load_config(), load_pricebook()))
    dead_letters = run_replay(replay, enumerate(lines, start=1), io.BytesIO(), None)
    assert [letter.line_number for letter in dead_letters] == bad
    defects = Counter()
    for letter in dead_letters:
        defect = next(pattern for pattern in DEFECTS if re.fullmatch(pattern, letter.reason))
        defects[defect] += 1
    assert set(defects) == set(DEFECTS)


DEFECTS = (  # the invalid lines the generator makes, by the reason the pipeline gives
    r"missing required field 'product'",
    rf"unknown product '{BAD_PRODUCT}'.*",
    r"account 'acct-ghost-\d+' was never opened .*",
    r"quantities\.\w+ is negative .*",
)


def test_too_few_events_for_the_accounts_is_refused() -> None:
    with pytest.raises(ValueError, match="too few"):
        generate(accounts=1_000, events=1_500, seed=1)
    with pytest.raises(ValueError, match="bad_fraction"):
        generate(accounts=10, events=1_000, seed=1, bad_fraction=1.5)


def test_the_command_writes_what_the_api_generates(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "workload.jsonl"
    result = CliRunner().invoke(generate_command, [
        "--accounts", "40", "--events", "3000", "--seed", "2", "--out", str(out),
        "--no-progress"])
    assert result.exit_code == 0, result.output
    expected = tmp_path / "expected.jsonl"
    assert write_jsonl(expected, generate(40, 3_000, 2), total=3_000) == 3_000
    assert out.read_bytes() == expected.read_bytes()
    refused = CliRunner().invoke(generate_command, [
        "--accounts", "1000", "--events", "100", "--out", str(tmp_path / "x.jsonl")])
    assert refused.exit_code != 0 and "too few" in refused.output
