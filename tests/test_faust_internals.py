"""The worker's reliance on Faust's internals is checked against the installed faust-streaming:
an upgrade that changes them fails here, loudly, before it fails in production."""

import asyncio
import re
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

import faust
import pytest
from faust.tables.recovery import RebalanceAgain
from faust.types import TP

from billing.ledger import Ledger
from runtime.rules_files import load_config, load_pricebook
from runtime.settings import REPO_ROOT, load_settings
from streams.cli import worker_command
from streams.quirks.bulk_restore import ranges_to_read
from streams.quirks.faust_internals import (
    BULK_RESTORE_SOURCES,
    PINNED_VERSION,
    RECOVERY_SOURCES,
    missing_internals,
    missing_recovery_internals,
    restore_actives_in_bulk,
    seek_positions,
)
from streams.worker import LedgerWorker, WorkerOptions


def test_the_pinned_faust_still_has_every_internal_the_worker_uses():
    assert missing_internals() == []


def test_the_pin_in_pyproject_is_the_version_the_internals_were_read_from():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert f"faust-streaming=={PINNED_VERSION}" in project["project"]["dependencies"]


def test_no_other_module_touches_faust_internals():
    """Private attributes of Faust's objects are used in streams/quirks/faust_internals.py only."""
    found = subprocess.run(
        ["grep", "-rnE", r"consumer\._|\b_current_event\b|app\._|stream\._", "--include=*.py",
         "streams", "runtime", "sinks", "commands", "devkit"],
        cwd=REPO_ROOT, capture_output=True, text=True).stdout.splitlines()
    outside = [line for line in found if not line.startswith("streams/quirks/faust_internals.py")
               and not re.search(r"self\._", line)]
    assert outside == []


# -- the standby seek (guard_recovery_seeks) ------------------------------------------------------

STANDBY = TP("app-accounts-changelog", 0)
ANOTHER = TP("app-accounts-changelog", 1)


def test_a_pending_rebalance_restarts_the_round_instead_of_seeking() -> None:
    """The crash: a rebalance added STANDBY with the offset None after the round built its
    offsets; Faust would seek it to None."""
    assert seek_positions({STANDBY}, {STANDBY: None}, rebalance_pending=True) is None
    assert seek_positions({STANDBY}, {STANDBY: 41}, rebalance_pending=True) is None


def test_without_a_rebalance_the_seek_is_fausts_with_unknown_offsets_read_from_the_start() -> None:
    assert seek_positions({STANDBY, ANOTHER}, {STANDBY: 41, ANOTHER: -1},
                          rebalance_pending=False) == {STANDBY: 41, ANOTHER: 0}
    # Never built (not expected without a rebalance): from the start, always correct.
    assert seek_positions({STANDBY, ANOTHER}, {STANDBY: None},
                          rebalance_pending=False) == {STANDBY: 0, ANOTHER: 0}


def test_a_changed_recovery_source_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECOVERY_SOURCES, "_seek_offsets", ("no such line",))
    assert missing_recovery_internals() == [
        "Recovery._seek_offsets no longer has 'no such line'"]


def test_the_worker_guards_its_seeks_and_takes_the_standby_setting(tmp_path: Path) -> None:
    worker = LedgerWorker(load_settings({"BILLING_DATA_DIR": str(tmp_path)}),
                          Ledger(load_config(None), load_pricebook(None)),
                          WorkerOptions(store="memory://", standby_replicas=2))
    assert worker.app.conf.table_standby_replicas == 2
    recovery = worker.app.tables.recovery
    recovery.signal_recovery_start.set()  # a rebalance came during the round
    with pytest.raises(RebalanceAgain):  # restarts it; the consumer is never reached
        asyncio.run(recovery._seek_offsets(None, {STANDBY}, {STANDBY: None}, "standby"))
    option = next(param for param in worker_command.params if param.name == "standby_replicas")
    assert WorkerOptions().standby_replicas == int(option.default) == 0  # the command's default


def worker_and_another_app(tmp_path: Path, **options: object) -> tuple[faust.App, faust.App]:
    """The app of a worker with these ``WorkerOptions``, and an app the worker did not set up."""
    worker = LedgerWorker(load_settings({"BILLING_DATA_DIR": str(tmp_path)}),
                          Ledger(load_config(None), load_pricebook(None)),
                          WorkerOptions(store="memory://", **options))
    other = faust.App("another-app", autodiscover=False, store="memory://",
                      datadir=str(tmp_path / "other"))
    return worker.app, other


def test_the_worker_consumer_batches_its_fetches_and_another_app_keeps_fausts(
        tmp_path: Path) -> None:
    app, other = worker_and_another_app(tmp_path, fetch_max_wait=0.03, fetch_min_bytes=1_000)

    async def fetch_settings(app: faust.App) -> tuple[int, int]:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        return consumer._fetch_max_wait_ms, consumer._fetch_min_bytes

    assert asyncio.run(fetch_settings(app)) == (30, 1_000)
    assert asyncio.run(fetch_settings(other)) == (1_500, 1)


