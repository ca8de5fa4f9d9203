"""The Kafka pipeline, fed a generated workload, ends where ``billing replay`` ends.

Same final snapshots (read back from the table's changelog topic) and the same set of output event
ids (read back from billing.account-state): once straight through on the production table store
(RocksDB), once on the memory store with the worker stopped in the middle and restarted, so its
whole table is recovered from the changelog topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing.config import load_config
from billing.events import InvalidEvent, normalize_input
from billing.ledger import Ledger
from billing.pricebook import load_pricebook
from billing.replay import Replay
from billing.workload import generate
from streams.observe import output_events, table_snapshots, wait_until
from tests.integration.pipeline import WorkerProcess, in_merge_order, isolated, publish

pytestmark = pytest.mark.integration

ACCOUNTS, EVENTS = 1_000, 50_000


@pytest.fixture(scope="module")
def workload() -> list[dict[str, Any]]:
    events = [normalize_input(event) for event in generate(
        accounts=ACCOUNTS, events=EVENTS, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC))]
    return in_merge_order(events)


def replay_of(events: list[dict[str, Any]]) -> tuple[dict[str, Any], set[str]]:
    replay = Replay(Ledger(load_config(), load_pricebook()))
    ids: set[str] = set()
    for event in events:
        try:
            outputs, _ = replay.apply(event)
        except InvalidEvent:
            continue
        ids.update(output["event_id"] for output in outputs)
    return replay.snapshots(), ids


@pytest.fixture(scope="module")
def expected(workload: list[dict[str, Any]]) -> tuple[dict[str, Any], set[str]]:
    return replay_of(workload)


def assert_matches(settings: Any, app_id: str, expected: tuple[dict[str, Any], set[str]]) -> None:
    snapshots, ids = expected
    outputs = output_events(settings)
    got_ids = {event["event_id"] for event in outputs}
    assert got_ids == ids, (f"missing {sorted(ids - got_ids)[:5]}, "
                            f"unexpected {sorted(got_ids - ids)[:5]}")
    got = table_snapshots(settings, app_id)
    differing = [key for key in snapshots if got.get(key) != snapshots[key]]
    assert not differing and set(got) == set(snapshots), \
        f"{len(differing)} snapshots differ, e.g. {differing[:1]}: " + (
            f"pipeline {got.get(differing[0])} replay {snapshots[differing[0]]}"
            if differing else "")


def test_pipeline_matches_replay(stack: Any, workload: list[dict[str, Any]],
                                 expected: tuple[dict[str, Any], set[str]],
                                 tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "straight")
    publish(settings, workload)
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log", store="rocksdb://").start()
    try:
        worker.wait_drained(timeout=900)
    finally:
        worker.stop()
    assert_matches(settings, app_id, expected)


def test_pipeline_matches_replay_across_a_restart(stack: Any, workload: list[dict[str, Any]],
                                                  expected: tuple[dict[str, Any], set[str]],
                                                  tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "restart")
    publish(settings, workload)
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: worker.lag() <= len(workload) // 2, timeout=900, interval=1.0,
                   what="the worker to process half the workload")
        worker.stop()
        worker.start()
        worker.wait_drained(timeout=900)
    finally:
        worker.stop()
    assert_matches(settings, app_id, expected)
