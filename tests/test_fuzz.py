"""The bad-input generator (billing/fuzz.py), without Kafka: seeded, every category present, and
each case refused where its category says (decode, key check, ledger) with the error and reason
words it promises, leaving the account untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing.events import InvalidEvent, normalize_input
from billing.ledger import AccountState, Ledger, snapshot
from devkit.fuzz import (
    CATEGORIES,
    DECODE,
    DEFAULT_CATEGORIES,
    KEY,
    LEDGER,
    FuzzCase,
    generate_fuzz,
)
from runtime.rules_files import load_config, load_pricebook
from schemas.codec import Codec

ACCOUNTS = ("acct-a", "acct-b", "acct-c")
START, END = datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 2, 1, 6, tzinfo=UTC)


def cases(count: int = 2_000, seed: int = 5, **options: Any) -> list[FuzzCase]:
    return list(generate_fuzz(count, seed, ACCOUNTS, START, END, **options))


def opened(ledger: Ledger) -> dict[str, AccountState]:
    opened_at = START - timedelta(days=1)
    return {account: ledger.apply(None, normalize_input({
        "type": "account_opened", "event_id": f"open-{account}", "account_id": account,
        "timestamp": opened_at, "created_at": opened_at, "contract": "self_serve"})).state
        for account in ACCOUNTS}


def rejection(case: FuzzCase, codec: Codec, ledger: Ledger,
              states: dict[str, AccountState]) -> tuple[str, InvalidEvent | None]:
    """Where the pipeline refuses ``case`` and with what, as the worker checks it: decode, then
    key, then ledger; ``(stage, None)`` when nothing refuses it."""
    try:
        event = codec.decode_input(case.kind, case.value or b"")
    except InvalidEvent as error:
        return DECODE, error
    if (case.key or b"") != event["account_id"].encode():
        return KEY, None
    state = states.get(event["account_id"])
    before = None if state is None else snapshot(state)
    try:
        ledger.apply(state, event)
    except InvalidEvent as error:
        assert state is None or snapshot(state) == before, "a refused event changed the account"
        return LEDGER, error
    return LEDGER, None


def test_same_seed_same_cases_other_seed_others() -> None:
    assert cases(300) == cases(300)
    assert cases(300) != cases(300, seed=6)


def test_every_category_present_and_only_those_asked_for() -> None:
    made = cases(len(DEFAULT_CATEGORIES))
    assert [case.category for case in made] == list(DEFAULT_CATEGORIES)
    chosen = ("cost_beyond_money_range", "amount_beyond_money_range")
    assert {case.category for case in cases(10, categories=chosen)} == set(chosen)
    with pytest.raises(ValueError, match="unknown categories"):
        cases(1, categories=("no_such_defect",))


def test_each_case_is_refused_where_its_category_says() -> None:
    codec, ledger = Codec(), Ledger(load_config(), load_pricebook())
    states = opened(ledger)
    for case in cases():
        category = CATEGORIES[case.category]
        if case.value is None:  # a tombstone: the worker refuses it before decoding
            assert case.category == "tombstone"
            continue
        stage, error = rejection(case, codec, ledger, states)
        assert stage == category.stage, (case, error)
        if stage == KEY:
            continue
        assert isinstance(error, category.error), (case, error)
        assert any(word.lower() in error.reason.lower() for word in category.reason_words), \
            f"{case.category}: {error.reason!r}"


def test_cases_that_reach_the_merge_carry_their_time() -> None:
    for case in cases():
        if CATEGORIES[case.category].stage != DECODE:
            assert case.timestamp is not None, case
        if case.timestamp is not None:
            assert START <= case.timestamp < END, case
