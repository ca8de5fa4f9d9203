"""Ten thousand bad messages mixed into a generated workload, through the real broker and worker:
every one lands in the dead-letter topic with a reason, none of the good traffic does, the good
traffic is billed exactly as ``billing replay`` bills it alone, and the worker is still running.

The bad messages come from :mod:`devkit.fuzz` (random bytes, empty values and tombstones, JSON,
truncated Avro, other topics' records, Confluent headers, unknown union branches, times out of
range, empty ids and fields, negative counts and amounts, unknown contracts, months, products and
meters, foreign keys, accounts never opened). They are identified in the dead-letter topic by the
(topic, partition, offset) the broker gave them.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billing.events import normalize_input
from billing.ledger import to_millis
from commands.deadletter import read_dead_letters
from devkit.fuzz import CATEGORIES, DEFAULT_CATEGORIES, FuzzCase, generate_fuzz
from devkit.workload import generate
from runtime.observe import wait_until
from runtime.settings import Settings
from schemas.codec import Codec
from tests.integration.pipeline import (
    Position,
    WorkerProcess,
    as_message,
    assert_matches,
    in_merge_order,
    isolated,
    publish_messages,
    replay_of,
)

pytestmark = pytest.mark.integration

SEED = 20260107
START = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNTS, EVENTS, FUZZED = 200, 3_000, 10_000


def good_workload(accounts: int, events: int) -> list[dict[str, Any]]:
    return in_merge_order([normalize_input(event) for event in generate(
        accounts=accounts, events=events, seed=SEED, start=START)])


def fuzz_for(good: list[dict[str, Any]], count: int,
             categories: Sequence[str] | None = None) -> list[FuzzCase]:
    """Bad messages aimed at the good traffic's accounts opened on its first day, timed after it."""
    window_start = START + timedelta(days=1)
    accounts = sorted({event["account_id"] for event in good
                       if event["type"] == "account_opened" and event["timestamp"] < window_start})
    end = good[-1]["timestamp"]
    options = {} if categories is None else {"categories": categories}
    return list(generate_fuzz(count, SEED, accounts, window_start, end, **options))


def interleave(good: list[dict[str, Any]],
               fuzz: list[FuzzCase]) -> list[dict[str, Any] | FuzzCase]:
    """The good events in merge order with the bad ones mixed in: a case that decodes right after
    the good events up to its time (so it never holds a later good event back in the worker's
    merge), the others anywhere."""
    rand = random.Random(SEED)
    times = [to_millis(event["timestamp"]) for event in good]
    before: list[list[FuzzCase]] = [[] for _ in range(len(good) + 1)]  # [i]: cases before good[i]
    for case in fuzz:
        slot = (rand.randrange(len(good) + 1) if case.timestamp is None
                else bisect_right(times, to_millis(case.timestamp)))
        before[slot].append(case)
    stream: list[dict[str, Any] | FuzzCase] = []
    for cases, event in zip(before, [*good, None], strict=True):
        stream.extend(cases)
        if event is not None:
            stream.append(event)
    return stream


def send(settings: Settings, stream: list[dict[str, Any] | FuzzCase]) -> dict[Position, FuzzCase]:
    """Publish the mixed stream in order; return where the broker put each bad message."""
    positions = publish_messages(settings, (
        (getattr(settings.topics, item.kind), item.key, item.value)
        if isinstance(item, FuzzCase) else as_message(settings, item) for item in stream))
    return {position: item for position, item in zip(positions, stream, strict=True)
            if isinstance(item, FuzzCase)}


def agent_crashes(log: Path) -> list[str]:
    """Crashes the worker's log reports: Faust restarts a crashed agent (or timer) and the
    process lives on, but its unacknowledged event then holds the partition's commits back."""
    return [line for line in log.read_text(errors="replace").splitlines()
            if "Crashed reason=" in line]


def run_pipeline(settings: Settings, app_id: str, log: Path, timeout: float) -> None:
    """Run the worker until it has committed every input; neither it nor its agent may crash
    (a crash fails at once rather than at the timeout)."""
    worker = WorkerProcess(settings, app_id, log).start()

    def assert_no_crash() -> None:
        crashes = agent_crashes(log)
        assert not crashes, f"the worker crashed: {crashes[0][:600]}; see {log}"

    def done_or_crashed() -> bool:
        worker.check_running()
        return bool(agent_crashes(log)) or worker.lag() == 0

    try:
        try:
            wait_until(done_or_crashed, timeout, 1.0, "the worker to drain its inputs")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; lag={worker.lag()}\n{worker.log_tail()}") from None
        assert_no_crash()
        worker.wait_drained(timeout)
        worker.check_running()
        assert_no_crash()
    finally:
        worker.stop(timeout=15)


def assert_all_dead_lettered(settings: Settings, sent: dict[Position, FuzzCase]) -> None:
    """Each bad message has a dead letter (at least one: redelivery may add another) with its key,
    its bytes and a reason naming its defect; nothing else is dead-lettered."""
    letters: dict[Position, list[dict[str, Any]]] = defaultdict(list)
    for entry in read_dead_letters(settings, Codec(settings.topics)):
        assert entry.error is None, f"unreadable dead letter {entry.position}: {entry.error}"
        letter = entry.letter
        letters[(letter["topic"], letter["partition"], letter["offset"])].append(letter)
    missing = Counter(case.category for position, case in sent.items() if position not in letters)
    assert not missing, f"not dead-lettered, by category: {dict(missing)}"
    good_ones = sorted(set(letters) - set(sent))
    assert not good_ones, (f"{len(good_ones)} good messages dead-lettered, e.g. "
                           f"{good_ones[0]}: {letters[good_ones[0]][0]['reason']}")
    for position, case in sent.items():
        letter = letters[position][0]
        assert (letter["key"], letter["value"]) == (case.key, case.value), position
        words = CATEGORIES[case.category].reason_words
        assert any(word.lower() in letter["reason"].lower() for word in words), \
            f"{case.category} at {position}: reason {letter['reason']!r}, expected one of {words}"


def test_fuzzed_input_is_dead_lettered_and_good_traffic_billed_exactly(
        stack: Settings, tmp_path: Path) -> None:
    good = good_workload(ACCOUNTS, EVENTS)
    fuzz = fuzz_for(good, FUZZED)
    assert {case.category for case in fuzz} == set(DEFAULT_CATEGORIES)
    settings, app_id = isolated(stack, "fuzz")
    sent = send(settings, interleave(good, fuzz))
    assert len(sent) == FUZZED

    run_pipeline(settings, app_id, tmp_path / "worker.log", timeout=300)

    assert_all_dead_lettered(settings, sent)
    assert_matches(settings, app_id, replay_of(good))
