"""The pipeline under failure: killed workers, a restarted broker, a rebalance.

Each test publishes the same generated workload to its own topics, runs the real ``billing worker``
through a failure, and then requires what a clean run gives: the final table snapshots equal
``billing replay``, every output event id the replay emits is on the account-state topic (and no
other), and in ClickHouse (written by the real sink into the real server) every output id is there
exactly once. Copies a crash leaves on the topic (same deterministic id) are allowed there: that is
what the ids are for.
"""

from __future__ import annotations

import random
import re
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing.events import normalize_input
from devkit.harness import records_to_recover, recovery_tables
from devkit.stack.kafka import KafkaServer
from devkit.workload import generate
from runtime.observe import changelog_topic, wait_until
from runtime.settings import Settings
from tests.integration.pipeline import (
    WorkerProcess,
    assert_matches,
    clickhouse_output_ids,
    in_merge_order,
    isolated,
    publish,
    replay_of,
)

pytestmark = pytest.mark.integration

ACCOUNTS, EVENTS = 2_000, 100_000
KILLS = 10
Expected = tuple[dict[str, Any], set[str]]


@pytest.fixture(scope="module")
def workload() -> list[dict[str, Any]]:
    return in_merge_order([normalize_input(event) for event in generate(
        accounts=ACCOUNTS, events=EVENTS, seed=31, start=datetime(2026, 1, 1, tzinfo=UTC))])


@pytest.fixture(scope="module")
def expected(workload: list[dict[str, Any]]) -> Expected:
    return replay_of(workload)


def assert_same_result(settings: Settings, app_id: str, expected: Expected,
                       *workers: WorkerProcess) -> None:
    """Snapshots and output ids equal the replay's; ClickHouse holds every output id once."""
    outputs = assert_matches(settings, app_id, expected)
    copies = len(outputs) - len({output["event_id"] for output in outputs})
    stored = clickhouse_output_ids(settings, app_id)
    missing = expected[1] - set(stored)
    twice = [event_id for event_id, count in stored.items() if count > 1]
    assert not missing and set(stored) == expected[1] and not twice, (
        f"ClickHouse: {len(missing)} output ids missing (e.g. {sorted(missing)[:3]}), "
        f"{len(twice)} stored more than once (e.g. {twice[:3]}); "
        f"{copies} copies on the topic")
    print(f"{app_id}: {len(expected[1])} output ids, {copies} copies on the topic, "
          f"each stored once in ClickHouse; restarts of a stuck worker: "
          f"{sum(worker.stuck_restarts for worker in workers)}")


def wait_processed(worker: WorkerProcess, total: int, processed: int, timeout: float) -> None:
    """Until the worker's group has committed at least ``processed`` of ``total`` inputs."""
    wait_until(lambda: worker.lag_reached(total - processed), timeout, interval=0.25,
               what=f"{processed} of {total} inputs committed")


