"""Every private attribute of Faust the worker touches, in one place, checked against the pinned
version at test time (``tests/test_faust_internals.py``).

Faust has no public way to read a partition's committed offset, to decide which offset its commit
takes, to make a table write go to a given partition outside the agent's own event, or to send
records in batches on its producer; the worker needs all four (see ``streams/README.md``). Each
is one small function here, so an upgrade of faust-streaming is reviewed against this file and
its test, and nowhere else.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import faust
from aiokafka.structs import TopicPartition
from faust.streams import _current_event
from faust.tables.base import Collection
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer
from faust.types import TP

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
    return missing
