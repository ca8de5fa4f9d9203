"""A new worker (no local files) rebuilds its tables from their changelogs in bulk
(``streams/quirks/bulk_restore.py``) and bills on where ``billing replay`` ends.

The first worker bills half the workload into its RocksDB and the changelogs, and stops; the
second one starts on another, empty data directory (a new machine) after the second half is
published. Its bulk restore must have read every changelog record, leaving Faust's own reading
nothing, and the end result must be replay's: a record lost, misplaced or left behind by the bulk
read shows up as a differing snapshot or a missing or unexpected output.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing.events import normalize_input
from devkit.workload import generate
from runtime.settings import Settings
from tests.integration.pipeline import (
    WorkerProcess,
    assert_matches,
    in_merge_order,
    isolated,
    publish,
    replay_of,
)

pytestmark = pytest.mark.integration

BULK_LINE = re.compile(rb"bulk_restore records=(\d+) partitions=(\d+) seconds=[\d.]+ "
                       rb"left_to_faust=(\d+)")
FAUST_READING = b"Restoring state from changelog topics..."


def test_a_new_worker_restores_in_bulk_and_ends_where_replay_ends(stack: Settings,
                                                                  tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "bulk-restore")
    events = in_merge_order([normalize_input(event) for event in generate(
        accounts=400, events=12_000, seed=41, start=datetime(2026, 1, 1, tzinfo=UTC))])
    half = len(events) // 2
    publish(settings, events[:half])
    first = WorkerProcess(replace(settings, data_dir=tmp_path / "first"), app_id,
                          tmp_path / "first.log", store="rocksdb://").start()
    try:
        first.wait_drained(timeout=600)
    finally:
        first.stop()
    publish(settings, events[half:])
    second = WorkerProcess(replace(settings, data_dir=tmp_path / "second"), app_id,
                           tmp_path / "second.log", store="rocksdb://").start()
    try:
        second.wait_drained(timeout=600)
    finally:
        second.stop()
    assert_matches(settings, app_id, replay_of(events))
    log = second.log_path.read_bytes()
    rounds = [tuple(map(int, found)) for found in BULK_LINE.findall(log)]
    assert rounds, "the new worker did not restore in bulk"
    records, partitions, left = rounds[0]
    assert records >= len(replay_of(events[:half])[0])  # an accounts record for each, at least
    assert partitions > 0 and left == 0
    assert FAUST_READING not in log, "Faust's recovery read records the bulk restore had left"
