"""Standby replicas (``billing worker --standby-replicas``): the start that crashed Faust.

Faust 0.15.3 crashed a worker with ``ValueError('Offset must be a positive integer')`` when a
second worker joined while the first was still reading its tables from the changelog: the
rebalance gave the first worker standby partitions whose offsets its recovery round had never
read, the round went on regardless (Faust swallows the rebalance while it waits for the active
partitions) and sought them to ``None`` (``streams/quirks/faust_internals.py``,
``seek_positions``). Whether that seek raised depended on a race with the consumer's thread (2 of
6 and 1 of 4 two-worker starts in ``benchmarks/standby_bench.py``); the path itself is taken at
every such start. Here the first worker starts alone on a changelog long enough to be still
reading when the second one joins, every time: with the fix the stale round is restarted (logged
as ``recovery_round_restarted``), and both workers become ready with their standby copies and stay
up.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from devkit.harness import WorkerProcess, create_changelog, fill_changelog
from runtime.observe import changelog_topic, wait_until
from runtime.settings import Settings
from tests.integration.pipeline import isolated

pytestmark = pytest.mark.integration

RECORDS = 200_000  # 20-60 s of reading for the first worker alone, on this machine
STARTS = 3  # pairs of workers started one after the other
VERBOSE_WORKER = "tests.integration.verbose_worker"
RESTORING = b"Restoring state from changelog topics..."
STANDBYS_STARTED = b"Starting standby partitions..."
READY = b"Worker ready"
RESTARTED = b"recovery_round_restarted seek=standby"


def start_worker(settings: Settings, app_id: str, directory: Path, name: str) -> WorkerProcess:
    """A worker with one standby replica, its own empty RocksDB directory (a new machine), and
    Faust's own reading of the changelog (the bulk restore off: it reads these records in a
    second or two, before the round this test needs the second worker to interrupt)."""
    directory.mkdir(parents=True, exist_ok=True)
    return WorkerProcess(replace(settings, data_dir=directory / name), app_id,
                         directory / f"{name}.log", store="rocksdb://", module=VERBOSE_WORKER,
                         env={"BILLING_STANDBY_REPLICAS": "1", "BILLING_BULK_RESTORE": "0"}
                         ).start()


def join_while_recovering(settings: Settings, app_id: str, directory: Path) -> None:
    """Start the first worker; once it reads its tables, the second; wait until both are ready
    with their standby partitions (or one crashed: :class:`WorkerExited`)."""
    first = start_worker(settings, app_id, directory, "first")
    workers = [first]

    def running_logs() -> list[bytes]:
        for worker in workers:
            worker.check_running()  # raises, with the log's end, if Faust crashed it
        return [worker.log_path.read_bytes() for worker in workers]

    try:
        wait_until(lambda: RESTORING in running_logs()[0], 120, interval=0.1,
                   what="the first worker to start reading its tables")
        assert READY not in first.log_path.read_bytes(), "the first worker read too fast"
        workers.append(start_worker(settings, app_id, directory, "second"))
        wait_until(lambda: all(STANDBYS_STARTED in log and READY in log.split(STANDBYS_STARTED)[-1]
                               for log in running_logs()),
                   300, interval=0.5, what="both workers ready, each with its standby partitions")
    finally:
        for worker in workers:
            worker.stop()
    first_log, second_log = (worker.log_path.read_bytes() for worker in workers)
    assert b"Crashed reason=" not in first_log + second_log
    # The crash's path was taken (the second worker joined during the first one's recovery and
    # the stale round reached its standby seek) and the fix restarted that round.
    assert RESTARTED in first_log, "the second worker joined after the first one had recovered"


def test_a_worker_still_recovering_when_another_joins_keeps_running(stack: Settings,
                                                                    tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "standby-join")
    topic = changelog_topic(app_id)
    create_changelog(settings, topic)
    fill_changelog(settings, topic, ((f"acct-{number:06d}".encode(), b"x" * 200)
                                     for number in range(RECORDS)))
    for start in range(STARTS):
        join_while_recovering(settings, app_id, tmp_path / f"start-{start}")
