"""The gateway client: every account's current status, and "may this account send now?".

The worker writes the compacted topic ``billing.account-status`` (``settings.topics.
account_status``): one record per account per batch in which its snapshot changed, keyed by
account id, with a ``version`` that only grows (billing rules, sections 3 and 6).
:class:`AccountStatusClient` reads it the way the contract says a gateway must:

1. at :meth:`~AccountStatusClient.start`, every partition from its earliest offset to the end
   offsets of that moment (kafka-python, partitions assigned directly, no consumer group), keeping
   the record with the highest ``version`` of each account; then :attr:`~AccountStatusClient.ready`
   is set (:meth:`~AccountStatusClient.wait_ready`, or ``await`` :meth:`~AccountStatusClient.
   wait_ready_async`), and :attr:`~AccountStatusClient.progress` says how far it got before that;
2. after that it follows the topic, on its own thread, for as long as it runs.

:meth:`~AccountStatusClient.may_send` answers from memory (a dictionary look-up under a lock held
for that look-up only), so it may be called from any thread and from an asyncio loop without
blocking it. How current the answers are: :meth:`~AccountStatusClient.lag` (records behind the end
offsets), :attr:`~AccountStatusClient.last_applied_at` (this host's clock when it last applied a
record) and :attr:`~AccountStatusClient.last_updated_at` (that record's ``updated_at``, event time).
``on_applied`` is told which accounts each batch of records changed the answers of, as soon as
:meth:`~AccountStatusClient.may_send` gives the new ones (to drop a cache entry, or to time it).

    with AccountStatusClient(load_settings()) as statuses:
        if not statuses.wait_ready(timeout=120):
            raise SystemExit("account statuses not loaded")
        decision = statuses.may_send("acct-123")   # billing.account_status.Decision
        if not decision.allowed:
            refuse(decision.reason)                 # "credits_exhausted", "suspended", "unknown"

Per account it keeps the decision (the fields :func:`billing.account_status.decide` gives) and the
record's bytes; :meth:`~AccountStatusClient.status` decodes the whole record when asked. That keeps
a million accounts in a few hundred megabytes rather than gigabytes of decoded dictionaries.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from billing.account_status import Decision, decide
from billing.snapshots import snapshot_of_status
from runtime.codecs import codec_for
from runtime.kafka_security import kafka_python_security
from runtime.logfmt import log_event
from runtime.settings import Settings
from schemas.codec import Codec, CodecError
from schemas.registry import RegistryError

log = logging.getLogger("runtime.account_status")

KIND = "account_status"


class StatusTopicError(RuntimeError):
    """The account-status topic cannot be read (it does not exist, or has no partitions; from
    :func:`loaded_statuses` and :func:`read_snapshots` also: Kafka cannot be reached, or the
    read stopped moving)."""


class _Entry(NamedTuple):
    version: int
    decision: Decision
    value: bytes  # the record as written, decoded again only by ``status()``


class StatusTable:
    """Account id -> its status of highest version; safe to share between threads.

    The merge rule of the contract, apart from Kafka so it can be tested alone: a record with a
    lower ``version`` than the one held is ignored (a worker that lost its partitions may write
    an older state after the new owner's newer one). At an equal version the later record (in
    partition order) replaces the one held: a batch applied again after a crash writes the same
    state under the same version (:func:`billing.account_record.status_version`, which grows with
    every input event applied to the account, each record of a usage batch included). A tombstone
    (no value) forgets the account, as compaction would.
    """

    def __init__(self, *, allow_unknown: bool = False) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._unknown = decide(None, allow_unknown=allow_unknown)

    def apply(self, account_id: str, record: dict[str, Any] | None, value: bytes = b"") -> bool:
        """Merge one decoded record (None: a tombstone); whether it changed what is held."""
        return self.apply_many([(account_id, record, value)]) == 1

    def apply_many(self, items: Iterable[tuple[str, dict[str, Any] | None, bytes]]) -> int:
        """Merge records in order under one hold of the lock; how many changed what is held."""
        prepared = [(account_id, None if record is None else
                     _Entry(record["version"], decide(record), value))
                    for account_id, record, value in items]
        changed = 0
        with self._lock:
            entries = self._entries
            for account_id, entry in prepared:
                if entry is None:
                    changed += entries.pop(account_id, None) is not None
                    continue
                held = entries.get(account_id)
                if held is None or entry.version >= held.version:
                    entries[account_id] = entry
                    changed += 1
        return changed

    def decision(self, account_id: str) -> Decision:
        """The decision of the account's record; an unknown account's when none is held."""
        with self._lock:
            entry = self._entries.get(account_id)
        return self._unknown if entry is None else entry.decision

    def value(self, account_id: str) -> bytes | None:
        """The bytes of the account's record of highest version, or None."""
        with self._lock:
            entry = self._entries.get(account_id)
        return None if entry is None else entry.value

    def version(self, account_id: str) -> int | None:
        with self._lock:
            entry = self._entries.get(account_id)
        return None if entry is None else entry.version

    def account_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Progress:
    """How far the start-up read has got: ``offsets_read`` of ``offsets_total`` (the end offsets
    taken at start minus the earliest ones, summed over partitions; a compacted topic holds fewer
    records than that), ``records_read`` records decoded, ``accounts`` held."""

    records_read: int
    offsets_read: int
    offsets_total: int
    accounts: int
    ready: bool
    elapsed: float  # seconds since start()

    @property
    def fraction(self) -> float:
        if self.ready or self.offsets_total == 0:
            return 1.0
        return min(1.0, self.offsets_read / self.offsets_total)

    def __str__(self) -> str:
        state = "ready" if self.ready else f"{self.fraction:.0%}"
        return (f"account statuses: {state}, {self.records_read:,} records read, "
                f"{self.accounts:,} accounts, offsets {self.offsets_read:,}/"
                f"{self.offsets_total:,}, {self.elapsed:.1f}s")


