"""The Faust worker: input topics -> event-time merge -> ledger -> account-state.

One agent consumes the four co-partitioned input topics. Each message is decoded and validated
(bad input goes to ``billing.dead-letter`` with a reason, and is acknowledged), buffered in the
:class:`~billing.merge.EventTimeMerger`, and applied to the account's state in event-time order by
the pure ledger. The state lives in the ``accounts`` table, whose changelog topic (compacted) is
what a restarted worker recovers from. Outputs go to ``billing.account-state``, rated usage to
``billing.usage-rated``; both keyed by account so they stay co-partitioned with the inputs.

Month close. Each partition tracks its watermark (largest usage time) in the ``partition_clock``
table. When it passes a month's close time the worker broadcasts a ``close_period`` with the
deterministic id ``watermark:YYYY-MM`` and no account to every partition of the control topic, so
accounts that fell silent close too, on every worker, at the same point of event time.

Every input offset is taken in once, in order, whatever Faust skips or repeats
(:mod:`streams.quirks.input_sequence`), and an offset is committed only once its event's
effects are durable (:mod:`streams.quirks.ack_offsets`): an event still waiting in the merge
buffer is redelivered after a crash, never skipped, and an applied batch goes through
:class:`~streams.commit.CommitQueue`, which delivers its outputs, then its changelog records, then
records its offsets as applied, without holding up the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from typing import Any, NamedTuple, NoReturn

import faust
import orjson
from faust.types import TP, EventT

from billing.account_record import AccountEntry, dump_entry, load_entry, status_version
from billing.account_status import status_record
from billing.events import (
    TOPIC_OF_TYPE,
    InvalidEvent,
    batch_record_field,
    batch_record_reason,
)
from billing.ledger import (
    Ledger,
    LedgerFault,
    from_millis,
    snapshot,
)
from billing.ledger import to_millis as millis_of
from billing.merge import KIND_RANK, EventTimeMerger
from billing.seen_ids import BUCKET_MS
from billing.watermark import Watermark
from runtime.codecs import codec_for
from runtime.settings import Settings, make_private
from runtime.web_auth import is_loopback
from schemas.codec import check_message_size
from streams.commit import CommitQueue, CommitStalled, PendingBatch, TableWrite
from streams.metrics import WorkerMetrics, received_lag
from streams.preflight import heartbeat_interval
from streams.publish import Publisher
from streams.quirks.ack_offsets import commit_applied_offsets
from streams.quirks.broker_reader import BrokerReader
from streams.quirks.faust_internals import as_current_event, committed_offsets, kafka_producer
from streams.quirks.input_sequence import FilledEvent, InputSequence
from streams.seen_table import TableSeenIds, account_of_key
from streams.sender import BatchSender, FaustSender, partition_of
from streams.web import install_account_views

log = logging.getLogger("billing.worker")

# The exit status of a worker that stopped because it made no progress for ``stuck_seconds`` (Kafka
# stopped confirming deliveries, or stopped delivering input that is there): EX_TEMPFAIL, try
# again. Its supervisor restarts it; nothing unacknowledged is lost.
EXIT_STUCK = 75

# The agent takes up to RELEASE_EVERY events into the merge, for at most RELEASE_WITHIN seconds
# since it last applied, before it applies what the merge releases: a batch's own costs (its
# commit, the Kafka produce requests of its outputs and changelog records) are then paid once per
# batch, not once per event. A trickle of input is applied RELEASE_WITHIN after it started (the
# merge tick releases what no later input did), a burst at RELEASE_EVERY events; an event after a
# quiet spell at once. Measured at 1,000 usage/s: releasing at every pause in the input, batches
# held one event or two and the worker paid ~900 µs of CPU per event, mostly produce requests.
RELEASE_EVERY = 1_000
RELEASE_WITHIN = 0.02  # seconds; also the merge tick's interval


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker runs (as opposed to where things are, which is :class:`Settings`)."""

    app_id: str = "billing-ledger"
    store: str = "rocksdb://"  # memory:// for tests; rocksdb:// in production
    processing_guarantee: str = "at_least_once"
    # Idle seconds (counted from the end of the last rebalance at the earliest) after which the
    # worker reads an input that has unread data itself: a broken fetch delays billing, never
    # stops it, and the merge never passes over an input (which would bill out of order).
    stall_timeout: float = 5.0
    tick_interval: float = RELEASE_WITHIN  # how often buffered events are re-checked
    session_timeout: float = 30.0
    producer_linger: float = 0.005  # seconds
    stuck_seconds: float = 120.0  # no progress for this long: exit EXIT_STUCK, to be restarted
    web_port: int | None = None  # Faust's web server (account pages, metrics); None: disabled
    web_host: str = "127.0.0.1"  # where it listens; not loopback: web_token is required
    web_token: str | None = None
    worker_name: str = "worker"


