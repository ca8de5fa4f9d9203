"""``billing export`` on the real broker: what it writes replays like the events that were
published, and ``billing produce --file`` takes it back (exported again: the same file)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from billing.events import dumps, normalize_input, parse_time
from commands.cli import main
from devkit.workload import generate
from runtime.produce import EventProducer
from runtime.settings import Settings
from tests.integration.pipeline import in_merge_order, isolated, publish
from tests.integration.test_sink_kafka import produce

pytestmark = pytest.mark.integration

# After the workload's last event (6 h into February), so it is last in either order.
BROADCAST_CLOSE = {"type": "close_period", "event_id": "export-test-close-2026-01",
                   "account_id": "", "timestamp": "2026-02-01T07:00:00Z", "period": "2026-01"}


def billing(settings: Settings, *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=settings.to_env())
    assert result.exit_code == 0, result.output
    return result


def replay(settings: Settings, events_file: Path) -> tuple[bytes, list[bytes]]:
    """The snapshots file and the output lines (sorted) of ``billing replay``."""
    snapshots, outputs = events_file.with_suffix(".snapshots"), events_file.with_suffix(".out")
    billing(settings, "replay", str(events_file), "--snapshots-out", str(snapshots),
            "--events-out", str(outputs), "--no-progress")
    return snapshots.read_bytes(), sorted(outputs.read_bytes().splitlines())


def write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(dumps(event) + b"\n" for event in events))
    return path


def test_export_replays_like_the_published_events(stack: Settings, tmp_path: Path) -> None:
    settings, _ = isolated(stack, "export")
    events = in_merge_order([normalize_input(event) for event in generate(
        accounts=40, events=2_000, seed=23)])
    publish(settings, events)
    with EventProducer(settings) as producer:
        producer.send(BROADCAST_CLOSE)  # one copy per partition of the control topic
    produce(settings, settings.topics.usage, [("acct-x", b"\x00not avro")])
    produce(settings, settings.topics.payments, [("acct-x", b'{"type": "credits_purchased"}')])
    original = write_events(tmp_path / "original.jsonl",
                            [*events, normalize_input(BROADCAST_CLOSE)])

    exported = tmp_path / "exported.jsonl"
    result = billing(settings, "export", "--out", str(exported), "--no-progress")
    assert f"exported {len(events) + 1} events" in result.output
    assert f"{settings.partitions - 1} more copies of account-less close_period" in result.output
    assert "2 undecodable message(s) skipped" in result.output
    assert "looks like JSON" in result.output
    lines = [orjson.loads(line) for line in exported.read_bytes().splitlines()]
    appended = {parse_time(line.pop("ingested_at")) for line in lines}  # the broker's clock
    assert all(abs(moment - datetime.now(UTC)) < timedelta(minutes=10) for moment in appended)
    assert sorted(map(orjson.dumps, lines)) == sorted(original.read_bytes().splitlines())
    assert replay(settings, exported) == replay(settings, original)

    # Re-published into fresh topics by `billing produce --file` and exported again.
    copy, _ = isolated(stack, "export-copy")
    produced = billing(copy, "produce", "--file", str(exported))
    assert f"{len(events) + 1} event(s) delivered" in produced.output
    again = tmp_path / "again.jsonl"
    billing(copy, "export", "--out", str(again), "--no-progress")
    assert without_ingested_at(again) == without_ingested_at(exported)  # appended anew


def without_ingested_at(path: Path) -> list[dict[str, Any]]:
    return [{key: value for key, value in orjson.loads(line).items() if key != "ingested_at"}
            for line in path.read_bytes().splitlines()]
