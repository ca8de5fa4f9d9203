"""Every private attribute of Faust the worker touches, in one place, checked against the pinned
version at test time (``tests/test_faust_internals.py``).

Faust has no public way to read a partition's committed offset, to decide which offset its commit
takes, to make a table write go to a given partition outside the agent's own event, to send
records in batches on its producer, to tell how old its consumer's knowledge of a partition's
end is, or to set how its consumer's fetches wait; the worker needs all six (see
``streams/README.md``). Each
is one small function here, so an upgrade of faust-streaming is reviewed against this file and
its test, and nowhere else. One is a fix of Faust's own code: :func:`guard_recovery_seeks`, without
which a standby replica could crash a worker that is still recovering when the group rebalances.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.exceptions import ConsumerNotStarted
from faust.streams import _current_event
from faust.tables.base import Collection
from faust.tables.recovery import RebalanceAgain, Recovery
from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Producer
from faust.types import TP

log = logging.getLogger("billing.worker")

PINNED_VERSION = "0.15.3"  # the faust-streaming these were read from (pyproject.toml pins it)
# Attributes the consumer's __init__ must still set, and what they hold.
CONSUMER_ATTRIBUTES = ("_committed_offset", "_gap", "_acked", "_acked_index")


def committed_offsets(consumer: Any) -> Mapping[TP, int | None]:
    """Faust's view of each input partition's committed offset (after its seek or last commit)."""
    return consumer._committed_offset


def decide_commits(consumer: Any, new_offset: Callable[[TP], int | None]) -> None:
    """Make Faust's offset commit take ``new_offset(tp)`` for each partition (its own
    ``_new_offset`` reads its lists of acknowledged offsets, which the worker does not trust)."""
    consumer._new_offset = new_offset


def forget_acknowledged(consumer: Any, tp: TP) -> None:
    """Empty Faust's acknowledged offsets and gaps of ``tp``; the list is kept (empty) so that
    Faust's commit keeps asking for ``tp``."""
    consumer._gap.pop(tp, None)
    consumer._acked[tp].clear()
    consumer._acked_index[tp].clear()


def consider_for_commit(consumer: Any, tp: TP) -> None:
    """Make Faust's offset commit look at ``tp`` although nothing was acknowledged there: it
    only commits the partitions listed in its acknowledged offsets, and a partition whose new
    offsets hold no message (transaction markers) has none, so its commit never moved."""
    # A defaultdict: the key is what the commit iterates, and it passes the key on to aiokafka,
    # which takes its own TopicPartition only.
    consumer._acked[consumer_tp(tp)]


@contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's "current event": a table store picks its partition (RocksDB: its
    database) from it, and the commit queue writes outside the agent's own event."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def consumer_tp(tp: TP) -> TP:
    """``tp`` as the key Faust's aiokafka consumer files a message's acknowledgement under:
    aiokafka's ``TopicPartition``, which its messages carry. Equal to Faust's ``TP`` (both are
    named tuples), but under ``exactly_once`` Faust hands those keys to aiokafka's
    ``send_offsets_to_transaction`` as they are, and aiokafka refuses any other type ("Key
    should be TopicPartition instance": the consumer crashed at its first commit after the
    worker had acknowledged a message it read itself under a ``TP``)."""
    return TopicPartition(tp.topic, tp.partition)  # type: ignore[return-value]


def end_seen_at(consumer: Any, tp: TP) -> float | None:
    """When Faust's aiokafka consumer last learned the end (highwater) of ``tp`` from a fetch
    response, in wall-clock milliseconds (aiokafka's ``last_poll_timestamp``, which Faust does not
    pass on); None before its first fetch of ``tp``, or when ``tp`` is not assigned. Every
    message of ``tp`` delivered so far was fetched at or before it."""
    try:
        seen = consumer._thread._ensure_consumer().last_poll_timestamp(tp)
    except (AssertionError, AttributeError, ConsumerNotStarted):  # not assigned (any more)
        return None
    return None if seen is None else float(seen)


