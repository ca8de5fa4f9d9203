"""``billing export`` without Kafka: topic choice, the merge of spooled streams, the summary.
The export from real topics is in ``tests/integration/test_export.py``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
import pytest

from commands.export import ExportStats, Skipped, _merged, parse_kinds, summary


def test_topics_are_input_kinds_in_the_usual_order() -> None:
    assert parse_kinds(None, None, "control, usage,usage") == ("usage", "control")
    for bad in ("usage,account_state", "", " , "):
        with pytest.raises(click.BadParameter, match="choose among usage,payments,accounts"):
            parse_kinds(None, None, bad)


def _stream(path: Path, *keyed: tuple[int, int, str]) -> Path:
    path.write_bytes(b"".join(b"%015d%d%s\n" % (millis, rank, text.encode())
                              for millis, rank, text in keyed))
    return path


def test_merge_releases_the_earliest_head_and_keeps_each_stream_in_order(tmp_path: Path) -> None:
    usage = _stream(tmp_path / "usage-0", (1000, 2, "u1"), (500, 2, "u-late"), (3000, 2, "u3"))
    payments = _stream(tmp_path / "payments-0", (1000, 1, "p1"), (2000, 1, "p2"))
    # p1 before u1 (same time, payments rank first); the late usage waits behind u1 in its
    # partition, as in the worker, instead of jumping ahead of p1.
    assert list(_merged([payments, usage])) == [b"p1\n", b"u1\n", b"u-late\n", b"p2\n", b"u3\n"]


def test_summary_counts_and_shows_the_first_skipped_messages() -> None:
    stats = ExportStats(events=Counter(usage=7, control=1), broadcast_copies=3,
                        skipped=[Skipped("billing.usage", 0, offset, "not Avro: truncated")
                                 for offset in range(7)])
    text = summary(stats, Path("inputs.jsonl"))
    assert text.splitlines()[0] == "exported 8 events (usage 7, control 1) to inputs.jsonl"
    assert "3 more copies of account-less close_period" in text
    assert "7 undecodable message(s) skipped" in text
    assert "  billing.usage[0]@4: not Avro: truncated" in text
    assert "billing.usage[0]@5" not in text and text.endswith("... and 2 more")
