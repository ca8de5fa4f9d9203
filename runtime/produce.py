"""The producer client for gateway and payment teams, and the ``billing produce`` command.

:class:`EventProducer` is how Python services put input events on the billing topics: it
validates each event as the pipeline will (``billing.events.normalize_input``, with the configured
id size) and refuses, at the source, what the pipeline would dead-letter and what it would silently
misread: a timestamp more than the future tolerance ahead of this producer's clock, a product or
meter its price book does not know, a field its type does not have (``{"request": 500}`` would be
billed as one request). A bad event is refused with the field named instead of landing in the
dead-letter topic. It serializes with the shared codec; it keys by ``account_id`` so one worker
sees an account's events in order; and it writes with ``acks=all`` and idempotence, so a retried
send is never doubled.

With ``pack_usage`` it packs each account's usage events into ``usage_batch`` messages (one
message, every record keeping its own event_id): an account's pending records go out when they
reach ``pack_records``, when the oldest has waited ``pack_linger`` seconds, and on
:meth:`EventProducer.flush`; a batch that would pass the maximum message size is split. Each
event is still checked, and refused, on its own at :meth:`EventProducer.send`.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import click
import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.future import Future
from tqdm import tqdm

from billing.config import BillingConfig, ConfigError
from billing.events import (
    ENVELOPE_FIELDS,
    INPUT_FIELDS,
    MAX_BATCH_RECORDS,
    TOPIC_OF_TYPE,
    InvalidEvent,
    format_time,
    normalize_input,
    unknown_fields,
    unknown_fields_reason,
)
from billing.pricebook import PriceBook
from runtime.codecs import codec_for
from runtime.kafka_security import kafka_python_security
from runtime.rules_files import load_config, load_pricebook, load_rules, rules_options
from runtime.settings import Settings, load_settings
from schemas.codec import Codec, check_message_size, encode_in_halves
from schemas.registry import RegistryError

# Durable and ordered: every in-sync replica has it before it counts as sent; idempotence keeps
# per-partition order and drops the broker-side duplicates retries would otherwise create. Retries
# are bounded by time (delivery_timeout_ms), not count, as Kafka recommends.
PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "retries": 2**31 - 1,
    "delivery_timeout_ms": 120_000,
    "max_in_flight_requests_per_connection": 5,
    "linger_ms": 20,
    "batch_size": 128 * 1024,
}


class Message(NamedTuple):
    """An event ready for Kafka: where it goes, its bytes and the canonical event they encode.
    ``key`` is None for a broadcast."""

    topic: str
    key: bytes | None
    value: bytes
    event: dict[str, Any]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ProducerChecks:
    """What a producer checks besides the event's structure, and against what.

    ``config`` gives the future tolerance and the id size, ``pricebook`` the products and meters
    (use the worker's files: ``BILLING_CONFIG`` and ``BILLING_PRICEBOOK``, as
    :meth:`from_settings` does), ``now`` this producer's clock (aware UTC; tests inject one).
    """

    config: BillingConfig = field(default_factory=BillingConfig)
    pricebook: PriceBook = field(default_factory=load_pricebook)
    now: Callable[[], datetime] = _utc_now

    @classmethod
    def from_settings(cls, settings: Settings, config: BillingConfig | None = None,
                      pricebook: PriceBook | None = None,
                      now: Callable[[], datetime] | None = None) -> ProducerChecks:
        """The given ones; the rest from the settings' configuration and price book files (those
        the worker reads; unset: the defaults) and the system clock. Raises ``ConfigError``."""
        return cls(config or load_config(settings.config_path),
                   pricebook or load_pricebook(settings.pricebook_path),
                   now or _utc_now)

    def check(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The event in canonical form, or :class:`InvalidEvent` naming the field at fault."""
        raw = dict(event)
        unknown = unknown_fields(raw)
        if unknown:
            raise InvalidEvent(unknown_fields_reason(raw, unknown), str(unknown[0]))
        for name in ENVELOPE_FIELDS:  # the broker stamps the real ingested_at
            raw.pop(name, None)
        canonical = normalize_input(raw, self.config.max_id_bytes)
        now = self.now()
        ahead = canonical["timestamp"] - now
        if ahead > self.config.future_tolerance:
            raise InvalidEvent(
                f"timestamp {format_time(canonical['timestamp'])} is "
                f"{timedelta(seconds=int(ahead.total_seconds()))} (h:mm:ss) ahead of this "
                f"producer's clock ({format_time(now)}); the pipeline dead-letters an event more "
                f"than {self.config.future_tolerance} ahead of its arrival: check the clock that "
                "set it", "timestamp")
        if canonical["type"] == "usage":
            self.pricebook.rate(canonical["product"], canonical["quantities"])  # same message
        return canonical


