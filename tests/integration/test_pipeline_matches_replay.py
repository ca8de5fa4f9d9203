"""The Kafka pipeline, fed a generated workload, ends where ``billing replay`` ends.

Same final snapshots (read back from the table's changelog topic) and the same set of output event
ids (read back from billing.account-state): once straight through on the production table store
(RocksDB), once on the memory store with the worker stopped in the middle and restarted, so its
whole table is recovered from the changelog topic.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing.events import normalize_input
from devkit.workload import generate
from runtime.observe import wait_until
from tests.integration.pipeline import (
    WorkerProcess,
    assert_matches,
    in_merge_order,
    isolated,
    publish,
    replay_of,
)

pytestmark = pytest.mark.integration

ACCOUNTS, EVENTS = 1_000, 50_000


@pytest.fixture(scope="module")
def workload() -> list[dict[str, Any]]:
    events = [normalize_input(event) for event in generate(
        accounts=ACCOUNTS, events=EVENTS, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC))]
    return in_merge_order(events)


@pytest.fixture(scope="module")
def expected(workload: list[dict[str, Any]]) -> tuple[dict[str, Any], set[str]]:
    return replay_of(workload)


def test_pipeline_matches_replay(stack: Any, workload: list[dict[str, Any]],
                                 expected: tuple[dict[str, Any], set[str]],
                                 tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "straight")
    publish(settings, workload)
    WorkerProcess(settings, app_id, tmp_path / "worker.log", store="rocksdb://").run_to_end(timeout=900)
    assert_matches(settings, app_id, expected)


def test_pipeline_matches_replay_across_a_restart(stack: Any, workload: list[dict[str, Any]],
                                                  expected: tuple[dict[str, Any], set[str]],
                                                  tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "restart")
    # Month closes in batches of 30 accounts (~250 a partition): the same end.
    settings = replace(settings, close_accounts_per_batch=30)
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