def _load_watermark(stored: bytes) -> Watermark:
    return Watermark.from_record(orjson.loads(stored))


class _Input(NamedTuple):
    """One event of an input message, as the merge buffers it: ``index`` within its message (0
    but for a batch's records, ``batched``), ``last``: the last event of its message that the
    merge gets."""

    event: EventT
    canonical: dict[str, Any]
    repeat: bool
    index: int
    last: bool
    batched: bool


class _Batch:
    """What one release of a partition has changed so far, handed to the commit queue at its end."""

    __slots__ = ("before", "clock", "clock_key", "outputs", "partition", "states", "updated_at")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.states: dict[bytes, AccountEntry] = {}
        self.clock_key = f"partition-{partition}".encode()
        self.clock: Watermark | None = None
        self.outputs: list[Awaitable[Any]] = []  # delivery futures
        # Each touched account's snapshot before the batch (None: opened in it), and the event
        # time of the last input applied to it: its account-status record is written at the end
        # of the batch if the snapshot changed.
        self.before: dict[bytes, dict[str, Any] | None] = {}
        self.updated_at: dict[bytes, datetime] = {}

    def touch(self, key: bytes, entry: AccountEntry | None) -> None:
        """Remember the account's snapshot as the batch found it (first touch only)."""
        if key not in self.before:
            self.before[key] = None if entry is None else snapshot(entry.state)