# -- the worker consumer's fetches ---------------------------------------------------------------

# Faust builds its worker consumer with a fixed fetch_max_wait_ms=1500 and aiokafka's
# fetch_min_bytes=1: a fetch returns as soon as one record is there (at 1,000 usage/s, hundreds of
# fetches a second, each a request and a response parsed on the consumer's thread), and one that
# asks only for quiet partitions is held for 1.5 s, during which aiokafka fetches nothing else from
# that broker. The apps registered here get their own values instead (weakly: an app that goes
# away leaves nothing behind).
#
# Faust also takes a partition out of its fetches while the agent's stream buffer is nearly full
# (Consumer.on_buffer_full) and puts it back once the buffer has drained (on_buffer_drop), but the
# wait for records already under way is not told: it waits out Faust's 1 s timeout on the
# partitions left, and with none left Faust sleeps 1 s. The stream drains its buffer in a
# fraction of that, then sat idle while the broker held a backlog (a fifth to a quarter of a
# drain, measured). For the registered apps, while a partition is out, a wait lasts one fetch wait
# at most.
_FETCH_SETTINGS: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
_faust_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
_faust_wait_next_records = Consumer._wait_next_records


def tune_fetches(app: Any, max_wait_ms: int, min_bytes: int) -> None:
    """Make the worker consumer of ``app`` wait for ``min_bytes`` per fetch, ``max_wait_ms`` at
    most (set on the aiokafka consumer Faust creates, before it starts its fetcher), and no longer
    than ``max_wait_ms`` for records while Faust holds a partition back for a full buffer."""
    _FETCH_SETTINGS[app] = (max_wait_ms, min_bytes)
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
    Consumer._wait_next_records = _wait_next_records


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _faust_create_worker_consumer(self, transport)
    settings = _FETCH_SETTINGS.get(self.app)
    if settings is not None:
        consumer._fetch_max_wait_ms, consumer._fetch_min_bytes = settings
    return consumer


async def _wait_next_records(self: Any, timeout: float) -> tuple[Any, Any]:
    settings = _FETCH_SETTINGS.get(self.app)
    if settings is None or not self._buffered_partitions or not self.flow_active:
        return await _faust_wait_next_records(self, timeout)
    wait = settings[0] / 1000
    if not self._get_active_partitions():  # every partition held back: Faust would sleep 1 s
        await asyncio.sleep(wait)
        return {}, set()
    return await _faust_wait_next_records(self, min(timeout, wait))


def kafka_producer(app: Any) -> Any:
    """The app's own started aiokafka producer (``AIOKafkaProducer``), for batched sends
    (``streams/sender.py``): Faust's ``Topic.send`` costs ~85 µs per record."""
    return app.producer._ensure_producer()


def persist_changelog_offset(table: Any, tp: TP, offset: int) -> None:
    """What Faust's ``Table._on_changelog_sent`` does when a changelog record it sent is
    delivered (outside a transaction): keep the offset in the table's store, so a restarted
    worker with its RocksDB files recovers only the changelog after it."""
    table.data.set_persisted_offset(tp, offset)


