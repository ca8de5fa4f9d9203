"""The Faust worker: input topics -> event-time merge -> ledger -> account-state.

One agent consumes the four co-partitioned input topics. Each message is decoded and validated
(bad input goes to ``billing.dead-letter`` with a reason, and is acknowledged), buffered in the
:class:`~streams.merge.EventTimeMerger`, and applied to the account's state in event-time order by
the pure ledger. The state lives in the ``accounts`` table, whose changelog topic (compacted) is
what a restarted worker recovers from. Outputs go to ``billing.account-state``, rated usage to
``billing.usage-rated``; both keyed by account so they stay co-partitioned with the inputs.

Month close. Each partition tracks its watermark (largest usage time) in the ``partition_clock``
table. When it passes a month's close time the worker broadcasts a ``close_period`` with the
deterministic id ``watermark:YYYY-MM`` and no account to every partition of the control topic, so
accounts that fell silent close too, on every worker, at the same point of event time.

Offsets are acknowledged only once an event has been applied (``noack`` stream), so an event still
waiting in the merge buffer is redelivered after a crash, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.streams import _current_event
from faust.types import TP, EventT

from billing.codec import decode_input, encode
from billing.deadletter import make_dead_letter
from billing.events import TOPIC_OF_TYPE, InvalidEvent
from billing.ledger import WATERMARK_CAUSE_PREFIX, AccountState, Ledger, Transition
from billing.ledger import to_millis as millis_of
from billing.settings import Settings
from streams.merge import KIND_RANK, EventTimeMerger
from streams.state_store import dump_state, load_state

log = logging.getLogger("billing.worker")


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker runs (as opposed to where things are, which is :class:`Settings`)."""

    app_id: str = "billing-ledger"
    store: str = "rocksdb://"  # memory:// for tests; rocksdb:// in production
    processing_guarantee: str = "at_least_once"
    stall_timeout: float = 5.0  # idle seconds after which an input with unread data is passed over
    tick_interval: float = 0.1  # how often buffered events are re-checked without new input
    session_timeout: float = 30.0
    producer_linger: float = 0.005  # seconds
    web_port: int | None = None  # Faust's web server (metrics); None: disabled
    worker_name: str = "worker"


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every producer of the input topics uses."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _Batch:
    """What one release of a partition has changed so far, written back at its end."""

    __slots__ = ("clock", "clock_key", "partition", "states")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.states: dict[bytes, AccountState] = {}
        self.clock_key = f"partition-{partition}".encode()
        self.clock: dict[str, Any] | None = None