@functools.lru_cache(maxsize=4)
def _checks_of_files(config_path: Path | None, pricebook_path: Path | None) -> ProducerChecks:
    return ProducerChecks(load_config(config_path), load_pricebook(pricebook_path))


def prepare(event: Mapping[str, Any], settings: Settings, codec: Codec,
            checks: ProducerChecks | None = None) -> Message:
    """Validate and serialize one event without sending it; raises :class:`InvalidEvent`.

    Kept apart from the producer so a bad event is refused before any connection is made.
    ``checks`` default: the settings' configuration and price book files (read once).
    """
    if checks is None:
        checks = _checks_of_files(settings.config_path, settings.pricebook_path)
    canonical = checks.check(event)
    kind = TOPIC_OF_TYPE[canonical["type"]]
    key = canonical["account_id"].encode() or None
    value = codec.encode(kind, canonical)
    check_message_size(key, value, settings.max_message_bytes)  # the worker would dead-letter it
    return Message(getattr(settings.topics, kind), key, value, canonical)


class DeliveryError(RuntimeError):
    """Kafka did not take some events; ``failures`` lists ``(event_id, error)`` for each."""

    def __init__(self, failures: list[tuple[str, Exception]]) -> None:
        shown = "; ".join(f"{event_id}: {error}" for event_id, error in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} event(s) not delivered: {shown}{more}")
        self.failures = failures


