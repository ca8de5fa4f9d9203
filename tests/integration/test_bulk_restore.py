"""New workers (no local files) rebuild their tables from the changelogs in bulk
(``streams/quirks/bulk_restore.py``) and bill on where ``billing replay`` ends.

A first worker bills half the workload into its RocksDB and the changelogs, and stops. Then new
workers start on empty data directories (new machines) and the second half is published:

- one worker alone: its bulk restore must read every changelog record, leaving Faust's own
  reading nothing;
- two workers, the second joining while the first is still restoring (slowed down to make sure):
  the rebalance interrupts the first one's bulk restore, and the next recovery rounds go on from
  what it wrote.

Either way the end result must be replay's: a record lost, misplaced or left behind by the bulk
read shows up as a differing snapshot or a missing or unexpected output.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing.events import normalize_input
from devkit.workload import generate
from runtime.observe import wait_until
from runtime.settings import Settings
from tests.integration.pipeline import (
    WorkerProcess,
    assert_matches,
    in_merge_order,
    isolated,
    publish,
    replay_of,
)
from tests.test_metrics import free_port, samples

pytestmark = pytest.mark.integration

BULK_LINE = re.compile(rb"bulk_restore records=(\d+) partitions=(\d+) seconds=[\d.]+ "
                       rb"left_to_faust=(\d+)")
FAUST_READING = b"Restoring state from changelog topics..."
INTERRUPTED = b"bulk_restore_interrupted"
PROGRESS = b"bulk_restore_progress"
SLOW_BULK_WORKER = "tests.integration.slow_bulk_worker"


def workload() -> list[dict[str, Any]]:
    return in_merge_order([normalize_input(event) for event in generate(
        accounts=400, events=12_000, seed=41, start=datetime(2026, 1, 1, tzinfo=UTC))])


def new_worker(settings: Settings, app_id: str, directory: Path, name: str,
               module: str = "commands.cli", env: dict[str, str] | None = None) -> WorkerProcess:
    """A worker on its own, empty data directory: a new machine."""
    return WorkerProcess(replace(settings, data_dir=directory / name), app_id,
                         directory / f"{name}.log", store="rocksdb://", module=module, env=env)


def bill_first_half(settings: Settings, app_id: str, directory: Path,
                    events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A worker bills the first half of ``events`` and stops; returns the second half."""
    half = len(events) // 2
    publish(settings, events[:half])
    first = new_worker(settings, app_id, directory, "first").start()
    try:
        first.wait_drained(timeout=600)
    finally:
        first.stop()
    return events[half:]


def test_a_new_worker_restores_in_bulk_and_ends_where_replay_ends(stack: Settings,
                                                                  tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "bulk-restore")
    events = workload()
    second_half = bill_first_half(settings, app_id, tmp_path, events)
    publish(settings, second_half)
    port = free_port()
    second = new_worker(settings, app_id, tmp_path, "second",
                        env={"BILLING_WORKER_METRICS_PORT": str(port)}).start()
    try:
        second.wait_drained(timeout=600)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = samples(response.read().decode())
    finally:
        second.stop()
    assert_matches(settings, app_id, replay_of(events))
    log = second.log_path.read_bytes()
    rounds = [tuple(map(int, found)) for found in BULK_LINE.findall(log)]
    assert rounds, "the new worker did not restore in bulk"
    records, partitions, left = rounds[0]
    first_half = events[:len(events) - len(second_half)]
    assert records >= len(replay_of(first_half)[0])  # an accounts record for each, at least
    assert partitions > 0 and left == 0
    assert metrics[("billing_worker_restored_records_total", ())] == sum(
        restored for restored, _, _ in rounds)
    assert FAUST_READING not in log, "Faust's recovery read records the bulk restore had left"


def test_a_worker_joining_during_a_bulk_restore_interrupts_it_and_nothing_is_lost(
        stack: Settings, tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "bulk-join")
    events = workload()
    second_half = bill_first_half(settings, app_id, tmp_path, events)
    slow = new_worker(settings, app_id, tmp_path, "slow", SLOW_BULK_WORKER).start()
    joining = new_worker(settings, app_id, tmp_path, "joining")
    try:
        # Five seconds into its restore (5 records every 10 ms: thousands of records to go).
        wait_until(lambda: slow.check_running() or PROGRESS in slow.log_path.read_bytes(), 120,
                   interval=0.1, what="the slow worker to be restoring in bulk")
        joining.start()
        publish(settings, second_half)
        wait_until(lambda: slow.check_running() or INTERRUPTED in slow.log_path.read_bytes(),
                   120, interval=0.2, what="the rebalance to interrupt the bulk restore")
        slow.wait_drained(timeout=600)
    finally:
        joining.stop()
        slow.stop()
    assert_matches(settings, app_id, replay_of(events))
    logs = slow.log_path.read_bytes() + joining.log_path.read_bytes()
    assert b"Crashed reason=" not in logs