def missing_internals() -> list[str]:
    """What this module relies on and the installed Faust no longer has (empty when all is
    there)."""
    missing = [] if faust.__version__ == PINNED_VERSION else [
        f"faust-streaming {faust.__version__} is installed; these were read from {PINNED_VERSION}"]
    init = inspect.getsource(Consumer.__init__)
    missing += [f"Consumer.__init__ no longer sets self.{name}" for name in CONSUMER_ATTRIBUTES
                if f"self.{name} =" not in init]
    if "_new_offset" not in inspect.getsource(Consumer):
        missing.append("Consumer no longer calls _new_offset when it commits")
    if "self._producer = " not in inspect.getsource(Producer.on_start) or not hasattr(
            Producer, "_ensure_producer"):
        missing.append("the aiokafka Producer no longer keeps its producer in _producer")
    if "self.data.set_persisted_offset(" not in inspect.getsource(
            Collection._on_changelog_sent):
        missing.append("Table._on_changelog_sent no longer persists the changelog offset")
    if ("self._thread = " not in inspect.getsource(ThreadDelegateConsumer.__init__)
            or not hasattr(AIOKafkaConsumerThread, "_ensure_consumer")):
        missing.append("the aiokafka Consumer no longer keeps its aiokafka consumer's thread "
                       "in _thread")
    if "fetch_max_wait_ms=1500" not in inspect.getsource(_faust_create_worker_consumer):
        missing.append("Faust no longer creates its worker consumer with fetch_max_wait_ms=1500")
    waits = inspect.getsource(_faust_wait_next_records)
    missing += [f"Consumer._wait_next_records no longer has {text!r}" for text in (
        "active_partitions = self._get_active_partitions()", "timeout=timeout",
        "await self.sleep(1)") if text not in waits]
    if "self._buffered_partitions.add(tp)" not in inspect.getsource(Consumer.on_buffer_full):
        missing.append("Consumer.on_buffer_full no longer keeps the partitions it holds back "
                       "in _buffered_partitions")
    start = inspect.getsource(AIOKafkaConsumer.start)
    missing += [f"aiokafka's consumer no longer starts its fetcher with {name}=self._{name}"
                for name in ("fetch_max_wait_ms", "fetch_min_bytes")
                if f"{name}=self._{name}" not in start]
    missing += missing_recovery_internals()
    return missing


# -- the standby seek (Recovery._seek_offsets) ----------------------------------------------------

# What guard_recovery_seeks relies on in faust/tables/recovery.py, by method: the round
# (_restart_recovery) seeks the standby partitions through self._seek_offsets and restarts on
# RebalanceAgain, which its wait for the active partitions swallows; a rebalance (on_rebalance,
# _add) sets signal_recovery_start and adds partitions with the offset None; _seek_offsets maps
# only -1 to 0 before it seeks. When one of these changes, read the new recovery.py again: the
# fix may be needed no more, or elsewhere.
RECOVERY_SOURCES = {
    "_restart_recovery": ("self._seek_offsets)(", "except RebalanceAgain", "standby_offsets, "
                          '"standby"', "finish_span(self._actives_span, error=exc)"),
    "on_rebalance": ("self.signal_recovery_start.set()",),
    "_add": ("offsets.setdefault(tp, None)",),
    "_seek_offsets": ("if offset == -1:", "await consumer.seek_wait(new_offsets)"),
}


def seek_positions(tps: Iterable[TP], offsets: Mapping[TP, int | None],
                   rebalance_pending: bool) -> dict[TP, int] | None:
    """Where a recovery round seeks each changelog partition of ``tps`` (Faust's
    ``Recovery._seek_offsets``, fixed), or ``None``: restart the round, a newer rebalance is
    pending.

    Faust keeps one set of standby partitions and one of their offsets, and a rebalance rewrites
    both at once (``on_rebalance``), adding each new partition with the offset ``None`` for the
    next round to read from Kafka (``_build_offsets``). A round stops at its next step when it
    sees the rebalance (``_wait`` raises ``RebalanceAgain``), except while it waits for the
    active partitions to be read: an ``except Exception`` around that wait swallows
    ``RebalanceAgain`` and the round goes on ("Done reading from changelog topics") to its
    standby step, with the new rebalance's standby partitions. Their offset ``None`` reaches
    aiokafka's ``seek`` (on the consumer's thread), which raises "Offset must be a positive
    integer"; when that comes back before the rebalance signal is noticed, the ``Recovery``
    service crashes and the worker exits (2 of 6, then 1 of 4, two-worker starts with a standby
    replica: a worker alone, recovering, when the second one joins; ``BENCHMARKS.md``). So a pending
    rebalance restarts the round, as Faust does when it sees one elsewhere; an offset still
    unknown without one (not expected) reads the partition from its start, always correct (a
    changelog read again rewrites the same values), only slower. -1 ("nothing read yet") seeks
    to 0, as in Faust."""
    if rebalance_pending:
        return None
    positions = {}
    for tp in tps:
        offset = offsets.get(tp)
        positions[tp] = 0 if offset is None or offset < 0 else offset
    return positions