class EventProducer:
    """Validates, serializes and sends input events; :meth:`flush` raises what Kafka refused.

    ``config`` (future tolerance, id size) and ``pricebook`` (known products and meters) default
    to the worker's files, ``BILLING_CONFIG`` and ``BILLING_PRICEBOOK`` (unset: the defaults);
    ``now`` is this producer's clock (default the system's, aware UTC). A bad file raises
    ``ConfigError`` here, before connecting. ``producer_factory`` builds the Kafka producer from
    keyword configuration (default ``kafka.KafkaProducer``); tests pass a fake. ``overrides``
    change :data:`PRODUCER_CONFIG`. ``pack_usage``: send an account's usage events packed in
    ``usage_batch`` messages of up to ``pack_records`` (at most ``MAX_BATCH_RECORDS``), each
    sent at the latest ``pack_linger`` seconds after its first record (see the module doc).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        codec: Codec | None = None,
        config: BillingConfig | None = None,
        pricebook: PriceBook | None = None,
        now: Callable[[], datetime] | None = None,
        producer_factory: Callable[..., Any] | None = None,
        pack_usage: bool = False,
        pack_linger: float = 0.005,
        pack_records: int = MAX_BATCH_RECORDS,
        **overrides: Any,
    ) -> None:
        if not 1 <= pack_records <= MAX_BATCH_RECORDS:
            raise ValueError(f"pack_records={pack_records}: 1 to {MAX_BATCH_RECORDS}")
        self.settings = settings or load_settings()
        self.checks = ProducerChecks.from_settings(self.settings, config, pricebook, now)
        self.codec = codec or codec_for(self.settings)
        factory = producer_factory or KafkaProducer
        config = {**PRODUCER_CONFIG, **overrides}
        self._producer = factory(bootstrap_servers=self.settings.kafka_bootstrap,
                                 **kafka_python_security(self.settings), **config)
        self._failures: list[tuple[str, Exception]] = []
        self._lock = threading.Lock()
        self._packer = _UsagePacker(self, pack_linger, pack_records) if pack_usage else None

    def send(self, event: Mapping[str, Any]) -> Any:
        """Queue one event; returns the Kafka future of its message.

        Raises :class:`InvalidEvent` naming the field, before anything is sent, if the event is
        not valid, has a field its type does not have (``ingested_at``, of exported lines, is
        accepted and not sent), is dated more than the future tolerance ahead of this
        producer's clock, or uses a product or meter the price book does not know. A
        ``close_period`` with an empty ``account_id`` closes the month for every account, so it
        is written once to every partition of the control topic (each worker owns some
        partitions); the future returned is then the last copy's. Delivery failures of any
        message are raised by :meth:`flush`.
        """
        message = prepare(event, self.settings, self.codec, self.checks)
        event_id = str(event["event_id"])
        if self._packer is not None and message.event["type"] == "usage":
            return self._packer.add(message.event)
        partitions: list[int | None] = [None]
        if message.key is None:
            partitions = sorted(self._producer.partitions_for(message.topic) or ())
            if not partitions:
                raise KafkaError(f"topic {message.topic} has no partitions: is it created?")
        for partition in partitions:
            future = self._producer.send(message.topic, value=message.value, key=message.key,
                                         partition=partition)
            future.add_errback(self._record_failure, event_id)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued event is acknowledged; raise :class:`DeliveryError` if not."""
        if self._packer is not None:
            self._packer.send_all()
        self._producer.flush(timeout)
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(failures)

    def close(self) -> None:
        """Flush, then release the connections (even if the flush raised)."""
        try:
            self.flush()
        finally:
            if self._packer is not None:
                self._packer.stop()
            self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record_failure(self, event_id: str, error: Exception) -> None:
        # Runs on the Kafka I/O thread.
        with self._lock:
            self._failures.append((event_id, error))

    def _send_batch(self, account_id: str, records: list[dict[str, Any]],
                    futures: list[Future]) -> None:
        """Send one account's packed usage records as ``usage_batch`` messages: one, or halves
        of it while it would pass the maximum message size (each record fits alone: ``send``
        checked it)."""
        key, start = account_id.encode(), 0
        for part, value in encode_in_halves(
                lambda part: self.codec.encode("usage", {"type": "usage_batch",
                                                         "account_id": account_id,
                                                         "records": part}),
                records, self.settings.max_message_bytes):
            self._send_packed(key, value, part, futures[start:start + len(part)])
            start += len(part)

    def _send_packed(self, key: bytes, value: bytes, records: list[dict[str, Any]],
                     futures: list[Future]) -> None:
        """Send one ``usage_batch`` message; each record's future follows it."""
        try:
            sent = self._producer.send(self.settings.topics.usage, value=value, key=key,
                                       partition=None)
        except KafkaError as error:  # (on the packer's thread, nobody else would see it)
            for record, future in zip(records, futures, strict=True):
                self._record_failure(record["event_id"], error)
                future.failure(error)
            return
        for record, future in zip(records, futures, strict=True):
            sent.add_errback(self._record_failure, record["event_id"])
            sent.chain(future)