def test_sigkill_at_ten_random_points(stack: Settings, workload: list[dict[str, Any]],
                                      expected: Expected, tmp_path: Path) -> None:
    """SIGKILL: no shutdown, no final commit, RocksDB (the production store) left as it was.
    Month closes go 50 accounts a batch (10 batches a partition), so a kill can land inside."""
    settings, app_id = isolated(stack, "sigkill")
    settings = replace(settings, close_accounts_per_batch=50)
    publish(settings, workload)
    rng = random.Random(2026)
    total = len(workload)
    points = sorted(rng.sample(range(total // 20, total * 19 // 20), KILLS))
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log", store="rocksdb://").start()
    try:
        for point in points:
            wait_processed(worker, total, point, timeout=600)
            time.sleep(rng.uniform(0.0, 1.0))  # somewhere inside a commit interval
            worker.stop(signal.SIGKILL)
            worker.start()
        worker.wait_drained(timeout=900)
    finally:
        worker.stop()
    assert_same_result(settings, app_id, expected, worker)


def test_broker_restart_mid_run(stack: Settings, workload: list[dict[str, Any]],
                                expected: Expected, tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "broker-restart")
    publish(settings, workload)
    broker = KafkaServer(stack)
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log", store="rocksdb://").start()
    try:
        wait_processed(worker, len(workload), len(workload) // 3, timeout=600)
        broker.stop()
        time.sleep(3)
        broker.start()
        worker.wait_drained(timeout=900)
    finally:
        worker.stop()
        if not broker.is_running():
            broker.start()
    assert_same_result(settings, app_id, expected, worker)


def assigned_inputs(log: str, usage_topic: str) -> list[str]:
    """The usage partitions of each assignment in a worker's log (Faust logs each as a table of
    topic | partitions, leaving out a topic without partitions)."""
    return re.findall(rf"\| {re.escape(usage_topic)} +\| {{([^}}]+)}}", log)


def owns_inputs_now(worker: WorkerProcess, usage_topic: str) -> bool:
    """Whether the worker's latest assignment includes partitions of the usage topic."""
    *_, latest = worker.log_path.read_text().split("Setting newly assigned partitions")
    return bool(assigned_inputs(latest.split("\n[", 1)[0], usage_topic))


def test_two_workers_one_stopped_mid_run(stack: Settings, workload: list[dict[str, Any]],
                                         expected: Expected, tmp_path: Path) -> None:
    """Two workers share the partitions; when one stops, the other takes its partitions over
    and, without standby replicas, recovers their state from the changelog (each worker has its
    own RocksDB, as on two machines)."""
    settings, app_id = isolated(stack, "rebalance")
    publish(settings, workload)
    workers = [WorkerProcess(replace(settings, data_dir=tmp_path / name), app_id,
                             tmp_path / f"{name}.log", store="rocksdb://",
                             env={"BILLING_STANDBY_REPLICAS": "0"}).start()
               for name in ("first", "second")]
    try:
        wait_processed(workers[0], len(workload), len(workload) // 3, timeout=600)
        workers[1].check_running()
        workers[1].stop()
        workers[0].wait_drained(timeout=900)
    finally:
        for worker in workers:
            worker.stop()
    for worker in workers:
        assert assigned_inputs(worker.log_path.read_text(), settings.topics.usage), (
            f"{worker.log_path.name}: never assigned an input partition")
    assert_same_result(settings, app_id, expected, *workers)


# Found by this test (2026-12-06: 1 of 3 runs with standby replicas, 0 of 2 without): a SIGKILL
# could leave a batch's seen-ids changelog record delivered and its accounts record not. A worker
# that took the partition over from the changelog (standby copy or rebuild alike) then had the
# account without the batch but the batch's payment and event ids: the redelivered events were
# taken for duplicates and dropped (seen: a $10 credits_purchased lost, then a usage_paused the
# replay never emits). Fixed by the commit order (streams/commit.py: the states' records are
# delivered before the seen ids') and by recording a redelivered event's ids again
# (Ledger.remember_again).
@pytest.mark.parametrize("standby_replicas", [1, 0])
def test_two_workers_one_killed_mid_run(stack: Settings, workload: list[dict[str, Any]],
                                        expected: Expected, tmp_path: Path,
                                        standby_replicas: int) -> None:
    """Two workers, RocksDB each (as on two machines), with and without a standby copy of each
    other's table partitions. One is SIGKILLed while both own partitions; the survivor takes them
    over (from its copies, reading only what they had not read yet) and the run ends where the
    replay ends. How much the survivor read is printed, not asserted: a copy can lag far behind
    a changelog written under load (seen: 31 of 453 records read 36 s after the copy started)."""
    settings, app_id = isolated(stack, f"kill-standby-{standby_replicas}")
    publish(settings, workload)
    survivor, victim = workers = [
        WorkerProcess(replace(settings, data_dir=tmp_path / name), app_id,
                      tmp_path / f"{name}.log", store="rocksdb://",
                      module="tests.integration.verbose_worker",  # every recovery table logged
                      env={"BILLING_STANDBY_REPLICAS": str(standby_replicas)}).start()
        for name in ("survivor", "victim")]
    try:
        wait_processed(survivor, len(workload), len(workload) // 3, timeout=600)

        def both_own_partitions_and_keep_copies() -> bool:
            for worker in workers:
                worker.check_running()
            return all(owns_inputs_now(worker, settings.topics.usage) and (
                not standby_replicas
                or b"Starting standby partitions..." in worker.log_path.read_bytes())
                for worker in workers)

        wait_until(both_own_partitions_and_keep_copies, 300, interval=0.5,
                   what="both workers owning input partitions (with standby copies if on)")
        killed_at = survivor.log_path.stat().st_size
        victim.stop(signal.SIGKILL)
        survivor.wait_drained(timeout=900)
    finally:
        for worker in workers:
            worker.stop()
    takeover = survivor.log_path.read_bytes()[killed_at:]
    assert b"Crashed reason=" not in survivor.log_path.read_bytes()
    read = records_to_recover(takeover, changelog_topic(app_id))
    rebuild = sum(mark + 1 for mark in recovery_tables(takeover, changelog_topic(app_id))[0]
                  .values())
    print(f"{app_id}: after the kill the survivor read {read:,} changelog records of the "
          f"accounts table, against {rebuild:,} for a rebuild of the whole table")
    assert_same_result(settings, app_id, expected, *workers)