class LedgerWorker:
    """Builds the Faust app and holds the per-process merge buffer."""

    def __init__(self, settings: Settings, ledger: Ledger, options: WorkerOptions,
                 metrics: WorkerMetrics | None = None) -> None:
        self.settings, self.options = settings, options
        self.codec = codec_for(settings)  # Avro, with registry framing iff the settings say so
        self.metrics = WorkerMetrics(settings.topics.inputs) if metrics is None else metrics
        topics = settings.topics
        self.kind_of_topic = {getattr(topics, kind): kind for kind in
                              ("usage", "payments", "accounts", "control")}
        datadir = settings.data_dir / "faust" / options.app_id  # RocksDB files, per app
        make_private(datadir)
        self.app = faust.App(
            options.app_id,
            broker=[f"kafka://{address}" for address in settings.kafka_bootstrap.split(",")],
            broker_credentials=settings.kafka_security.faust_credentials(),  # TLS/SASL, or None
            store=options.store,
            datadir=str(datadir),
            processing_guarantee=options.processing_guarantee,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            broker_session_timeout=options.session_timeout,
            broker_heartbeat_interval=heartbeat_interval(options.session_timeout),
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # Batch what one burst of events produces (changelog, outputs, rated usage): with
            # Faust's default of 0 every record is its own request and throughput collapses.
            producer_linger=options.producer_linger,
            producer_max_batch_size=256 * 1024,
            web_enabled=options.web_port is not None,
            web_port=options.web_port or 6066,
            web_bind=options.web_host,
            # Table routing forwards a request to the owner's canonical URL: on loopback, that
            # is the address the owner listens on (the host name may resolve elsewhere).
            **({"web_host": options.web_host} if is_loopback(options.web_host) else {}),
            key_serializer="raw",
            value_serializer="raw",
            autodiscover=False,
            table_standby_replicas=0,
            # Revocation and shutdown must not wait for every delivered message to be
            # acknowledged: the merge holds some back until the other inputs catch up, which they
            # do not while Faust has stopped fetching. What is not acknowledged is redelivered.
            stream_wait_empty=False,
        )
        self.inputs = self.app.topic(*topics.inputs, key_serializer="raw",
                                     value_serializer="raw")
        self.accounts = self.app.Table("accounts", partitions=settings.partitions,
                                       key_type=bytes, value_type=bytes)
        self.clock = self.app.Table("partition-clock", partitions=settings.partitions,
                                    key_type=bytes, value_type=bytes)
        # The accounts' event and payment ids, outside their records (streams/seen_table.py).
        self.seen_table = self.app.Table("seen-ids", partitions=settings.partitions,
                                         key_type=bytes, value_type=bytes)
        self.seen = TableSeenIds(lambda key: self._current(self.seen_table, key, bytes))
        self.ledger = ledger.with_seen(self.seen)
        if options.web_port is not None:
            install_account_views(self.app, self.accounts,
                                  lambda key: self._current(self.accounts, key, load_entry),
                                  options.web_token)
        self.merger = EventTimeMerger(tuple(self.kind_of_topic), {
            topic: KIND_RANK[kind] for topic, kind in self.kind_of_topic.items()})
        self.reader = BrokerReader(settings, options.app_id,
                                   read_committed=options.processing_guarantee == "exactly_once")
        self.sequence = InputSequence(self.reader, on_jump=self._log_jump)
        self.receiving = asyncio.Lock()  # one partition's offsets go into the merge in order
        # Monotonic time since which the agent has been waiting for input with nothing to do
        # (None while it is processing). Only an idle agent can tell a stalled input: a busy one,
        # or one blocked on a full producer buffer, is simply not reading yet.
        self.idle_since: float | None = None
        # When the partitions were last assigned or their recovery ended: right after a
        # rebalance every input is still unfetched, and an agent idle since before must not take
        # them for stalled.
        self.settled_at = time.monotonic()
        self.lock = asyncio.Lock()
        self.released_at = time.monotonic()  # when the merge was last released (RELEASE_WITHIN)
        # Batched sends on the app's producer; Faust's own under Kafka transactions, which
        # direct sends do not join (streams/sender.py).
        transactions = options.processing_guarantee == "exactly_once"
        sender = FaustSender(self.app) if transactions else BatchSender(
            partial(kafka_producer, self.app))
        self.publisher = Publisher(self.app, sender, self.codec, settings, self.ledger,
                                   self.metrics, options.worker_name)
        self.commits = CommitQueue(stall_seconds=options.stuck_seconds,
                                   sender=None if transactions else sender)
        self.commits.on_commit = self.metrics.committed
        self.app.agent(self.inputs, name="ledger")(self._consume)
        self.app.timer(options.tick_interval, name="merge-tick")(self._tick)
        self.app.task(self._run_committer)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_settled)
        self.app.on_rebalance_complete.connect(self._on_settled)
        self.app.on_before_shutdown.connect(self._on_shutdown)

    # -- input ---------------------------------------------------------------------------

    async def _consume(self, stream: faust.Stream) -> None:
        # Here, not in __init__: the consumer exists once the agent runs, and a scrape must not
        # make Faust create it from the metrics thread.
        self.metrics.set_lag_source(partial(received_lag, self.app.consumer.highwater,
                                            self.sequence.next_offset))
        commit_applied_offsets(self.app.consumer, self.commits.applied,
                               self.sequence.start_offset)
        inputs = stream.noack()
        taken_in = 0
        async for event in inputs.events():
            self.idle_since = None
            tp = event.message.tp
            async with self.receiving:
                try:
                    admitted = await self.sequence.admit(tp, event.message.offset)
                except Exception as error:  # Kafka unreachable: exit, to be restarted
                    self._exit_stuck(f"could not read skipped input of {tp}: {error!r}")
                try:
                    for message in admitted.missing:
                        await self._receive(FilledEvent(message, self.app.consumer))
                    # A repeat goes through too: the ledger skips it by the offsets in the
                    # account's state, and it is acknowledged only after the first copy.
                    await self._receive(event, repeat=admitted.repeat)
                except Exception as error:
                    self._exit_failed(error)
            taken_in += 1
            if (taken_in >= RELEASE_EVERY
                    or time.monotonic() - self.released_at >= RELEASE_WITHIN):
                try:
                    await self._release_all()
                except Exception as error:
                    self._exit_failed(error)
                taken_in = 0
            await self.commits.wait_for_room()
            self.idle_since = time.monotonic()

    async def _receive(self, event: EventT, repeat: bool = False) -> None:
        """Decode one input message; dead-letter it, or buffer its events in the merge (the
        next :meth:`_release_all` applies what it releases). A batch message (``usage_batch``)
        puts each record in the merge with its own event time; a record bad alone is
        dead-lettered alone. The message is acknowledged with its last event in the merge, or
        with its dead letters if none is valid. A repeat of an invalid message is not
        dead-lettered again: its first copy was, in a batch the commit queue commits before this
        one."""
        message = event.message
        if message.tp not in self.sequence.next_offset:
            return  # revoked while it was read: not acknowledged, the next owner gets it
        try:
            decoded = self._decode(message.topic, message.key, message.value)
        except InvalidEvent as error:
            decoded = [error]
        valid = [(index, item) for index, item in enumerate(decoded)
                 if not isinstance(item, InvalidEvent)]
        refused = [item for item in decoded if isinstance(item, InvalidEvent)]
        if refused:
            dead_letters = PendingBatch(message.partition, [] if valid else [event])
            if not repeat:
                for error in refused:
                    dead_letters.outputs.append(
                        await self.publisher.dead_letter(message, error.reason, error.field))
            self.commits.submit(dead_letters, ())
        if not valid:
            return
        ingested_at = None
        if message.timestamp is not None and message.timestamp >= 0:
            # The broker's append time (LogAppendTime topics): the acceptance window's clock.
            ingested_at = from_millis(round(message.timestamp * 1000))
        last = valid[-1][0]
        async with self.lock:
            for index, canonical in valid:
                if ingested_at is not None:
                    canonical["ingested_at"] = ingested_at
                self.merger.add(message.topic, message.partition,
                                millis_of(canonical["timestamp"]), message.offset,
                                _Input(event, canonical, repeat, index, index == last,
                                       len(decoded) > 1))

    def _log_jump(self, tp: TP, expected: int, delivered: int, read: int) -> None:
        self.metrics.read_directly(tp.topic, "skipped", read)
        log.warning("input_gap_filled topic=%s partition=%d expected=%d delivered=%d "
                    "read_from_kafka=%d", tp.topic, tp.partition, expected, delivered, read)

    def _decode(self, topic: str, key: bytes | None,
                value: bytes | None) -> list[dict[str, Any] | InvalidEvent]:
        """The message's events (a batch's records in order, each valid or refused alone); raises
        :class:`InvalidEvent` when the whole message is refused."""
        kind = self.kind_of_topic[topic]
        check_message_size(key, value, self.settings.max_message_bytes)
        if value is None:
            raise InvalidEvent("empty message value (tombstone) on an input topic")
        decoded = self.codec.decode_inputs(kind, value, self.ledger.config.max_id_bytes)
        canonical = next((item for item in decoded if not isinstance(item, InvalidEvent)), None)
        if canonical is None:
            return decoded
        expected_kind = TOPIC_OF_TYPE[canonical["type"]]
        if expected_kind != kind:
            raise InvalidEvent(f"{canonical['type']} events belong on the "
                               f"{getattr(self.settings.topics, expected_kind)} topic, not {topic}",
                               "type")
        account_key = canonical["account_id"].encode()
        if (key or b"") != account_key:
            raise InvalidEvent(f"message key {key!r} differs from account_id "
                               f"{canonical['account_id']!r}; key input by account_id so one "
                               "worker owns each account", "account_id")
        return decoded

    async def _tick(self) -> None:
        """Release events held back by a lagging input once it caught up; read an input Faust
        stopped delivering; exit if input is waiting but has not arrived for ``stuck_seconds``."""
        try:
            await self._release_all()
            await self._read_stalled_inputs()
        except Exception as error:
            self._exit_failed(error)
        reason = self._stuck_reason()
        if reason:
            self._exit_stuck(f"{reason} for {self.options.stuck_seconds:.0f} s")

    async def _read_stalled_inputs(self, most: int = 2_000) -> None:
        """Read up to ``most`` messages of each input that holds buffered events back and has
        data Faust has not delivered while the agent sat idle for ``stall_timeout`` (outside a
        rebalance): seen under heavy load, Faust's fetcher stops delivering a partition."""
        app, idle_since = self.app, self._idle_since_settled()
        if idle_since is None or time.monotonic() - idle_since < self.options.stall_timeout:
            return
        for partition in self.merger.partitions_with_pending():
            for topic in self.merger.waiting_for(partition):
                tp = TP(topic, partition)
                highwater = app.consumer.highwater(tp)
                if highwater is None or self._read_to_end(tp) is not False:
                    continue
                async with self.receiving:
                    start = self.sequence.next_offset.get(tp)
                    try:
                        messages = await self.sequence.read_ahead(
                            tp, highwater if start is None else min(highwater, start + most))
                    except Exception as error:  # Kafka unreachable: exit, to be restarted
                        self._exit_stuck(f"could not read stalled input {tp}: {error!r}")
                    self.metrics.read_directly(topic, "stalled", len(messages))
                    log.warning("input_stalled_read topic=%s partition=%d from=%s read=%d "
                                "highwater=%d", topic, partition, start, len(messages), highwater)
                    for message in messages:
                        await self._receive(FilledEvent(message, app.consumer))

    def _stuck_reason(self) -> str | None:
        """Why the worker makes no progress, if it does not: idle (not rebalancing or
        recovering, nothing waiting for a commit) for ``stuck_seconds``, and yet an input has
        messages after the last one received (Faust stopped fetching, seen under heavy load), or
        an input's committed offset stays before messages already applied (an offset that was
        never applied holds the commit back: see :mod:`streams.quirks.ack_offsets`). A restart
        resumes from the committed offsets."""
        app, idle_since = self.app, self._idle_since_settled()
        if (idle_since is None or time.monotonic() - idle_since < self.options.stuck_seconds
                or self.commits.pending_events):
            return None
        inputs = [tp for tp in app.consumer.assignment() if tp.topic in self.kind_of_topic]
        if any(self._read_to_end(tp) is False for tp in inputs):
            return "input waiting but nothing received"
        committed = committed_offsets(app.consumer)
        received = self.sequence.next_offset
        if any(received[tp] > (committed.get(tp) or 0) for tp in inputs if tp in received):
            return "commit behind applied input"
        return None

    def _read_to_end(self, tp: TP) -> bool | None:
        """Whether every message of input ``tp`` up to its log end has been received (counting
        from the committed offset before the first); None while its end is unknown."""
        consumer = self.app.consumer
        highwater = consumer.highwater(tp)
        if highwater is None:
            return None
        next_offset = self.sequence.next_offset.get(tp)
        if next_offset is None:
            next_offset = committed_offsets(consumer).get(tp) or 0
        return next_offset >= highwater

    def _exit_failed(self, error: Exception) -> NoReturn:
        """A send or a commit Kafka refused (a topic not authorized or deleted, a record too
        large): an infrastructure fault, never one event's (those are dead letters). Exit at once
        with the traceback: Faust's graceful stop would flush a producer that retries the refused
        send for ever (seen: a worker without WRITE on the status topic never exited)."""
        log.error("worker_failed error=%r", error, exc_info=error)
        self._exit_stuck(f"a send or commit failed: {error!r}")

    def _exit_stuck(self, why: str) -> NoReturn:
        """End the process at once: a graceful stop would wait on whatever is stuck (Faust
        flushes the producer and waits for its streams before its last offset commit)."""
        log.error("worker_stuck exiting=%d reason=%r", EXIT_STUCK, why)
        logging.shutdown()
        os._exit(EXIT_STUCK)

    def _may_skip(self, partition: int) -> Any:
        """Whether an input of ``partition`` with nothing buffered need not be waited for: only
        when it is read to its end (a stalled one is read by ``_read_stalled_inputs``). Asked
        once per input for one release (nothing is received while it runs)."""
        return cache(lambda topic: bool(self._read_to_end(TP(topic, partition))))

    async def _release_all(self) -> None:
        """Apply what the merge releases, one batch per partition (the agent and the tick)."""
        self.released_at = time.monotonic()
        async with self.lock:
            for partition in self.merger.partitions_with_pending():
                await self._release(partition)

    async def _release(self, partition: int) -> None:
        """Apply what the merge releases for ``partition``, as one batch.

        Each account's state is read once per batch and serialized once at its end (one
        changelog record instead of one per event); the batch then goes to the commit queue,
        which acknowledges its offsets only once its outputs and changelog records are delivered.
        """
        released = list(self.merger.release(partition, self._may_skip(partition)))
        if not released:
            return
        batch = _Batch(partition)
        # A table store reads a key from the database of the current event's partition
        # (RocksDB): the agent's current event is the last one received, maybe of another
        # partition, so one of the batch's own is made current.
        with as_current_event(released[-1][0]):
            for item in released:
                await self._apply(item, batch)
        await self._publish_statuses(batch)
        # A message is acknowledged with its last event (a batch's records may be released
        # over several batches): one still in the merge is redelivered whole.
        pending = PendingBatch(partition, [item.event for item in released if item.last],
                               batch.outputs)
        live: list[tuple[Any, bytes, Any]] = []
        for key, entry in batch.states.items():
            pending.writes.append(TableWrite(self.accounts, key, dump_entry(entry)))
            live.append((self.accounts, key, entry))
        if batch.clock is not None:
            pending.writes.append(TableWrite(self.clock, batch.clock_key,
                                             orjson.dumps(batch.clock.to_record())))
            live.append((self.clock, batch.clock_key, batch.clock))
        for key, value in self.seen.take_writes().items():
            pending.writes.append(TableWrite(self.seen_table, key, value or None))
            live.append((self.seen_table, key, value))
        self.commits.submit(pending, live)

    async def _run_committer(self) -> None:
        """The commit queue's task; a failed delivery stops the worker rather than acknowledge.

        A stalled one ends the process at once: a graceful stop would wait on the same
        stalled producer (Faust flushes it before its last offset commit)."""
        try:
            await self.commits.run()
        except asyncio.CancelledError:
            raise
        except CommitStalled as error:
            self._exit_stuck(f"commit stalled: {error}")
        except Exception as error:
            self._exit_failed(error)

    def _idle_since_settled(self) -> float | None:
        """Since when the agent has been idle, counting from the end of the last rebalance at
        the earliest; None while it is processing, or while a rebalance or recovery runs."""
        if self.idle_since is None or self.app.rebalancing or self.app.in_recovery:
            return None
        return max(self.idle_since, self.settled_at)

    async def _on_settled(self, sender: Any, *_: Any, **__: Any) -> None:
        """Partitions assigned, or their recovery complete: inputs are not stalled before."""
        self.settled_at = time.monotonic()

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        await self.reader.close()

    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Before partitions move: commit what was applied, drop what was only buffered (the
        new owner gets it redelivered). Faust does not wait for delivered messages to be
        acknowledged (``stream_wait_empty`` is off: events in the merge buffer wait for input
        Faust no longer fetches, so it would wait for ever); the queued batches get half the
        session timeout to commit, and the rest is discarded rather than written after the
        hand-over."""
        drained = await self.commits.drain(timeout=self.options.session_timeout / 2)
        await self.app.consumer.commit_and_end_transactions()
        self.seen.clear_cache()
        self.sequence.forget(revoked)
        self.commits.applied.forget(revoked)
        partitions = {tp.partition for tp in revoked}
        for partition in partitions:
            self.merger.drop_partition(partition)
        discarded = self.commits.discard_partitions(partitions, self._partition_of_key)
        log.info("partitions_revoked partitions=%s drained=%s uncommitted_events_discarded=%d",
                 sorted(partitions), drained, discarded)

    def _partition_of_key(self, table_name: str, key: bytes) -> int:
        """The partition of a key of one of the worker's tables (by account, or the clock's)."""
        if table_name == self.clock.name:
            return int(key.removeprefix(b"partition-"))
        if table_name == self.seen_table.name:
            key = account_of_key(key)
        return partition_of(key, self.settings.partitions)

    # -- the ledger ------------------------------------------------------------------------

    def _current(self, table: Any, key: bytes, load: Any) -> Any:
        """The newest value of a table entry: an uncommitted batch's, else the table's."""
        value = self.commits.get(table, key)
        if value is None:
            stored = table.get(key)
            value = load(stored) if stored else None
        return value

    def _entry(self, key: bytes, batch: _Batch) -> AccountEntry | None:
        return batch.states.get(key) or self._current(self.accounts, key, self._load_entry)

    def _load_entry(self, stored: bytes) -> AccountEntry:
        """A stored account record; one written before the ids moved out of it hands its ids
        to the ``seen-ids`` table (written with the batch), so an upgrade forgets no id."""
        entry = load_entry(stored)
        if entry.legacy_event_ids:
            for event_id, millis in entry.legacy_event_ids.items():
                if not self.seen.has_event(entry.state.account_id, millis // BUCKET_MS, event_id):
                    self.seen.add_event(entry.state.account_id, millis // BUCKET_MS, event_id)
            entry.legacy_event_ids = None
        return entry

    async def _apply(self, item: _Input, batch: _Batch) -> None:
        """Apply one released event. A ``repeat`` (an offset taken in before) the ledger refuses
        is not dead-lettered again: its first copy was, in a batch committed before this one."""
        event, canonical = item.event, item.canonical
        if canonical["type"] == "close_period" and not canonical["account_id"]:
            self.metrics.event_applied("close_period")
            await self._close_partition(batch, canonical["period"], canonical["event_id"],
                                        canonical["timestamp"], event.message.offset)
            return
        key = canonical["account_id"].encode()
        entry = self._entry(key, batch)
        batch.touch(key, entry)
        kind, offset = self.kind_of_topic[event.message.topic], event.message.offset
        if entry is not None and entry.includes(kind, offset, item.index):
            # Delivered again (its position is in the state): it changes nothing and emits
            # nothing. The state is written again all the same, in case a crash lost its
            # changelog record (see streams.commit).
            batch.states[key] = entry
            self.metrics.duplicate()
            return
        try:
            transition = self.ledger.apply(None if entry is None else entry.state, canonical)
        except InvalidEvent as error:
            if isinstance(error, LedgerFault):
                log.error("ledger_fault topic=%s partition=%d offset=%d account=%r",
                          event.message.topic, event.message.partition, offset,
                          canonical["account_id"][:64], exc_info=error.__cause__)
            if not item.repeat:
                reason, field = error.reason, error.field
                if item.batched:  # one record of a batch message: say which
                    reason = batch_record_reason(canonical["type"], item.index,
                                                 canonical["event_id"], reason)
                    field = batch_record_field(item.index, field)
                batch.outputs.append(
                    await self.publisher.dead_letter(event.message, reason, field))
            return
        assert transition.state is not None
        if entry is None:
            entry = AccountEntry(transition.state, {})
        entry.state = transition.state
        entry.record_input(kind, offset, item.index, item.last)
        batch.states[key] = entry
        batch.updated_at[key] = canonical["timestamp"]
        if transition.duplicate:  # a copy by event_id, or a retried payment: written again too
            self.metrics.duplicate()
            return
        self.metrics.event_applied(canonical["type"])
        batch.outputs.extend(await self.publisher.transition(key, transition))
        if canonical["type"] == "usage":
            await self._advance_watermark(batch, canonical["timestamp"])

    async def _publish_statuses(self, batch: _Batch) -> None:
        """Write the account-status record of every account whose snapshot the batch changed,
        once per account (billing rules section 6): balances included, so a gateway sees usage
        between state changes. Its version grows with every input applied to the account and is
        the same when a batch is applied again after a crash
        (:func:`billing.account_record.status_version`)."""
        for key, entry in batch.states.items():
            current = snapshot(entry.state)
            if current == batch.before.get(key):
                continue
            updated_at = batch.updated_at.get(key) or from_millis(entry.state.last_event_ms)
            record = status_record(current, updated_at, status_version(entry))
            batch.outputs.append(await self.publisher.status(key, record))

    async def _close_partition(self, batch: _Batch, period: str, cause_event_id: str,
                               timestamp: datetime, offset: int) -> None:
        """A broadcast close at control ``offset``: close ``period`` for every account this
        partition owns.

        An account it closes records the offset, like any input it applies. Delivered again (a
        crash before its offset commit), the close rewrites the state of those accounts: a
        SIGKILL can leave a state written to RocksDB whose changelog record was never delivered,
        and a silent account receives nothing else that would rewrite it (seen: 149 accounts
        whose changelog stayed in the closed month while their invoices were out)."""
        partitions = self.settings.partitions
        uncommitted = {key for name, key in self.commits.overlay if name == self.accounts.name}
        for key in set(self.accounts.keys()) | uncommitted | set(batch.states):
            if partition_of(key, partitions) != batch.partition:
                continue
            entry = self._entry(key, batch)
            if entry is None:
                continue
            batch.touch(key, entry)
            if entry.includes("control", offset):
                batch.states[key] = entry  # delivered again: rewrite, emit nothing
                continue
            if entry.state.open_period > period:
                continue
            transition = self.ledger.close_through(entry.state, period, cause_event_id,
                                                   timestamp)
            entry.state = transition.state
            entry.record_input("control", offset)
            batch.states[key] = entry
            batch.updated_at[key] = timestamp
            batch.outputs.extend(await self.publisher.transition(key, transition))

    # -- the watermark -------------------------------------------------------------------

    async def _advance_watermark(self, batch: _Batch, usage_time: datetime) -> None:
        """Track this partition's watermark (``billing.watermark``); broadcast the close of every
        month whose close time it passed (one ``close_period`` closes that month and all before
        it)."""
        if batch.clock is None:
            batch.clock = self._current(self.clock, batch.clock_key, _load_watermark) \
                or Watermark()
        closable = batch.clock.advance(self.ledger, usage_time)
        if closable is not None:
            batch.outputs.extend(await self.publisher.broadcast_close(closable))
