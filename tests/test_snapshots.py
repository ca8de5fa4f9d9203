"""The snapshots document without a broker: ``billing replay --snapshots-out``, the snapshots read
back from status records (as ``billing snapshots`` reads them) and a document read back all give
the same bytes; ``read_snapshots`` over an in-memory topic; the commands' one-line errors; the
demo's reconcile line. The real-broker check is ``tests/integration/test_snapshots_command.py``."""

from __future__ import annotations

import contextlib
import functools
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from kafka.errors import KafkaTimeoutError

import commands.snapshots
import sinks.cli
from billing.account_status import status_record
from billing.events import SNAPSHOT_FIELDS, InvalidEvent, dumps
from billing.ledger import Ledger
from billing.replay import Replay, parse_line
from billing.snapshots import dump_snapshots, snapshot_of_status
from commands.cli import main
from commands.demo import DemoResult, reconcile_command_line
from devkit.workload import generate
from runtime.account_status import StatusTopicError, loaded_statuses, read_snapshots
from runtime.rules_files import load_config, load_pricebook
from tests.test_account_status_client import CODEC, SETTINGS, FakeLog, record

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A generated input file and the replay's final snapshots of it (canonical form)."""
    path = tmp_path_factory.mktemp("snapshots") / "input.jsonl"
    path.write_bytes(b"".join(dumps(event) + b"\n" for event in generate(40, 1500, seed=11)))
    replay = Replay(Ledger(load_config(None), load_pricebook(None)))
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        event = parse_line(line, number)
        if isinstance(event, dict):
            with contextlib.suppress(InvalidEvent):
                replay.apply(event)
    return path, replay.snapshots()