async def _seek_offsets_or_restart(recovery: Any, consumer: Any, tps: Iterable[TP],
                                   offsets: Mapping[TP, int | None], title: str) -> None:
    """``Recovery._seek_offsets`` by :func:`seek_positions`; ``RebalanceAgain`` restarts the
    round (``_restart_recovery`` catches it)."""
    positions = seek_positions(tps, offsets, recovery.signal_recovery_start.is_set())
    if positions is None:
        log.info("recovery_round_restarted seek=%s reason=a rebalance came during the round",
                 title)
        raise RebalanceAgain()
    await consumer.seek_wait(positions)


def guard_recovery_seeks(app: Any) -> None:
    """Replace the seek of ``app``'s recovery service (both of its seeks: active and standby
    partitions) with :func:`_seek_offsets_or_restart`; the app's own instance only, so
    another Faust app in the process keeps Faust's."""
    recovery = app.tables.recovery
    recovery._seek_offsets = types.MethodType(_seek_offsets_or_restart, recovery)


# -- the bulk restore before the round reads the active partitions (streams/quirks/bulk_restore.py)

# What restore_actives_in_bulk relies on: the round measures the active partitions' highwaters,
# then builds their start offsets (in this order, both under _wait and its request timeout), then
# seeks those offsets and reads only if a partition's highwater is past its offset
# (active_remaining); Faust's reading skips a record at or before the partition's offset.
BULK_RESTORE_SOURCES = {
    "_restart_recovery": ('consumer, assigned_active_tps, active_highwaters, "active"',
                          'consumer, assigned_active_tps, active_offsets, "active"',
                          "timeout=self.app.conf.broker_request_timeout"),
    "active_remaining": ("tp: highwater - offsets[tp]",),
    "_slurp_changelogs": ("if seen_offset is None or offset > seen_offset:",),
}


def restore_actives_in_bulk(app: Any, restore: Any) -> None:
    """After ``app``'s recovery round has built its active partitions' start offsets, let
    ``restore`` (a :class:`~streams.quirks.bulk_restore.BulkRestore`) write what lies between
    them and the highwaters and move the offsets past it; Faust's round then reads the rest.
    Its time budget is half the round's step timeout (``broker_request_timeout``): a step that
    outlives it makes mode's ``wait_first`` report the service stopped, which ends the recovery
    service for good."""
    recovery = app.tables.recovery
    build_offsets = recovery._build_offsets
    budget = app.conf.broker_request_timeout / 2

    async def build_then_restore(consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await build_offsets(consumer, tps, destination, title)
        if title == "active":
            await restore.restore(recovery.tp_to_table, tps, destination,
                                  recovery.active_highwaters, budget)

    recovery._build_offsets = build_then_restore


def missing_recovery_internals() -> list[str]:
    """What :func:`guard_recovery_seeks` and :func:`restore_actives_in_bulk` rely on and the
    installed Faust no longer has."""
    missing = []
    for name, fragments in [*RECOVERY_SOURCES.items(), *BULK_RESTORE_SOURCES.items()]:
        source = _recovery_source(name)
        missing += [f"Recovery.{name} no longer has {fragment!r}" for fragment in fragments
                    if fragment not in source]
    restart = _recovery_source("_restart_recovery")
    highwaters, offsets = BULK_RESTORE_SOURCES["_restart_recovery"][:2]
    if highwaters in restart and offsets in restart and (
            restart.index(highwaters) > restart.index(offsets)):
        missing.append("Recovery._restart_recovery builds the active offsets before the "
                       "highwaters")
    return missing


def _recovery_source(name: str) -> str:
    method = getattr(Recovery, name)
    return inspect.getsource(getattr(method, "fun", method))  # a Service.task wraps it