class AccountStatusClient:
    """Every account's latest status from ``billing.account-status``, and :meth:`may_send`.

    ``allow_unknown``: the answer for an account the topic has no record of (default: refused,
    reason ``unknown``; an id nobody opened must not be served for free). ``on_progress`` is
    called with a :class:`Progress` from the client's thread about every ``progress_interval``
    seconds until ready, and once when ready. ``on_applied`` is called from the client's thread
    with the account ids of each batch of records just applied, in partition order (an id may
    repeat; a record of a lower version than the one held is in it too), once ``may_send``
    answers from them; it holds up the reading, so it should be quick. ``codec`` defaults to the
    settings' (registry framing iff a registry URL is set); ``consumer_factory`` and
    ``wall_clock`` are for tests.
    """

    def __init__(self, settings: Settings, *, allow_unknown: bool = False,
                 on_progress: Callable[[Progress], None] | None = None,
                 progress_interval: float = 1.0,
                 on_applied: Callable[[list[str]], None] | None = None,
                 codec: Codec | None = None, poll_timeout_ms: int = 200,
                 max_poll_records: int = 5000,
                 consumer_factory: Callable[..., Any] = KafkaConsumer,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.topic = settings.topics.account_status
        self.allow_unknown = allow_unknown
        self.codec = codec or codec_for(settings)
        self.on_progress, self.progress_interval = on_progress, progress_interval
        self.on_applied = on_applied
        self.poll_timeout_ms, self.max_poll_records = poll_timeout_ms, max_poll_records
        self._consumer_factory, self._wall_clock = consumer_factory, wall_clock
        self._table = StatusTable(allow_unknown=allow_unknown)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._partitions: list[TopicPartition] = []
        self._begin: dict[TopicPartition, int] = {}
        self._bootstrap_end: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._started_at = 0.0
        self._ready_after: float | None = None
        self._records_read = 0
        self.bad_records = 0  # records that could not be decoded (logged, skipped)
        self.last_error: BaseException | None = None
        self._last_applied_at: float | None = None
        self._last_updated_at: datetime | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> AccountStatusClient:
        """Assign every partition at its earliest offset, note the end offsets, and start the
        reading thread. Raises :class:`StatusTopicError` if the topic does not exist."""
        if self._thread is not None:
            return self
        self._started_at = time.monotonic()
        consumer = self._consumer_factory(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
            enable_auto_commit=False, isolation_level="read_committed",
            allow_auto_create_topics=False,  # a reader must not create a misnamed topic
            max_poll_records=self.max_poll_records, client_id="billing-account-status",
            **kafka_python_security(self.settings))
        try:
            numbers = consumer.partitions_for_topic(self.topic)
            if not numbers:
                raise StatusTopicError(
                    f"topic {self.topic} does not exist on {self.settings.kafka_bootstrap}: "
                    "create it with `billing stack topics` (compacted), or fix "
                    "BILLING_TOPIC_ACCOUNT_STATUS")
            partitions = [TopicPartition(self.topic, number) for number in sorted(numbers)]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            self._begin = dict(consumer.beginning_offsets(partitions))
            self._bootstrap_end = dict(consumer.end_offsets(partitions))
        except BaseException:
            consumer.close()
            raise
        self._consumer, self._partitions = consumer, partitions
        self._positions = dict(self._begin)
        self._ends = dict(self._bootstrap_end)
        log_event(log, "account_status.start", topic=self.topic, partitions=len(partitions),
                  offsets=self._offsets_total())
        self._check_ready()
        self._thread = threading.Thread(target=self._run, name="account-status", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop following the topic and close the consumer (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> AccountStatusClient:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- answers -------------------------------------------------------------------------

    def may_send(self, account_id: str) -> Decision:
        """May the account send a request now, within which limits: from the record of highest
        version read so far (an account without one: ``allow_unknown``, reason ``unknown``).
        Non-blocking. Before :attr:`ready` an account may still be unknown or stale."""
        return self._table.decision(account_id)

    def status(self, account_id: str) -> dict[str, Any] | None:
        """The account's whole status record (snapshot, ``may_send``, ``blocked_reasons``,
        ``updated_at``, ``version``), decoded from the bytes held; None if never seen."""
        value = self._table.value(account_id)
        return None if value is None else self.codec.decode(KIND, value)

    def version(self, account_id: str) -> int | None:
        """The version of the account's record held, or None."""
        return self._table.version(account_id)

    def account_ids(self) -> list[str]:
        """Every account the client holds a record of."""
        return self._table.account_ids()

    def __len__(self) -> int:
        return len(self._table)

    # -- readiness and staleness ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether every partition was read up to the end offsets taken at start."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until :attr:`ready` (True) or ``timeout`` seconds passed (False)."""
        return self._ready.wait(timeout)

    async def wait_ready_async(self, timeout: float | None = None,
                               interval: float = 0.05) -> bool:
        """:meth:`wait_ready` for an asyncio loop: never blocks it; cancellable."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)
        return True

    @property
    def bootstrap_seconds(self) -> float | None:
        """Seconds from :meth:`start` to ready, once ready."""
        return self._ready_after

    @property
    def progress(self) -> Progress:
        return Progress(self._records_read, self._offsets_read(), self._offsets_total(),
                        len(self._table), self.ready, time.monotonic() - self._started_at)

    def lag(self) -> int:
        """Records behind the end offsets (as of the client thread's last fetch): 0 when caught
        up. It stops changing if the client cannot reach Kafka: watch :attr:`last_applied_at`
        and :attr:`last_error` too."""
        ends, positions = self._ends, self._positions
        return sum(max(0, end - positions.get(tp, 0)) for tp, end in ends.items())

    @property
    def last_applied_at(self) -> datetime | None:
        """This host's clock (UTC) when the client last applied a record, or None."""
        at = self._last_applied_at
        return None if at is None else datetime.fromtimestamp(at, UTC)

    @property
    def last_updated_at(self) -> datetime | None:
        """The ``updated_at`` (event time of the account's last input) of the record applied
        last, or None."""
        return self._last_updated_at

    # -- the reading thread --------------------------------------------------------------

    def _offsets_total(self) -> int:
        return sum(max(0, self._bootstrap_end[tp] - self._begin[tp]) for tp in self._partitions)

    def _offsets_read(self) -> int:
        return sum(max(0, min(self._positions.get(tp, 0), self._bootstrap_end[tp])
                       - self._begin[tp]) for tp in self._partitions)

    def _check_ready(self) -> None:
        if self._ready.is_set():
            return
        if all(self._positions.get(tp, 0) >= self._bootstrap_end[tp] for tp in self._partitions):
            self._ready_after = time.monotonic() - self._started_at
            self._ready.set()
            log_event(log, "account_status.ready", topic=self.topic,
                      accounts=len(self._table), records=self._records_read,
                      seconds=f"{self._ready_after:.3f}")
            self._report_progress()

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            _call_back(self.on_progress, self.progress, "progress")

    def _run(self) -> None:
        consumer = self._consumer
        reported = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    batches = list(consumer.poll(timeout_ms=self.poll_timeout_ms,
                                                 max_records=self.max_poll_records).items())
                    for index, (tp, records) in enumerate(batches):
                        try:
                            self._apply(consumer, tp, records)
                        except RegistryError:  # read what is not applied again, later
                            for later, unread in batches[index + 1:]:
                                consumer.seek(later, unread[0].offset)
                            raise
                    self._update_offsets(consumer)
                except Exception as error:
                    self.last_error = error
                    log_event(log, "account_status.error", level=logging.WARNING,
                              error=repr(error))
                    self._stop.wait(1.0)
                    continue
                self._check_ready()
                if not self.ready and time.monotonic() - reported >= self.progress_interval:
                    reported = time.monotonic()
                    self._report_progress()
        finally:
            consumer.close()

    def _apply(self, consumer: Any, tp: TopicPartition, records: list[Any]) -> None:
        items: list[tuple[str, dict[str, Any] | None, bytes]] = []
        last: dict[str, Any] | None = None
        for record in records:
            if record.key is None:
                self.bad_records += 1
                continue
            account_id = record.key.decode("utf-8", "replace")
            if record.value is None:
                items.append((account_id, None, b""))
                continue
            try:
                decoded = self.codec.decode(KIND, record.value)
            except CodecError as error:
                self.bad_records += 1
                log_event(log, "account_status.bad_record", level=logging.WARNING,
                          partition=tp.partition, offset=record.offset, error=str(error))
                continue
            except RegistryError:
                consumer.seek(tp, record.offset)  # read it again once the registry answers
                self._merge(items, last)
                raise
            items.append((account_id, decoded, record.value))
            last = decoded
        self._merge(items, last)

    def _merge(self, items: list[tuple[str, dict[str, Any] | None, bytes]],
               last: dict[str, Any] | None) -> None:
        if not items:
            return
        self._table.apply_many(items)
        self._records_read += len(items)
        self._last_applied_at = self._wall_clock()
        if last is not None:
            self._last_updated_at = last["updated_at"]
        if self.on_applied is not None:
            _call_back(self.on_applied, [account_id for account_id, _, _ in items], "applied")
        items.clear()

    def _update_offsets(self, consumer: Any) -> None:
        """Positions and end offsets as of this fetch (whole dictionaries replaced, so the
        threads calling :meth:`lag` never see one half-updated)."""
        self._positions = {tp: consumer.position(tp) for tp in self._partitions}
        ends = dict(self._ends)
        for tp in self._partitions:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = highwater
        self._ends = ends


def _call_back(callback: Callable[[Any], None], argument: Any, name: str) -> None:
    """A caller's callback, from the client's thread: its failure is logged, and the client
    goes on reading."""
    try:
        callback(argument)
    except Exception:
        log.exception("account_status.%s_callback_failed", name)


@contextmanager
def loaded_statuses(settings: Settings, *,
                    on_progress: Callable[[Progress], None] | None = None,
                    progress_interval: float = 1.0, stall_timeout: float = 120.0,
                    consumer_factory: Callable[..., Any] = KafkaConsumer
                    ) -> Iterator[AccountStatusClient]:
    """An :class:`AccountStatusClient` that has read the status topic to the end offsets of the
    moment it started (closed on exit). ``on_progress`` is called as the client calls it (about
    every ``progress_interval`` seconds until ready, once when ready).

    Raises :class:`StatusTopicError` if the topic does not exist, Kafka cannot be reached, or no
    offset was read for ``stall_timeout`` seconds before the end (a big topic takes as long as
    it takes, as long as it moves).
    """
    client = AccountStatusClient(settings, on_progress=on_progress,
                                 progress_interval=progress_interval,
                                 consumer_factory=consumer_factory)
    try:
        client.start()
    except KafkaError as error:
        raise StatusTopicError(f"cannot read topic {client.topic}: Kafka at "
                               f"{settings.kafka_bootstrap} is unreachable ({error})") from None
    try:
        moved_at, offsets_read = time.monotonic(), -1
        while not client.wait_ready(min(1.0, stall_timeout)):
            progress = client.progress
            if progress.offsets_read != offsets_read:
                moved_at, offsets_read = time.monotonic(), progress.offsets_read
            elif time.monotonic() - moved_at >= stall_timeout:
                cause = f": {client.last_error!r}" if client.last_error is not None else ""
                raise StatusTopicError(
                    f"reading topic {client.topic} from {settings.kafka_bootstrap} made no "
                    f"progress for {stall_timeout:.0f}s ({progress}){cause}")
        yield client
    finally:
        client.close()


def iter_snapshots(client: AccountStatusClient) -> Iterator[tuple[str, dict[str, Any]]]:
    """(account_id, snapshot) of every account the client holds, sorted by id: the snapshot
    fields of its latest record (canonical form), decoded one at a time."""
    for account_id in sorted(client.account_ids()):
        record = client.status(account_id)
        if record is not None:  # forgotten (a tombstone) since the ids were listed
            yield account_id, snapshot_of_status(record)


def read_snapshots(settings: Settings, **options: Any) -> dict[str, dict[str, Any]]:
    """The live ledger's snapshots: account_id -> snapshot (the snapshot fields only, canonical
    form, sorted by account id) of every account of the status topic, read to its end; what
    ``billing reconcile`` compares when it is given no file. ``options``: those of
    :func:`loaded_statuses`, whose :class:`StatusTopicError` it raises."""
    with loaded_statuses(settings, **options) as client:
        return dict(iter_snapshots(client))