def replay_file(input_path: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "replay-snapshots.json"
    result = CliRunner().invoke(main, ["replay", str(input_path), "--events-out",
                                       str(tmp_path / "events.jsonl"), "--snapshots-out",
                                       str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def test_the_document_is_the_replay_format_and_reads_back_to_the_same_bytes(
        workload: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    input_path, snapshots = workload
    document = dump_snapshots(snapshots)
    assert document == replay_file(input_path, tmp_path)
    parsed = orjson.loads(document)
    assert list(parsed) == sorted(snapshots) and len(parsed) == 40
    assert dump_snapshots(parsed) == document  # money as strings in, same bytes out
    for snapshot in parsed.values():
        assert list(snapshot) == list(SNAPSHOT_FIELDS)
        assert all(len(snapshot[name].split(".")[1]) == 6 for name in
                   ("credit_balance", "outstanding_balance", "lifetime_spend"))


def test_snapshots_from_status_records_give_the_replay_bytes(
        workload: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """What ``billing snapshots`` does to each record of the status topic: decode it, keep the
    snapshot fields; the document is then byte for byte the replay's."""
    input_path, snapshots = workload
    from_status = {}
    for number, (account_id, snapshot) in enumerate(reversed(list(snapshots.items()))):
        value = CODEC.encode("account_status", status_record(snapshot, T0, 1000 + number))
        decoded = CODEC.decode("account_status", value)
        assert {"may_send", "blocked_reasons", "updated_at", "version"} <= set(decoded)
        from_status[account_id] = snapshot_of_status(decoded)
    assert dump_snapshots(from_status) == replay_file(input_path, tmp_path)


def test_money_is_written_with_six_digits_and_finer_money_is_refused() -> None:
    snapshot = record("A", 1)
    shortened = {**snapshot_of_status(snapshot), "credit_balance": Decimal("1.5"),
                 "monthly_budget": "20", "auto_top_up": {"enabled": True,
                                                         "minimum_balance": Decimal(2),
                                                         "top_up_amount": "10.25"}}
    written = orjson.loads(dump_snapshots({"A": shortened}))["A"]
    assert written["credit_balance"] == "1.500000"
    assert written["monthly_budget"] == "20.000000"
    assert written["auto_top_up"] == {"enabled": True, "minimum_balance": "2.000000",
                                      "top_up_amount": "10.250000"}
    assert "may_send" not in written and "version" not in written
    with pytest.raises(InvalidEvent, match="more than 6 fractional digits"):
        dump_snapshots({"A": {**shortened, "lifetime_spend": Decimal("0.0000001")}})


def test_read_snapshots_keeps_the_highest_version_and_only_the_snapshot_fields() -> None:
    log = FakeLog()
    log.append(record("B", 5, balance="2.000000"))
    log.append(record("A", 3, balance="9.000000"))
    log.append(record("B", 7, balance="1.000000"))
    log.append(record("B", 6, balance="3.000000"))  # older than what is held: ignored
    log.append(record("C", 2))
    log.append(None, key="C")  # a tombstone forgets C
    seen: list[Any] = []
    snapshots = read_snapshots(SETTINGS, consumer_factory=log.consumer, on_progress=seen.append)
    assert list(snapshots) == ["A", "B"]
    assert snapshots["B"] == snapshot_of_status(record("B", 7, balance="1.000000"))
    assert list(snapshots["A"]) == list(SNAPSHOT_FIELDS)
    assert seen and seen[-1].ready
    assert all(consumer.closed for consumer in log.consumers)


def test_read_snapshots_of_an_empty_topic_is_empty() -> None:
    assert read_snapshots(SETTINGS, consumer_factory=FakeLog().consumer) == {}


def test_read_snapshots_of_a_missing_topic_raises() -> None:
    with pytest.raises(StatusTopicError, match="does not exist"):
        read_snapshots(SETTINGS, consumer_factory=FakeLog(topic="another").consumer)


def test_unreachable_kafka_is_a_status_topic_error() -> None:
    def unreachable(**_config: Any) -> Any:  # what kafka-python raises after ~30 s
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")

    with pytest.raises(StatusTopicError, match="unreachable"):
        read_snapshots(SETTINGS, consumer_factory=unreachable)


def test_a_read_that_stops_moving_gives_up() -> None:
    log = FakeLog(partitions=1)
    log.append(record("A", 1))

    def stuck(**config: Any) -> Any:
        consumer = log.consumer(**config)
        consumer.poll = lambda timeout_ms, max_records: {}  # type: ignore[method-assign]
        return consumer

    with pytest.raises(StatusTopicError, match="made no progress for 1s"):
        read_snapshots(SETTINGS, consumer_factory=stuck, stall_timeout=1.0)


def on_fake_topic(monkeypatch: pytest.MonkeyPatch, log: FakeLog) -> None:
    """``billing snapshots`` reading ``log`` instead of Kafka (the rest of its code path real)."""
    monkeypatch.setattr(commands.snapshots, "loaded_statuses",
                        functools.partial(loaded_statuses, consumer_factory=log.consumer))


def test_the_command_writes_the_document_to_stdout_or_a_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = FakeLog()
    for account, version in (("B", 2), ("A", 1), ("C", 4)):
        log.append(record(account, version))
    expected = dump_snapshots({account: snapshot_of_status(record(account, version))
                               for account, version in (("B", 2), ("A", 1), ("C", 4))})
    on_fake_topic(monkeypatch, log)
    result = CliRunner().invoke(main, ["snapshots"], env={})
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == expected
    assert list(orjson.loads(result.stdout_bytes)) == ["A", "B", "C"]
    out = tmp_path / "live.json"
    out.write_bytes(b"old")
    result = CliRunner().invoke(main, ["snapshots", "--out", str(out), "--progress"], env={})
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == expected
    assert result.stdout_bytes == b""
    assert result.stderr.splitlines()[-1] == f"3 account snapshots written to {out}"
    assert "account statuses: ready, 3 records read, 3 accounts" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["live.json"]


def test_the_command_writes_an_empty_topic_as_an_empty_object(
        monkeypatch: pytest.MonkeyPatch) -> None:
    on_fake_topic(monkeypatch, FakeLog())
    result = CliRunner().invoke(main, ["snapshots"], env={})
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"{}" == dump_snapshots({})


def test_the_command_ends_with_one_line_when_the_topic_does_not_exist(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    on_fake_topic(monkeypatch, FakeLog(topic="another"))
    out = tmp_path / "live.json"
    result = CliRunner().invoke(main, ["snapshots", "--out", str(out)], env={})
    assert result.exit_code == 1
    assert result.stdout_bytes == b"" and not out.exists()
    assert result.stderr.startswith(f"Error: topic {SETTINGS.topics.account_status} does not "
                                    "exist on ")
    assert result.stderr.count("\n") == 1


def failing(message: str) -> Any:
    def read(settings: Any, **_: Any) -> Any:
        raise StatusTopicError(message)
    return read


def test_reconcile_without_a_file_reads_the_status_topic(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setattr(sinks.cli, "read_snapshots", failing("Kafka at h:9092 is unreachable"))
    result = CliRunner().invoke(main, ["reconcile"],
                                env={"BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"})
    assert result.exit_code == 1
    assert result.output == "Error: Kafka at h:9092 is unreachable\n"


def test_reconcile_with_a_file_does_not_read_the_topic(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(sinks.cli, "read_snapshots", failing("must not be called"))
    snapshots = tmp_path / "snapshots.json"
    snapshots.write_bytes(dump_snapshots({}))
    result = CliRunner().invoke(main, ["reconcile", "--snapshots", str(snapshots)],
                                env={"BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"})
    assert result.exit_code == 0, result.output
    assert result.output.endswith("reconciled 0 accounts, 0 invoices: OK\n")


def test_the_demo_prints_the_reconcile_command_of_its_run(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    run_dir = tmp_path / "demo dir" / "run-1"
    result = DemoResult(report=None, report_path=run_dir / "report.html",  # type: ignore[arg-type]
                        reconciliation=None,  # type: ignore[arg-type]
                        snapshots_path=run_dir / "snapshots.json")
    monkeypatch.setattr("sys.argv", [os.path.join(".venv", "bin", "billing"), "demo"])
    monkeypatch.setattr("shutil.which", lambda name: None)
    line = reconcile_command_line(result)
    assert line == (f"BILLING_CLICKHOUSE_URL='chdb://{run_dir}/chdb' .venv/bin/billing reconcile "
                    f"--snapshots '{run_dir}/snapshots.json'")


def test_dumps_of_one_snapshot_is_what_the_document_holds() -> None:
    snapshot = snapshot_of_status(record("A", 1))
    assert orjson.loads(dump_snapshots({"A": snapshot}))["A"] == orjson.loads(dumps(snapshot))