def test_a_wait_for_records_is_short_while_faust_holds_a_partition_back_for_a_full_buffer(
        tmp_path: Path) -> None:
    """Faust does not wake a wait under way when it puts a drained partition back: the worker's
    consumer waits one fetch wait (30 ms here) instead of Faust's 1 s, and does not sleep 1 s
    when every partition is held back; another app's consumer keeps Faust's waits."""
    app, other = worker_and_another_app(tmp_path, fetch_max_wait=0.03)
    usage, payments = TP("usage", 0), TP("payments", 0)

    async def waits(app: faust.App, held_back: set[TP], active: set[TP]) -> list[object]:
        """The timeouts the consumer's fetches were given, and its sleeps, in one wait."""
        consumer, asked = app.consumer, []

        async def getmany(active_partitions: set[TP], timeout: float) -> dict:
            asked.append(timeout)
            return {}

        async def sleep(seconds: float) -> None:
            asked.append(f"slept {seconds} s")

        consumer._getmany, consumer.sleep = getmany, sleep
        consumer._buffered_partitions, consumer._active_partitions = held_back, active
        await consumer._wait_next_records(1.0)
        return asked

    assert asyncio.run(waits(app, {usage}, {payments})) == [0.03]
    assert asyncio.run(waits(app, {usage, payments}, set())) == []  # 30 ms, no sleep
    assert asyncio.run(waits(app, set(), {usage, payments})) == [1.0]
    assert asyncio.run(waits(other, {usage}, {payments})) == [1.0]
    assert asyncio.run(waits(other, {usage, payments}, set())) == ["slept 1 s"]


# -- the bulk restore's hook (restore_actives_in_bulk) and its ranges -----------------------------

ACTIVE = TP("app-accounts-changelog", 2)


def test_the_ranges_read_in_bulk_run_from_faust_start_offsets_to_its_highwaters() -> None:
    """Faust's offsets are the last offset in the store (-1: none, earliest - 1 after
    compaction), its highwaters the last offset of the partition (-1: empty)."""
    offsets = {STANDBY: -1, ANOTHER: 49, ACTIVE: 9}
    highwaters = {STANDBY: 9, ANOTHER: 99, ACTIVE: 9}
    assert ranges_to_read({STANDBY, ANOTHER, ACTIVE}, offsets, highwaters) == {
        STANDBY: (0, 9), ANOTHER: (50, 99)}  # ACTIVE: all of it in the store already
    assert ranges_to_read({STANDBY}, {STANDBY: -1}, {STANDBY: -1}) == {}  # an empty changelog
    assert ranges_to_read({STANDBY}, {STANDBY: None}, {STANDBY: 9}) == {}  # not built: Faust's


class RecordingRestore:
    """Stands in for BulkRestore: records what the round asked for, moves one offset."""

    def __init__(self) -> None:
        self.asked: list[tuple[set[TP], dict[TP, int]]] = []

    async def restore(self, tables, tps, offsets, highwaters, budget) -> int:
        self.asked.append((set(tps), dict(highwaters)))
        offsets[ACTIVE] = highwaters[ACTIVE]
        return 1


def test_the_worker_restores_its_active_partitions_in_bulk_after_faust_built_their_offsets(
        tmp_path: Path) -> None:
    worker = LedgerWorker(load_settings({"BILLING_DATA_DIR": str(tmp_path)}),
                          Ledger(load_config(None), load_pricebook(None)),
                          WorkerOptions(store="memory://", bulk_restore=False))
    recovery = worker.app.tables.recovery

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return {tp: 0 for tp in tps}  # nothing compacted: Faust starts at -1

    consumer = type("Consumer", (), {"earliest_offsets": staticmethod(earliest_offsets)})()
    restore = RecordingRestore()
    restore_actives_in_bulk(worker.app, restore)
    recovery.active_highwaters[ACTIVE] = 99
    offsets = Counter({ACTIVE: None})
    asyncio.run(recovery._build_offsets(consumer, {ACTIVE}, offsets, "standby"))
    assert restore.asked == [] and offsets[ACTIVE] == -1  # standby partitions: Faust's alone
    asyncio.run(recovery._build_offsets(consumer, {ACTIVE}, offsets, "active"))
    assert restore.asked == [({ACTIVE}, {ACTIVE: 99})]
    assert offsets[ACTIVE] == 99  # Faust's round now finds nothing left to read here
    option = next(param for param in worker_command.params if param.name == "bulk_restore")
    assert WorkerOptions().bulk_restore is option.default is True  # the command's default


def test_a_changed_bulk_restore_source_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BULK_RESTORE_SOURCES, "_restart_recovery", (
        'consumer, assigned_active_tps, active_offsets, "active"',
        'consumer, assigned_active_tps, active_highwaters, "active"'))  # offsets first
    assert missing_recovery_internals() == [
        "Recovery._restart_recovery builds the active offsets before the highwaters"]