class _UsagePacker:
    """An :class:`EventProducer`'s pending usage records, per account, and the thread that
    sends those whose first record has waited ``linger`` seconds."""

    def __init__(self, producer: EventProducer, linger: float, most: int) -> None:
        self.producer, self.linger, self.most = producer, linger, most
        # account id -> (monotonic time of its first record, records, their futures)
        self.pending: dict[str, tuple[float, list[dict[str, Any]], list[Future]]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="usage-packer", daemon=True)
        self.thread.start()

    def add(self, event: dict[str, Any]) -> Future:
        """Pack a checked canonical usage event; the future resolves with its message's
        metadata."""
        canonical = dict(event)
        account_id = canonical.pop("account_id")
        del canonical["type"]
        future = Future()
        with self.lock:
            _, records, futures = self.pending.setdefault(account_id,
                                                          (time.monotonic(), [], []))
            records.append(canonical)
            futures.append(future)
            if len(records) >= self.most:
                self._send(account_id)
        return future

    def send_all(self, older_than: float | None = None) -> None:
        """Send every account's pending records (those first packed before ``older_than``)."""
        with self.lock:
            for account_id in [account_id for account_id, (since, _, _) in self.pending.items()
                               if older_than is None or since <= older_than]:
                self._send(account_id)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()

    def _send(self, account_id: str) -> None:  # holding the lock: keeps each account's order
        _, records, futures = self.pending.pop(account_id)
        self.producer._send_batch(account_id, records, futures)

    def _run(self) -> None:
        while not self.stopped.wait(self.linger / 2):
            self.send_all(older_than=time.monotonic() - self.linger)


# --- the ``billing produce`` command -----------------------------------------------------------


# A whole number typed on the command line: ASCII only. int() would also read "٣" as 3, "1_000"
# and " 5"; str.isdigit() is true for "²", which int() then refuses with a crash.
_WHOLE_NUMBER = re.compile(r"-?[0-9]+", re.ASCII).fullmatch


def _cli_count(text: str) -> int | str:
    """A count typed on the command line: an int if it is ASCII digits, else the text itself,
    which ``normalize_input`` then refuses naming the field (a count must be a JSON integer)."""
    return int(text) if _WHOLE_NUMBER(text) else text


def _cli_value(kind: str, text: str) -> Any:
    """A ``--field`` value as the JSON type the field takes; normalize_input judges the result."""
    if kind.endswith("?") and text == "null":
        return None
    if kind == "bool":
        return {"true": True, "false": False}.get(text.lower(), text)
    if kind == "requests":
        return _cli_count(text)
    return text


