"""``billing export``: the input topics as a JSON-lines file for ``billing replay`` and
``billing produce --file``.

The file is the billing history as the worker applied it, so a replay of it is the oracle of what
the pipeline computed, and re-publishing it fills a new app id (another partition count, a lost
changelog). The order is therefore the worker's event-time merge (:mod:`billing.merge`): of the
heads of every topic-partition, the earliest (event time, topic rank) first. Each partition keeps
its own order, so an event that arrived late in its partition stays late, as the worker saw it.

Each line carries ``ingested_at``, the record's broker timestamp (the input topics use
``LogAppendTime``), so that replay applies the acceptance window against the same clock as the
worker did; ``billing produce --file`` does not send it (the broker stamps the new append time).

Messages the worker dead-letters because they do not decode are skipped and counted; everything
that decodes is kept, including what the ledger will reject (replay rejects it the same way). A
``usage_batch`` message becomes one usage line per record, each at its own event time and with the
message's ``ingested_at`` (as the worker merges them), so replay knows no batch; a record the
worker dead-letters alone is skipped and counted alone. The
copies of an account-less ``close_period``, one per partition of the control topic (a broadcast,
also the worker's own watermark closes), become one line: ``billing produce --file`` broadcasts it
again.

The history can be bigger than memory: each topic-partition is first written to a temporary file
next to the output (one open file per topic-partition during the merge), then merged from disk.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click
from kafka.errors import KafkaError
from tqdm import tqdm

from billing.events import InvalidEvent, dumps
from billing.ledger import from_millis, to_millis
from billing.merge import KIND_RANK
from runtime.codecs import codec_for
from runtime.settings import Settings, load_settings
from runtime.topic_reader import read_topic
from schemas.codec import INPUT_KINDS, Codec
from schemas.registry import RegistryError

# Each spooled line starts with its merge key: event time in ms (15 digits) and the topic rank, so
# the merge compares bytes and never parses JSON again.
KEY_WIDTH = 16
SHOWN_SKIPS = 5


@dataclass
class Skipped:
    """A message that did not decode: where it is and why (the dead-letter reason)."""

    topic: str
    partition: int
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}: {self.reason}"


@dataclass
class ExportStats:
    """What an export read and wrote, for the summary line and the tests."""

    events: Counter[str] = field(default_factory=Counter)  # topic kind -> events written
    skipped: list[Skipped] = field(default_factory=list)
    broadcast_copies: int = 0  # copies of account-less close_period beyond the first

    @property
    def written(self) -> int:
        return sum(self.events.values())


def parse_kinds(_ctx: click.Context | None, _param: click.Parameter | None,
                value: str) -> tuple[str, ...]:
    """``usage,payments`` -> the input topic kinds, checked and in the usual order."""
    kinds = {kind.strip() for kind in value.split(",") if kind.strip()}
    unknown = sorted(kinds - set(INPUT_KINDS))
    if unknown or not kinds:
        raise click.BadParameter(f"{', '.join(unknown) or value!r}: choose among "
                                 f"{','.join(INPUT_KINDS)}")
    return tuple(kind for kind in INPUT_KINDS if kind in kinds)


def _spool(settings: Settings, codec: Codec, kinds: tuple[str, ...], directory: Path,
           stats: ExportStats, progress: bool) -> list[Path]:
    """Each topic-partition's events, in offset order, to its own file of keyed lines; returns
    the files in (topic rank, partition) order, the tie-break of the merge."""
    files: dict[tuple[int, int], IO[bytes]] = {}
    broadcasts: set[str] = set()
    with ExitStack() as opened:
        for kind in kinds:
            topic = getattr(settings.topics, kind)
            for record in tqdm(read_topic(settings, topic), desc=topic, unit="msg",
                               disable=not progress):
                try:
                    decoded = codec.decode_inputs(kind, record.value or b"")
                except InvalidEvent as error:
                    decoded = [error]
                for event in decoded:
                    if isinstance(event, InvalidEvent):
                        stats.skipped.append(Skipped(topic, record.partition, record.offset,
                                                     str(event)))
                        continue
                    if not event["account_id"]:
                        if event["event_id"] in broadcasts:
                            stats.broadcast_copies += 1
                            continue
                        broadcasts.add(event["event_id"])
                    if record.timestamp is not None and record.timestamp >= 0:
                        # When the broker appended it: the acceptance window's clock on replay.
                        event["ingested_at"] = from_millis(record.timestamp)
                    stream = (KIND_RANK[kind], record.partition)
                    if stream not in files:
                        path = directory / f"{kind}-{record.partition}"
                        files[stream] = opened.enter_context(open(path, "wb"))
                    key = b"%015d%d" % (to_millis(event["timestamp"]), KIND_RANK[kind])
                    files[stream].write(key + dumps(event) + b"\n")
                    stats.events[kind] += 1
    return [Path(handle.name) for _, handle in sorted(files.items())]


def _merged(paths: list[Path]) -> Iterator[bytes]:
    """The spooled lines of every stream, earliest head first, without their keys."""
    with ExitStack() as opened:
        handles = [opened.enter_context(open(path, "rb")) for path in paths]
        for line in heapq.merge(*handles, key=lambda line: line[:KEY_WIDTH]):
            yield line[KEY_WIDTH:]


def export_inputs(settings: Settings, out: Path, kinds: tuple[str, ...] = INPUT_KINDS,
                  progress: bool = False) -> ExportStats:
    """Write the events of the ``kinds`` input topics to ``out`` in the worker's merge order.

    Written to ``out.partial`` and renamed at the end, so an interrupted export never looks
    like a complete history. Raises ``KafkaError`` and ``RegistryError`` (nothing to skip:
    the export would be incomplete).
    """
    stats = ExportStats()
    codec = codec_for(settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as spool:
        streams = _spool(settings, codec, kinds, Path(spool), stats, progress)
        with open(partial, "wb") as sink:
            sink.writelines(_merged(streams))
    partial.replace(out)
    return stats


def summary(stats: ExportStats, out: Path) -> str:
    """The lines ``billing export`` prints on stderr when done."""
    counts = ", ".join(f"{kind} {stats.events[kind]}" for kind in INPUT_KINDS
                       if kind in stats.events)
    lines = [f"exported {stats.written} events ({counts or 'none'}) to {out}"]
    if stats.broadcast_copies:
        lines.append(f"{stats.broadcast_copies} more copies of account-less close_period "
                     "events (one per control partition) written once")
    if stats.skipped:
        lines.append(f"{len(stats.skipped)} undecodable message(s) skipped (the worker "
                     "dead-letters them):")
        lines += [f"  {skipped}" for skipped in stats.skipped[:SHOWN_SKIPS]]
        if len(stats.skipped) > SHOWN_SKIPS:
            lines.append(f"  ... and {len(stats.skipped) - SHOWN_SKIPS} more")
    return "\n".join(lines)


@click.command("export")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The JSON-lines file to write (replaced when complete).")
@click.option("--topics", "kinds", default=",".join(INPUT_KINDS), show_default=True,
              callback=parse_kinds, help="Input topics to export, by kind, comma-separated.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars (default: on when stderr is a terminal).")
def export_command(out: Path, kinds: tuple[str, ...], progress: bool | None) -> None:
    """Export the input topics as JSON lines in the worker's order, for `billing replay FILE`
    and `billing produce --file FILE`. Undecodable messages are skipped and counted."""
    settings = load_settings()
    show_progress = os.isatty(2) if progress is None else progress
    try:
        stats = export_inputs(settings, out, kinds, show_progress)
    except KafkaError as error:
        raise click.ClickException(f"Kafka at {settings.kafka_bootstrap}: {error}") from None
    except RegistryError as error:
        raise click.ClickException(str(error)) from None
    click.echo(summary(stats, out), err=True)
