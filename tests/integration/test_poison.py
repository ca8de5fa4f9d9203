"""No message and no account can stop the worker for everyone: while good traffic flows, one of
each kind of poison is sent through the real broker. Each becomes a dead letter with its reason,
the good traffic is billed exactly as ``billing replay`` bills it, and the worker never exits."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billing.events import normalize_input
from commands.deadletter import read_dead_letters
from devkit.workload import generate
from runtime.settings import Settings
from schemas.codec import Codec
from tests.integration.pipeline import (
    WorkerProcess,
    as_message,
    assert_matches,
    in_merge_order,
    isolated,
    publish_messages,
    replay_of,
)

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)
HOT_EVENTS = 100_000  # for one account, within 6 hours


def hot_account() -> list[dict[str, Any]]:
    """An account that sends 100,000 usage events within 6 hours (its state must stay small)."""
    opened_at = START + timedelta(days=4)
    events = [normalize_input({
        "type": "account_opened", "event_id": "hot-open", "account_id": "hot-1",
        "timestamp": opened_at, "created_at": opened_at, "contract": "enterprise",
        "billing_model": "postpaid"})]
    first = START + timedelta(days=9)
    step_ms = 6 * 3_600_000 // HOT_EVENTS
    events.extend(normalize_input({
        "type": "usage", "event_id": f"hot-{number:06d}", "account_id": "hot-1",
        "timestamp": first + timedelta(milliseconds=number * step_ms),
        "product": "llama-v3p1-8b", "quantities": {"input_tokens": 1000}})
        for number in range(HOT_EVENTS))
    return events


AVRO = Codec()  # plain Avro, as the test stacks run without a schema registry


def usage_bytes(account_id: str, event_id: str, product: str = "llama-v3p1-8b") -> bytes:
    """A usage record as Avro, as a producer that skipped validation would send it."""
    return AVRO.encode("usage", {"type": "usage", "event_id": event_id, "account_id": account_id,
                            "timestamp": START + timedelta(days=10), "product": product,
                            "quantities": {"input_tokens": 5}, "requests": 1})


def poison(settings: Settings, account_id: str) -> dict[str, tuple[str, bytes, bytes, str]]:
    """What is sent -> (topic, key, value, words its dead letter's reason must contain)."""
    topics = settings.topics
    big_id = "x" * 300_000
    opened = AVRO.encode("accounts", {
        "type": "account_opened", "event_id": "open-big", "account_id": big_id,
        "timestamp": START + timedelta(days=2), "created_at": START, "contract": "self_serve",
        "billing_model": None})
    cases = {
        "1 MB of garbage": (topics.usage, account_id.encode(), os.urandom(1_000_000),
                            "maximum message size"),
        "a 300 KB event id": (topics.usage, account_id.encode(),
                              usage_bytes(account_id, big_id), "maximum message size"),
        "a 300 KB account id": (topics.accounts, big_id.encode(), opened,
                                "maximum message size"),
        "a 1 KB event id": (topics.usage, account_id.encode(),
                            usage_bytes(account_id, "y" * 1000), "at most 256"),
        "an event that makes the rules fail": (
            topics.usage, account_id.encode(), usage_bytes(account_id, "boom-1", "explode"),
            "the billing rules failed"),
    }
    for kind in ("usage", "payments", "accounts", "control"):
        cases[f"undecodable bytes on {kind}"] = (getattr(topics, kind), account_id.encode(),
                                                 b"\x00\xff not avro " + kind.encode(), "Avro")
    return cases


def test_poison_costs_one_dead_letter_each_and_stops_nobody(stack: Settings,
                                                            tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "poison")
    good = [normalize_input(event) for event in generate(
        accounts=300, events=10_000, seed=23, start=START)]
    victim = next(event["account_id"] for event in good if event["type"] == "account_opened")
    hot = hot_account()
    cases = poison(settings, victim)
    messages = [as_message(settings, event) for event in good[:5_000]]
    messages += [(topic, key, value) for topic, key, value, _ in cases.values()]
    messages += [as_message(settings, event) for event in good[5_000:] + hot]
    publish_messages(settings, messages)

    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log",
                           module="tests.integration.faulty_worker").start()
    try:
        worker.wait_drained(timeout=900)
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        assert worker.stuck_restarts == 0
    finally:
        worker.stop()

    letters = [entry.letter for entry in read_dead_letters(settings, Codec(settings.topics))]
    for what, (topic, _, value, words) in cases.items():
        matching = [letter for letter in letters if letter["topic"] == topic
                    and (letter["value"] == value or (letter.get("value_truncated") and
                                                      letter["value_size"] == len(value)))]
        assert len(matching) == 1, f"{what}: {len(matching)} dead letters"
        assert words in matching[0]["reason"], f"{what}: {matching[0]['reason']!r}"
    assert len(letters) == len(cases), [letter["reason"][:80] for letter in letters]

    assert_matches(settings, app_id, replay_of(in_merge_order(good + hot)))
