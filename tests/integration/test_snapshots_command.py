"""`billing snapshots` and `billing reconcile` (no `--snapshots`) on the real broker and the test
stack's clickhouse-server: after the worker billed a generated workload, the live snapshots read
from the status topic are byte for byte what `billing replay --snapshots-out` writes for the same
events, and reconciling the sink-filled database against the live ledger exits 0."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from billing.events import normalize_input
from billing.snapshots import dump_snapshots
from commands.cli import main
from devkit.workload import generate
from runtime.settings import Settings
from tests.integration.pipeline import (
    WorkerProcess,
    in_merge_order,
    isolated,
    publish,
    replay_of,
    sink_into_clickhouse,
)

pytestmark = pytest.mark.integration

ACCOUNTS, EVENTS = 150, 3_000


def test_live_snapshots_equal_the_replay_and_reconcile_reads_them(stack: Settings,
                                                                  tmp_path: Path) -> None:
    events = in_merge_order([normalize_input(event) for event in generate(
        accounts=ACCOUNTS, events=EVENTS, seed=31, start=datetime(2026, 1, 1, tzinfo=UTC))])
    expected, _ = replay_of(events)
    assert len(expected) == ACCOUNTS
    settings, app_id = isolated(stack, "snapshots-cmd")
    publish(settings, events)
    WorkerProcess(settings, app_id, tmp_path / "worker.log").run_to_end(timeout=600)

    out = tmp_path / "live.json"
    result = CliRunner().invoke(main, ["snapshots", "--out", str(out)], env=settings.to_env())
    assert result.exit_code == 0, result.output
    live = out.read_bytes()
    if live != dump_snapshots(expected):
        got = orjson.loads(live)
        want = orjson.loads(dump_snapshots(expected))
        differing = sorted(key for key in want.keys() | got.keys()
                           if want.get(key) != got.get(key))
        pytest.fail(f"{len(differing)} snapshots differ, e.g. {differing[0]}: "
                    f"live {got.get(differing[0])} replay {want.get(differing[0])}")
    stdout = CliRunner().invoke(main, ["snapshots"], env=settings.to_env())
    assert stdout.exit_code == 0 and stdout.stdout_bytes == live

    with_clickhouse = sink_into_clickhouse(settings, app_id)
    result = CliRunner().invoke(main, ["reconcile"], env=with_clickhouse.to_env())
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith(f"reconciled {ACCOUNTS} accounts, ")
    assert result.stdout.rstrip().endswith(": OK")


def test_a_missing_status_topic_is_one_line_and_exit_1(stack: Settings) -> None:
    env = {**stack.to_env(), "BILLING_TOPIC_ACCOUNT_STATUS": "no-such-status-topic"}
    for command in (["snapshots"], ["reconcile"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert result.stderr.startswith("Error: topic no-such-status-topic does not exist on ")
        assert result.stderr.count("\n") == 1
