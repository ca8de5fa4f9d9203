"""``billing deadletter list | redrive``: inspect what the pipeline could not process, and send it
again once the cause is fixed.

A worker that rejects an input publishes a dead letter (``runtime/dead_letters.py``: the original
bytes, or past the size limit a prefix with their size and sha256, and the source topic,
partition and offset). ``billing deadletter list`` shows them; once the cause is fixed (a product
added to the price book, an ``account_opened`` sent) ``billing deadletter redrive`` publishes the
original bytes back to the original topic and partition, fetching a truncated letter's original
from its source offset while Kafka retains it, so they are processed as if they had just arrived.
Redriving an event that meanwhile succeeded is harmless: the pipeline drops it as a copy.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import click
import fastavro
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from runtime.codecs import codec_for
from runtime.dead_letters import PREFIX_BYTES, sha256_hex
from runtime.kafka_security import kafka_python_security
from runtime.produce import PRODUCER_CONFIG
from runtime.settings import Settings, load_settings
from runtime.topic_reader import read_topic
from schemas import load_schema
from schemas.codec import Codec, CodecError, topic_schema


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

    @property
    def truncated(self) -> bool:
        """The letter keeps only a prefix of the original key or value (redrive fetches it)."""
        return bool(self.letter.get("key_truncated") or self.letter.get("value_truncated"))

    @property
    def size_note(self) -> str:
        """What was cut, for ``list``: `` {value 1,048,576 bytes, sha256 3f2a...: kept the first
        1,024}``; empty when the letter holds the whole message."""
        notes = [f"{name} {self.letter[f'{name}_size']:,} bytes, sha256 "
                 f"{self.letter[f'{name}_sha256'][:16]}...: kept the first "
                 f"{len(self.letter[name]):,}"
                 for name in ("key", "value") if self.letter.get(f"{name}_truncated")]
        return f" {{{'; '.join(notes)}}}" if notes else ""


def read_dead_letters(settings: Settings, codec: Codec) -> Iterator[Entry]:
    """Every message of the dead-letter topic, from the beginning to the end as of now."""
    for record in read_topic(settings, settings.topics.dead_letter):
        yield read_entry(codec, record.partition, record.offset, record.value)


def read_entry(codec: Codec, partition: int, offset: int, value: bytes | None) -> Entry:
    """Decode one dead-letter message; an unreadable one becomes an entry with the error.

    Without a registry a message carries no schema id, so one written before the last schema
    change (``schemas/previous/dead_letter.avsc``) is read with that schema when the current one
    does not fit it: dead letters already in the topic stay readable across the upgrade.
    """
    data = value or b""
    try:
        return Entry(partition, offset, codec.decode("dead_letter", data))
    except CodecError as error:
        old = _decode_previous(data) if codec.registry is None else None
        if old is None:
            return Entry(partition, offset, {}, error.reason)
        return Entry(partition, offset, old)


@cache
def _previous_writer() -> Any:
    return fastavro.parse_schema(load_schema("dead_letter", previous=True))


def _decode_previous(data: bytes) -> dict[str, Any] | None:
    """A dead letter written with the previous released schema, read as the current one (its new
    fields take their defaults); None when the bytes are not that either."""
    body = io.BytesIO(data)
    try:
        letter = fastavro.schemaless_reader(body, _previous_writer(),
                                            topic_schema("dead_letter").parsed)
    except (EOFError, ValueError, TypeError, IndexError, KeyError, OverflowError,
            UnicodeDecodeError, fastavro.read.SchemaResolutionError):
        return None  # not an old dead letter either
    return letter if data and body.tell() == len(data) else None


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


class NotRetrieved(Exception):
    """The whole original message of a truncated dead letter cannot be had; says why."""


FETCH_TIMEOUT = 30.0  # seconds to wait for one original message
REDRIVE_MAX_REQUEST_BYTES = 16 * 1024 * 1024  # the broker, not this client, decides what fits


def fetch_original(consumer: KafkaConsumer, letter: dict[str, Any],
                   timeout: float = FETCH_TIMEOUT) -> ConsumerRecord:
    """The original message of a truncated dead letter, read from its topic, partition and
    offset with ``consumer`` (no group: assigned and sought), checked against the sizes and
    SHA-256 the letter recorded.

    Raises :class:`NotRetrieved` saying why it cannot: the offset is below the partition's log
    start (retention or deleted records took it), past its end, or the message there is not the
    one the letter describes (the topic was deleted and recreated).
    """
    topic, partition, offset = letter["topic"], letter["partition"], letter["offset"]
    where = f"{topic}[{partition}]@{offset}"
    if partition not in (consumer.partitions_for_topic(topic) or ()):
        raise NotRetrieved(f"{topic}[{partition}] does not exist (any more)")
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])

    def gone() -> NotRetrieved | None:
        start = consumer.beginning_offsets([tp])[tp]
        if offset >= start:
            return None
        return NotRetrieved(
            f"no longer retained: {topic}[{partition}] now starts at offset {start:,} "
            f"(retention or deleted records), so the original message at offset {offset:,} is "
            f"gone; the dead letter holds only its first {PREFIX_BYTES:,} bytes. Have the "
            "producer send it again")

    missing = gone()
    if missing:
        raise missing
    end = consumer.end_offsets([tp])[tp]
    if offset >= end:
        raise NotRetrieved(f"{topic}[{partition}] ends at offset {end:,}, before {offset:,}: the "
                           "topic was probably deleted and recreated")
    consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=1000, max_records=1).get(tp, []):
            if record.offset == offset:
                _check_identity(letter, record, where)
                return record
            missing = gone()  # the log start passed the offset while we looked for it
            if missing:
                raise missing
            raise NotRetrieved(f"{where} holds no record (the next one is at {record.offset:,}): "
                               "compacted away, or part of an aborted transaction")
    raise NotRetrieved(f"{where} could not be read within {timeout:.0f} s")


def _check_identity(letter: dict[str, Any], record: ConsumerRecord, where: str) -> None:
    """Refuse a fetched message whose key or value is not the one the dead letter describes."""
    for name, data in (("key", record.key), ("value", record.value)):
        size, digest = letter.get(f"{name}_size"), letter.get(f"{name}_sha256")
        if digest is None and size is None:
            if data is not None:
                raise NotRetrieved(f"{where} has a {name} ({len(data):,} bytes) but the dead "
                                   f"letter's original had none: a different message; the "
                                   "topic was probably deleted and recreated")
            continue
        got_size, got = (None, None) if data is None else (len(data), sha256_hex(data))
        if got != digest or got_size != size:
            shown = "none" if got is None else f"{got_size:,} bytes, sha256 {got[:16]}..."
            raise NotRetrieved(
                f"{where} holds a different message: its {name} is {shown}, the dead letter's "
                f"was {size or 0:,} bytes, sha256 {(digest or '')[:16]}...; the topic was "
                "probably deleted and recreated")


def fetch_originals(settings: Settings,
                    letters: list[dict[str, Any]]) -> list[ConsumerRecord | NotRetrieved]:
    """:func:`fetch_original` for each letter, with one consumer; a failure is returned in its
    place, not raised."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed",
                             auto_offset_reset="earliest", **kafka_python_security(settings))
    results: list[ConsumerRecord | NotRetrieved] = []
    try:
        for letter in letters:
            try:
                results.append(fetch_original(consumer, letter))
            except NotRetrieved as error:
                results.append(error)
            except KafkaError as error:  # e.g. no READ on the source topic (ACLs)
                results.append(NotRetrieved(f"cannot read {letter['topic']}"
                                            f"[{letter['partition']}]: {error!r}"))
    finally:
        consumer.close()
    return results


