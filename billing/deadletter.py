"""Dead letters: what the pipeline could not process, kept byte for byte so it can be replayed.

A worker that rejects an input (malformed Avro, a negative quantity, an unknown product, an account
never opened) publishes :func:`make_dead_letter` to the dead-letter topic, keyed by the original
key, and goes on. ``billing deadletter list`` shows them; once the cause is fixed (a product added
to the price book, an ``account_opened`` sent) ``billing deadletter redrive`` publishes the original
bytes back to the original topic and partition, so they are processed as if they had just arrived.
Redriving an event that meanwhile succeeded is harmless: the pipeline drops it as a duplicate
``event_id`` (within the 7-day horizon).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
from kafka import KafkaProducer

from billing.codec import Codec, CodecError, default_codec
from billing.kafka_security import kafka_python_security
from billing.produce import PRODUCER_CONFIG
from billing.settings import Settings, load_settings
from billing.topic_reader import read_topic


def make_dead_letter(
    reason: str,
    field: str | None,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    worker: str,
    *,
    failed_at: datetime | None = None,
    codec: Codec | None = None,
) -> bytes:
    """The dead-letter message value for a rejected input (``failed_at`` defaults to now)."""
    letter = {
        "key": key,
        "value": value,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "field": field,
        "failed_at": failed_at or datetime.now(UTC),
        "worker": worker,
    }
    return (codec or default_codec()).encode("dead_letter", letter)


@dataclass(frozen=True)
class Entry:
    """One message of the dead-letter topic: where it is, and the dead letter or why it is not."""

    partition: int
    offset: int
    letter: dict[str, Any]  # empty when ``error`` says the message is not a readable dead letter
    error: str | None = None

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def source(self) -> str:
        if self.error:
            return "-"
        return f"{self.letter['topic']}[{self.letter['partition']}]@{self.letter['offset']}"


def read_dead_letters(settings: Settings, codec: Codec) -> Iterator[Entry]:
    """Every message of the dead-letter topic, from the beginning to the end as of now."""
    for record in read_topic(settings, settings.topics.dead_letter):
        yield read_entry(codec, record.partition, record.offset, record.value)


def read_entry(codec: Codec, partition: int, offset: int, value: bytes | None) -> Entry:
    """Decode one dead-letter message; an unreadable one becomes an entry with the error."""
    try:
        return Entry(partition, offset, codec.decode("dead_letter", value or b""))
    except CodecError as error:
        return Entry(partition, offset, {}, error.reason)


def select(
    entries: Iterable[Entry],
    *,
    offsets: Iterable[str] = (),
    reason_contains: str | None = None,
) -> list[Entry]:
    """The readable dead letters matching every filter given (all of them when none is).

    An offset is ``PARTITION:OFFSET`` as ``list`` prints it, or a bare offset, which matches in
    every partition. The reason filter ignores case.
    """
    wanted = set(offsets)
    needle = reason_contains.lower() if reason_contains else None
    return [
        entry for entry in entries
        if entry.error is None
        and (not wanted or entry.position in wanted or str(entry.offset) in wanted)
        and (needle is None or needle in entry.letter["reason"].lower())
    ]


@click.group("deadletter")
def deadletter() -> None:
    """Inspect and redrive the inputs the pipeline rejected (the dead-letter topic)."""


@deadletter.command("list")
@click.option("--reason-contains", help="Only dead letters whose reason contains TEXT.")
def list_command(reason_contains: str | None) -> None:
    """Print dead letters: where each is, where it came from, and why it was rejected."""
    settings = load_settings()
    entries = list(read_dead_letters(settings, Codec.from_settings(settings)))
    shown = entries if reason_contains is None else select(entries, reason_contains=reason_contains)
    click.echo(f"{'dead letter':<12} {'failed at (UTC)':<20} {'source':<32} reason")
    for entry in shown:
        if entry.error:
            click.echo(f"{entry.position:<12} {'-':<20} {'-':<32} (unreadable: {entry.error})")
            continue
        letter = entry.letter
        field = f" [{letter['field']}]" if letter["field"] else ""
        click.echo(f"{entry.position:<12} {letter['failed_at']:%Y-%m-%d %H:%M:%S}  "
                   f"{entry.source:<32} {letter['reason']}{field}")
    click.echo(f"{len(shown)} of {len(entries)} dead letter(s)", err=True)


@deadletter.command("redrive")
@click.option("--all", "everything", is_flag=True, help="Redrive every dead letter.")
@click.option("--offset", "offsets", multiple=True, metavar="[PARTITION:]OFFSET",
              help="A dead letter's position as `list` shows it; repeatable.")
@click.option("--reason-contains", help="Dead letters whose reason contains TEXT.")
@click.option("--dry-run", is_flag=True, help="Show what would be redriven, send nothing.")
def redrive_command(
    everything: bool, offsets: tuple[str, ...], reason_contains: str | None, dry_run: bool
) -> None:
    """Publish the original bytes of dead letters back to their topic and partition.

    Run it after fixing the cause. A dead letter that fails again is dead-lettered again.
    """
    if everything == bool(offsets or reason_contains):
        raise click.UsageError("give --all, or --offset and/or --reason-contains")
    settings = load_settings()
    chosen = select(read_dead_letters(settings, Codec.from_settings(settings)),
                    offsets=offsets, reason_contains=reason_contains)
    for entry in chosen:
        verb = "would redrive" if dry_run else "redrive"
        click.echo(f"{verb} {entry.position} -> {entry.source}: {entry.letter['reason']}")
    if not chosen:
        raise click.ClickException("no dead letter matches")
    if dry_run:
        return
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                             **kafka_python_security(settings), **PRODUCER_CONFIG)
    futures = [
        producer.send(entry.letter["topic"], key=entry.letter["key"],
                      value=entry.letter["value"], partition=entry.letter["partition"])
        for entry in chosen
    ]
    producer.flush()
    producer.close()
    failed = [future.exception for future in futures if future.failed()]
    click.echo(f"{len(chosen) - len(failed)} dead letter(s) redriven, {len(failed)} failed"
               + (f": {failed[0]}" if failed else ""), err=True)
    if failed:
        raise SystemExit(1)