def _pairs(option: str, items: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        yield name, value


def event_from_flags(
    event_type: str,
    account_id: str | None,
    event_id: str | None,
    timestamp: str | None,
    quantities: tuple[str, ...],
    fields: tuple[str, ...],
) -> dict[str, Any]:
    """The raw event the flags describe; ``event_id`` and ``timestamp`` default to new/now."""
    kinds = INPUT_FIELDS[event_type]
    event: dict[str, Any] = {
        "type": event_type,
        "event_id": event_id or str(uuid.uuid4()),
        "account_id": account_id,
        "timestamp": timestamp or datetime.now(UTC),
    }
    for name, value in _pairs("--field", fields):
        if name not in kinds:
            raise click.BadParameter(f"{event_type} has no field {name!r}; it has "
                                     f"{', '.join(kinds)}", param_hint="--field")
        event[name] = _cli_value(kinds[name], value)
    if quantities:
        counts = dict(_pairs("--quantity", quantities))
        event["quantities"] = {meter: _cli_count(n) for meter, n in counts.items()}
    return event


def _describe(error: InvalidEvent) -> str:
    return f"field {error.field}: {error.reason}" if error.field else error.reason


def _produce_file(producer: EventProducer, path: Path) -> tuple[int, int]:
    """Send every valid line of a JSON-lines file; report invalid ones. Returns (sent, invalid)."""
    sent = invalid = 0
    with path.open("rb") as handle:
        total = sum(1 for _ in handle)
        handle.seek(0)
        progress = tqdm(handle, total=total, unit="event", desc=path.name, disable=None)
        for number, line in enumerate(progress, 1):
            if not line.strip():
                continue
            try:
                producer.send(orjson.loads(line))
                sent += 1
                continue
            except orjson.JSONDecodeError as error:
                problem = f"not JSON: {error}"
            except InvalidEvent as error:
                problem = _describe(error)
            invalid += 1
            tqdm.write(f"line {number}: {problem}", file=click.get_text_stream("stderr"))
    return sent, invalid


@click.command("produce")
@click.option("--type", "event_type", type=click.Choice(sorted(INPUT_FIELDS)),
              help="Event type, for a single event given by flags.")
@click.option("--account", "account_id", help="account_id (empty for a broadcast close_period).")
@click.option("--event-id", help="Idempotency key; default: a new uuid4.")
@click.option("--timestamp", help="Event time, ISO-8601 UTC (2026-01-31T12:00:00Z); default: now.")
@click.option("--product", help="usage: the price-book product.")
@click.option("--quantity", "quantities", multiple=True, metavar="METER=N",
              help="usage: units of a meter; repeat for each meter.")
@click.option("--requests", help="usage: requests served (default 1).")
@click.option("--field", "fields", multiple=True, metavar="NAME=VALUE",
              help="Any other field of the type, e.g. amount=20.00; 'null' for none. Repeatable.")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Send a JSON-lines file of events instead (one event object a line).")
@rules_options
@click.option("--pack-usage", "pack_linger", type=float, default=None, metavar="SECONDS",
              help="Pack each account's usage into usage_batch messages, sent when 500 records "
                   "are pending or the first has waited SECONDS (e.g. 0.5 for a backfill; the "
                   "workers must read usage_batch). Default: every event alone.")
def produce_command(
    event_type: str | None,
    account_id: str | None,
    event_id: str | None,
    timestamp: str | None,
    product: str | None,
    quantities: tuple[str, ...],
    requests: str | None,
    fields: tuple[str, ...],
    path: Path | None,
    pricebook_path: str | None,
    config_path: str | None,
    pack_linger: float | None,
) -> None:
    """Validate and send input events to the billing topics (one from flags, or a file).

    \b
    billing produce --type usage --account acct-1 --product deepseek-v3 \\
        --quantity input_tokens=1000 --quantity output_tokens=200
    billing produce --type credits_purchased --account acct-1 \\
        --field amount=20.00 --field payment_id=pay-1
    billing produce --file events.jsonl

    Invalid events are reported with the field at fault and not sent. Exits non-zero if any
    event was invalid or not delivered.
    """
    if (path is None) == (event_type is None):
        raise click.UsageError("give either --type (one event from flags) or --file")
    settings = load_settings()
    try:
        checks = ProducerChecks(*load_rules(settings, config_path, pricebook_path))
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    codec = codec_for(settings)
    event = None
    if event_type is not None:
        shortcuts = {"product": product, "requests": requests}
        fields += tuple(f"{name}={value}" for name, value in shortcuts.items() if value is not None)
        event = event_from_flags(event_type, account_id, event_id, timestamp, quantities, fields)
        try:
            prepare(event, settings, codec, checks)  # refuse it before connecting to anything
        except InvalidEvent as error:
            raise click.ClickException(f"invalid event, not sent: {_describe(error)}") from None
    try:
        packing = {} if pack_linger is None else {"pack_usage": True, "pack_linger": pack_linger}
        with EventProducer(settings, codec=codec, config=checks.config,
                           pricebook=checks.pricebook, **packing) as producer:
            if event is None:
                assert path is not None
                sent, invalid = _produce_file(producer, path)
            else:
                producer.send(event)
                sent, invalid = 1, 0
                click.echo(f"{event['type']} event_id={event['event_id']}", err=True)
            try:
                producer.flush()
                failed = 0
            except DeliveryError as error:
                failed = len(error.failures)
                click.echo(str(error), err=True)
    except KafkaError as error:
        raise click.ClickException(f"Kafka: {error} (is `billing stack up` running, or "
                                   "BILLING_KAFKA_BOOTSTRAP set?)") from error
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{sent - failed} event(s) delivered, {failed} not delivered, "
               f"{invalid} invalid not sent", err=True)
    if invalid or failed:
        raise SystemExit(1)