@click.group("deadletter")
def deadletter() -> None:
    """Inspect and redrive the inputs the pipeline rejected (the dead-letter topic)."""


@deadletter.command("list")
@click.option("--reason-contains", help="Only dead letters whose reason contains TEXT.")
def list_command(reason_contains: str | None) -> None:
    """Print dead letters: where each is, where it came from, and why it was rejected.

    A letter that keeps only the start of a large message ends with ``{value N bytes, sha256
    ...: kept the first 1,024}``.
    """
    settings = load_settings()
    entries = list(read_dead_letters(settings, codec_for(settings)))
    shown = entries if reason_contains is None else select(entries, reason_contains=reason_contains)
    click.echo(f"{'dead letter':<12} {'failed at (UTC)':<20} {'source':<32} reason")
    for entry in shown:
        if entry.error:
            click.echo(f"{entry.position:<12} {'-':<20} {'-':<32} (unreadable: {entry.error})")
            continue
        letter = entry.letter
        field = f" [{letter['field']}]" if letter["field"] else ""
        click.echo(f"{entry.position:<12} {letter['failed_at']:%Y-%m-%d %H:%M:%S}  "
                   f"{entry.source:<32} {letter['reason']}{field}{entry.size_note}")
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

    Run it after fixing the cause. A dead letter that fails again is dead-lettered again. A letter
    that keeps only the start of a large message has the whole message read back from its topic,
    partition and offset, and checked against its SHA-256; one that Kafka no longer retains (or
    that differs) is skipped and named, and the exit status is 1.
    """
    if everything == bool(offsets or reason_contains):
        raise click.UsageError("give --all, or --offset and/or --reason-contains")
    settings = load_settings()
    chosen = select(read_dead_letters(settings, codec_for(settings)),
                    offsets=offsets, reason_contains=reason_contains)
    if not chosen:
        raise click.ClickException("no dead letter matches")
    truncated = [entry for entry in chosen if entry.truncated]
    fetched = dict(zip([entry.position for entry in truncated],
                       fetch_originals(settings, [entry.letter for entry in truncated]),
                       strict=True)) if truncated else {}
    verb = "would redrive" if dry_run else "redrive"
    sends: list[tuple[Entry, bytes | None, bytes | None]] = []
    skipped: list[Entry] = []
    for entry in chosen:
        letter = entry.letter
        original = fetched.get(entry.position)
        if isinstance(original, NotRetrieved):
            click.echo(f"skip {entry.position} -> {entry.source}: {original}")
            skipped.append(entry)
            continue
        if original is None:
            click.echo(f"{verb} {entry.position} -> {entry.source}: {letter['reason']}")
            sends.append((entry, letter["key"], letter["value"]))
            continue
        key_size, size = len(original.key or b""), len(original.value or b"")
        click.echo(f"{verb} {entry.position} -> {entry.source}: {letter['reason']} (the whole "
                   f"message, key {key_size:,} and value {size:,} bytes, read back from the "
                   "source; sha256 matches)")
        if max(size, key_size) > settings.max_message_bytes:
            click.echo("  note: it is over BILLING_MAX_MESSAGE_BYTES="
                       f"{settings.max_message_bytes:,}; the workers dead-letter it again "
                       "unless BILLING_MAX_MESSAGE_BYTES is raised on them")
        sends.append((entry, original.key, original.value))
    skip_note = (f", {len(skipped)} skipped ({', '.join(e.position for e in skipped)}: not "
                 "retrievable, see above)" if skipped else "")
    if dry_run:
        click.echo(f"{len(sends)} dead letter(s) would be redriven{skip_note}", err=True)
        if skipped:
            raise SystemExit(1)
        return
    failed: list[BaseException] = []
    if sends:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                 **kafka_python_security(settings),
                                 **{**PRODUCER_CONFIG,
                                    "max_request_size": REDRIVE_MAX_REQUEST_BYTES})
        futures = [producer.send(entry.letter["topic"], key=key, value=value,
                                 partition=entry.letter["partition"])
                   for entry, key, value in sends]
        producer.flush()
        producer.close()
        failed = [future.exception for future in futures if future.failed()]
    click.echo(f"{len(sends) - len(failed)} dead letter(s) redriven, {len(failed)} failed"
               + (f": {failed[0]}" if failed else "") + skip_note, err=True)
    if failed or skipped:
        raise SystemExit(1)