class LedgerWorker:
    """Builds the Faust app and holds the per-process merge buffer."""

    def __init__(self, settings: Settings, ledger: Ledger, options: WorkerOptions) -> None:
        self.settings, self.ledger, self.options = settings, ledger, options
        topics = settings.topics
        self.kind_of_topic = {getattr(topics, kind): kind for kind in
                              ("usage", "payments", "accounts", "control")}
        datadir = settings.data_dir / "faust" / options.app_id  # RocksDB files, per app
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            options.app_id,
            broker=[f"kafka://{address}" for address in settings.kafka_bootstrap.split(",")],
            store=options.store,
            datadir=str(datadir),
            processing_guarantee=options.processing_guarantee,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            broker_session_timeout=options.session_timeout,
            broker_heartbeat_interval=min(3.0, options.session_timeout / 4),
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # Batch what one burst of events produces (changelog, outputs, rated usage): with
            # Faust's default of 0 every record is its own request and throughput collapses.
            producer_linger=options.producer_linger,
            producer_max_batch_size=256 * 1024,
            web_enabled=options.web_port is not None,
            web_port=options.web_port or 6066,
            web_bind="127.0.0.1",
            key_serializer="raw",
            value_serializer="raw",
            autodiscover=False,
            table_standby_replicas=0,
        )
        self.inputs = self.app.topic(*topics.inputs, key_serializer="raw",
                                     value_serializer="raw")
        self.account_state = self.app.topic(topics.account_state)
        self.usage_rated = self.app.topic(topics.usage_rated)
        self.dead_letter = self.app.topic(topics.dead_letter)
        self.control = self.app.topic(topics.control)
        self.accounts = self.app.Table("accounts", partitions=settings.partitions,
                                       key_type=bytes, value_type=bytes)
        self.clock = self.app.Table("partition-clock", partitions=settings.partitions,
                                    key_type=bytes, value_type=bytes)
        self.merger = EventTimeMerger(tuple(self.kind_of_topic), {
            topic: KIND_RANK[kind] for topic, kind in self.kind_of_topic.items()})
        self.last_received: dict[TP, int] = {}
        # Monotonic time since which the agent has been waiting for input with nothing to do
        # (None while it is processing). Only an idle agent can tell a stalled input: a busy one,
        # or one blocked on a full producer buffer, is simply not reading yet.
        self.idle_since: float | None = None
        self.lock = asyncio.Lock()
        self.app.agent(self.inputs, name="ledger")(self._consume)
        self.app.timer(options.tick_interval, name="merge-tick")(self._tick)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    # -- input ---------------------------------------------------------------------------

    async def _consume(self, stream: faust.Stream) -> None:
        async for event in stream.noack().events():
            self.idle_since = None
            message = event.message
            self.last_received[message.tp] = message.offset
            try:
                canonical = self._decode(message.topic, message.key, message.value)
            except InvalidEvent as error:
                await self._send_dead_letter(event, error.reason, error.field)
                event.ack()
                continue
            async with self.lock:
                self.merger.add(message.topic, message.partition,
                                millis_of(canonical["timestamp"]), message.offset,
                                (event, canonical))
                await self._release(message.partition)
            self.idle_since = time.monotonic()

    def _decode(self, topic: str, key: bytes | None, value: bytes | None) -> dict[str, Any]:
        kind = self.kind_of_topic[topic]
        if value is None:
            raise InvalidEvent("empty message value (tombstone) on an input topic")
        canonical = decode_input(kind, value)
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
        return canonical

    async def _tick(self) -> None:
        """Release events held back by a lagging input once it caught up or waited too long."""
        async with self.lock:
            for partition in self.merger.partitions_with_pending():
                await self._release(partition)

    def _may_skip(self, partition: int) -> Any:
        """Whether an input of ``partition`` with nothing buffered need not be waited for:
        it is read to its end, or it has data but the agent has sat idle for ``stall_timeout``."""
        consumer = self.app.consumer
        now = time.monotonic()

        def may_skip(topic: str) -> bool:
            tp = TP(topic, partition)
            highwater = consumer.highwater(tp)
            last = self.last_received.get(tp)
            if highwater is not None:
                if last is not None and last + 1 >= highwater:
                    return True
                committed = consumer._committed_offset.get(tp)  # Faust has no public accessor
                if last is None and (highwater == 0 or (committed or 0) >= highwater):
                    return True
            stalled = (self.idle_since is not None
                       and now - self.idle_since > self.options.stall_timeout)
            if stalled:
                log.warning("input_stalled topic=%s partition=%d highwater=%s last_offset=%s",
                            topic, partition, highwater, last)
            return stalled

        return may_skip

    async def _release(self, partition: int) -> None:
        """Apply what the merge releases for ``partition``, as one batch.

        Each account's state is read from the table once per batch and written back once at
        the end (one changelog record instead of one per event), and the batch's offsets are
        acknowledged only after that write, so a crash can only make Faust redeliver them.
        """
        released = list(self.merger.release(partition, self._may_skip(partition)))
        if not released:
            return
        # Table writes go to the changelog partition of the "current event": make it one of
        # the batch's events (all have this partition number, by co-partitioning).
        token = _current_event.set(weakref.ref(released[-1][0]))
        try:
            batch = _Batch(partition)
            for event, canonical in released:
                await self._apply(event, canonical, batch)
            written = [self._persist(self.accounts, key, dump_state(state), partition)
                       for key, state in batch.states.items()]
            if batch.clock is not None:
                written.append(self._persist(self.clock, batch.clock_key,
                                             orjson.dumps(batch.clock), partition))
            await asyncio.gather(*written)
        finally:
            _current_event.reset(token)
        for event, _ in released:
            event.ack()

    @staticmethod
    def _persist(table: Any, key: bytes, value: bytes, partition: int) -> Any:
        """Write a table entry and its changelog record; return the record's delivery future.

        The batch's events are acknowledged only once every record is delivered. With plain
        ``table[key] = value`` they could be acknowledged while the record still sat in Faust's
        send-soon buffer, whose flush before an offset commit returns after 0.1 s even when
        records are still queued: a stop at that moment committed the offset and lost the change.
        """
        table.data[key] = value
        return table.send_changelog(partition, key, value)

    def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        for tp in revoked:
            self.last_received.pop(tp, None)
        for partition in {tp.partition for tp in revoked}:
            self.merger.drop_partition(partition)

    # -- the ledger ------------------------------------------------------------------------

    def _state(self, key: bytes, batch: _Batch) -> AccountState | None:
        state = batch.states.get(key)
        if state is None:
            stored = self.accounts.get(key)
            state = load_state(stored) if stored else None
        return state

    async def _apply(self, event: EventT, canonical: dict[str, Any], batch: _Batch) -> None:
        if canonical["type"] == "close_period" and not canonical["account_id"]:
            await self._close_partition(batch, canonical["period"], canonical["event_id"],
                                        canonical["timestamp"])
            return
        key = canonical["account_id"].encode()
        state = self._state(key, batch)
        if state is not None and canonical["event_id"] in state.recent_event_ids:
            return  # a duplicate changes nothing and emits nothing
        try:
            transition = self.ledger.apply(state, canonical)
        except InvalidEvent as error:
            await self._send_dead_letter(event, error.reason, error.field)
            return
        assert transition.state is not None
        batch.states[key] = transition.state
        await self._publish(key, transition)
        if canonical["type"] == "usage":
            await self._advance_watermark(batch, canonical["timestamp"])

    async def _publish(self, key: bytes, transition: Transition) -> None:
        """Send outputs now (``force``: not Faust's publish-on-commit attachments, which hold
        every message until the commit and then send them one by one). The producer is flushed
        before each offset commit either way, so nothing is committed before it is sent."""
        for output in transition.outputs:
            await self.account_state.send(key=key, value=encode("account_state", output),
                                          force=True)
        if transition.rated_usage is not None:
            await self.usage_rated.send(key=key, force=True,
                                        value=encode("usage_rated", transition.rated_usage))

    async def _close_partition(self, batch: _Batch, period: str, cause_event_id: str,
                               timestamp: datetime) -> None:
        """A broadcast close: close ``period`` for every account this partition owns."""
        partitions = self.settings.partitions
        for key in set(self.accounts.keys()) | set(batch.states):
            if partition_of(key, partitions) != batch.partition:
                continue
            state = self._state(key, batch)
            if state is None or state.open_period > period:
                continue
            transition = self.ledger.close_through(state, period, cause_event_id, timestamp)
            batch.states[key] = state
            await self._publish(key, transition)

    # -- the watermark -------------------------------------------------------------------

    async def _advance_watermark(self, batch: _Batch, usage_time: datetime) -> None:
        """Track this partition's largest usage time; broadcast the close of every month whose
        close time it passed (one ``close_period`` closes that month and all before it)."""
        if batch.clock is None:
            stored = self.clock.get(batch.clock_key)
            batch.clock = orjson.loads(stored) if stored else {"watermark_ms": 0,
                                                               "closed_through": None}
        clock = batch.clock
        usage_ms = millis_of(usage_time)
        if usage_ms <= clock["watermark_ms"]:
            return
        clock["watermark_ms"] = usage_ms
        closable = self.ledger.closable_through(usage_time)
        if clock["closed_through"] is None or closable > clock["closed_through"]:
            clock["closed_through"] = closable
            await self._broadcast_close(closable)

    async def _broadcast_close(self, period: str) -> None:
        close = {"type": "close_period", "event_id": WATERMARK_CAUSE_PREFIX + period,
                 "account_id": "", "timestamp": self.ledger.watermark_close_time(period),
                 "period": period}
        value = encode("control", close)
        for partition in range(self.settings.partitions):
            await self.control.send(key=b"", value=value, partition=partition, force=True)
        log.info("watermark_close_broadcast period=%s partitions=%d", period,
                 self.settings.partitions)

    # -- dead letters --------------------------------------------------------------------

    async def _send_dead_letter(self, event: EventT, reason: str, field: str | None) -> None:
        message = event.message
        log.warning("dead_letter topic=%s partition=%d offset=%d reason=%r", message.topic,
                    message.partition, message.offset, reason)
        await self.dead_letter.send(
            force=True,
            key=message.key,
            value=make_dead_letter(reason=reason, field=field, key=message.key,
                                   value=message.value, topic=message.topic,
                                   partition=message.partition, offset=message.offset,
                                   worker=self.options.worker_name))
