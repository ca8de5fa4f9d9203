"""Each input partition's messages in offset order, none missing: the worker's check on Faust.

The event-time merge and the ledger need every input partition's messages in offset order. Faust
does not guarantee that around a restart or rebalance: its recovery resumes fetching before it seeks
to the committed offsets, so messages arrive twice, and its stream skips messages that arrive while
flow control is off or from an older generation (seen: a partition went from offset 208 to 213;
after a SIGKILL, the first message delivered was 3,605 offsets past the committed one; see
streams/README.md). A skipped message would be applied after later ones, or never, and the account's
state would differ from ``billing replay``.

:class:`InputSequence` keeps, per input partition, the next offset the worker must receive: at the
first message after an assignment, the group's committed offset (where this owner must start); then
one past the last offset received. A message beyond it is a jump, and the worker reads the messages
in between from Kafka itself (:class:`~streams.quirks.broker_reader.BrokerReader`) and takes them
first. A message before it is a copy of one already received, which the ledger recognises by the
offsets each account's state holds. The worker also reads ahead itself when Faust stops delivering a
partition that has data (:meth:`InputSequence.read_ahead`), so the merge never has to pass over an
input, which would bill its events out of order.

Not every offset holds a message. A Kafka transaction leaves a marker (a control record) in each
partition it wrote, and a marker takes an offset that no consumer ever receives; under
``read_committed`` (the worker's isolation level under ``--guarantee exactly_once``) neither are
the records of an aborted transaction. Any producer that writes an input in transactions (a
gateway, a connector; under ``exactly_once``, the worker's own month-close broadcasts did too)
leaves such offsets. One is never delivered, so the worker could neither commit past it nor count
its partition as read to its end: it exited as stuck every ``--stuck-seconds``. So every read from
Kafka here also names the offsets of its range that hold no message it can receive
(:data:`EmptyListener`): they are done as soon as they are found, and the offset commit passes
them (:mod:`streams.quirks.ack_offsets`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from faust.types import TP, Message

# Told of each jump: partition, offset expected, offset delivered, messages read in between.
JumpListener = Callable[[TP, int, int, int], None]
# Told of the offsets of a partition that a read from Kafka found holding no message this worker
# can receive (transaction markers, aborted records): partition, offsets in order.
EmptyListener = Callable[[TP, list[int]], None]


class RangeReader(Protocol):
    """Where the messages come from: Kafka, through
    :class:`~streams.quirks.broker_reader.BrokerReader`."""

    async def start_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Per partition, the group's committed offset, or the log start if it has none."""

    async def read(self, tp: TP, start: int, end: int) -> list[Message]:
        """Every message of ``tp`` at offsets ``start`` to ``end - 1`` that the worker's
        consumer can receive, in offset order; an offset of the range without one holds none
        (a transaction marker, or an aborted record under ``read_committed``)."""


@dataclass
class Admitted:
    """What the worker takes in for one delivered message, in this order: ``missing`` (read from
    Kafka to close a jump), then the message itself, a copy when ``repeat`` is true."""

    missing: list[Message]
    repeat: bool


class FilledEvent:
    """A message the worker read itself, shaped like the Faust event the worker handles: it has
    the ``message`` (the commit queue records its offset as applied, see
    streams.quirks.ack_offsets) and is acknowledged to Faust's consumer like any delivered one."""

    __slots__ = ("__weakref__", "_consumer", "message")

    def __init__(self, message: Message, consumer: Any) -> None:
        self.message = message
        self._consumer = consumer

    def ack(self) -> bool:
        return bool(self._consumer.ack(self.message))


class InputSequence:
    """The next offset to receive per input partition, and the reads that keep it gap-free."""

    def __init__(self, reader: RangeReader, on_jump: JumpListener | None = None,
                 on_empty: EmptyListener | None = None) -> None:
        self.reader = reader
        self.on_jump = on_jump
        self.on_empty = on_empty
        self.next_offset: dict[TP, int] = {}
        # The group's committed offset read at the first message after an assignment (where the
        # offset commit starts while Faust has not sought yet: see streams.quirks.ack_offsets).
        self.start_offset: dict[TP, int] = {}
        # Bumped by every forget(): a read that was under way then must not record its end, which
        # belongs to the previous assignment.
        self._generation = 0

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked or (re)assigned: their start is the committed offset again."""
        self._generation += 1
        for tp in tps:
            self.next_offset.pop(tp, None)
            self.start_offset.pop(tp, None)

    async def admit(self, tp: TP, offset: int) -> Admitted:
        """Account for the delivered message at ``offset``: read what it skipped, if anything."""
        generation = self._generation
        expected = await self._expected(tp)
        if offset < expected:
            return Admitted([], repeat=True)
        missing = await self.reader.read(tp, expected, offset) if offset > expected else []
        if offset > expected:
            if self.on_jump is not None:
                self.on_jump(tp, expected, offset, len(missing))
            self._found_empty(tp, expected, offset, missing, generation)
        self._advance(tp, offset + 1, generation)
        return Admitted(missing, repeat=False)

    async def read_ahead(self, tp: TP, end: int) -> list[Message]:
        """Read ``tp`` from its next offset up to ``end`` (Faust delivers nothing although the
        partition has data); Faust's own copies of them come later as repeats."""
        generation = self._generation
        start = await self._expected(tp)
        if end <= start:
            return []
        messages = await self.reader.read(tp, start, end)
        self._found_empty(tp, start, end, messages, generation)
        self._advance(tp, end, generation)
        return messages

    def _found_empty(self, tp: TP, start: int, end: int, messages: list[Message],
                     generation: int) -> None:
        """Tell ``on_empty`` the offsets from ``start`` to ``end - 1`` that a complete read of
        that range did not return (the reader reads every message of its range, or raises)."""
        if self.on_empty is None or generation != self._generation:
            return
        read = {message.offset for message in messages}
        empty = [offset for offset in range(start, end) if offset not in read]
        if empty:
            self.on_empty(tp, empty)

    async def _expected(self, tp: TP) -> int:
        expected = self.next_offset.get(tp)
        if expected is None:
            generation = self._generation
            expected = (await self.reader.start_offsets([tp]))[tp]
            if generation == self._generation:
                self.start_offset[tp] = expected
            self._advance(tp, expected, generation)
        return expected

    def _advance(self, tp: TP, next_offset: int, generation: int) -> None:
        if generation == self._generation:
            self.next_offset[tp] = next_offset

