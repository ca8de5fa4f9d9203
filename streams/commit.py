"""Group commit: each batch's effects reach Kafka in the one order that survives a crash.

A batch the worker applies has three effects: its outputs (account-state events, rated usage, dead
letters, watermark broadcasts), its new table values (changelog records), and the acknowledgement
of its input offsets. A worker can be killed between any two of them; this order makes every such
crash harmless:

1. **outputs delivered.** Killed before this: the inputs are redelivered, the table never saw the
   batch, so the ledger applies it again and emits the same outputs with the same deterministic ids
   (consumers and ClickHouse drop the copies).
2. **table written, changelog delivered**, in two steps: the other tables' records (the account
   states, the partition clock) first, the ``later_tables``' (the seen ids) once those are
   delivered. Killed before this: as in 1. Killed between the two steps: the states hold the batch
   and the seen ids do not; the redelivered inputs are recognised by the input positions the
   states hold, and their ids are recorded again (``Ledger.remember_again``). The other order lost
   money: seen ids ahead of the state made a worker that rebuilt the partition from the changelog
   (a takeover by another worker, a standby copy, a memory store) drop the redelivered events as
   copies of themselves (seen: a $10 purchase lost after a SIGKILL).
3. **inputs acknowledged.** Killed before the offset commit: the inputs are redelivered to a state
   that has them; the ledger skips them as duplicates, and their outputs are already out. (The
   worker rewrites the state of an account that receives a duplicate, so a changelog record that a
   crash lost behind a locally written RocksDB value is rewritten before the duplicate is
   acknowledged.)

Waiting for these deliveries inside the agent would allow one batch per broker round trip. Instead
the agent hands each batch to this queue and goes on with the next; a single committer task takes,
in order, every batch whose outputs are delivered, writes their table values in one group (the last
value of each key), waits for the changelog, then acknowledges. Until a batch is committed its
account states are served from :attr:`CommitQueue.overlay`, so later batches build on them.

A delivery that never completes (seen rarely under heavy load: the aiokafka producer stops
completing batches without an error, and Faust's offset commit then waits on its flush forever)
would wedge the worker silently. The committer bounds every wait by ``stall_seconds`` and raises
:class:`CommitStalled`; the worker then exits for its supervisor to restart it, which loses nothing:
whatever was not acknowledged is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP, EventT

from streams.quirks.ack_offsets import AppliedOffsets
from streams.quirks.faust_internals import as_current_event, persist_changelog_offset
from streams.sender import BatchSender

log = logging.getLogger("billing.worker.commit")


class CommitStalled(RuntimeError):
    """Kafka did not confirm a delivery within the stall timeout."""


@dataclass
class TableWrite:
    """One new table value: serialized when the batch ended (a later batch may change the live
    object), written and sent to the changelog only at commit."""

    table: Any  # faust Table
    key: bytes
    value: bytes | None  # None: delete the key (a changelog tombstone)


@dataclass
class PendingBatch:
    """A batch applied in memory, waiting for its outputs to be delivered."""

    partition: int
    events: list[EventT]  # to acknowledge once committed
    outputs: list[Awaitable[Any]] = field(default_factory=list)
    writes: list[TableWrite] = field(default_factory=list)
    sequence: int = 0
    # An event of the partition, made current while the writes are written (the last of
    # ``events`` when None): a month close's batch may have none to acknowledge.
    current: EventT | None = None


class CommitQueue:
    """Orders and groups the durable effects of the worker's batches (see the module docstring)."""

    def __init__(self, max_pending_events: int = 20_000, stall_seconds: float = 120.0,
                 sender: BatchSender | None = None, later_tables: Iterable[str] = ()) -> None:
        self.max_pending_events = max_pending_events
        # Tables whose values are written and delivered only once every other table's values of
        # the same group are delivered (step 2 of the module docstring).
        self.later_tables = frozenset(later_tables)
        # Changelog records go out in batches through ``sender``; None: through Faust's
        # ``send_changelog``, one by one (Kafka transactions, see streams/sender.py).
        self.sender = sender
        self.stall_seconds = stall_seconds
        # (table name, key) -> (live value, sequence of the last batch that wrote it).
        self.overlay: dict[tuple[str, bytes], tuple[Any, int]] = {}
        self._batches: deque[PendingBatch] = deque()
        self._sequence = 0
        self._pending_events = 0
        # Batches queued and not yet committed (or discarded): a month close's batch may have no
        # event to acknowledge, so the events alone do not say the queue is empty.
        self._uncommitted = 0
        self._work = asyncio.Event()
        self._changed = asyncio.Condition()
        self.on_commit: Callable[[int, float], None] | None = None  # (events, seconds): metrics
        # What the offset commit may pass: the offsets of committed batches
        # (streams.quirks.ack_offsets).
        self.applied = AppliedOffsets()

    # -- the agent's side ------------------------------------------------------------------

    def get(self, table: Any, key: bytes) -> Any:
        """The newest value of ``key``: an uncommitted batch's, else None (read the table)."""
        entry = self.overlay.get((table.name, key))
        return None if entry is None else entry[0]

    def submit(self, batch: PendingBatch, live_values: Iterable[tuple[Any, bytes, Any]]) -> None:
        """Queue ``batch``; ``live_values`` are (table, key, object) to serve until it commits."""
        self._sequence += 1
        batch.sequence = self._sequence
        for table, key, value in live_values:
            self.overlay[(table.name, key)] = (value, batch.sequence)
        self._batches.append(batch)
        self._pending_events += len(batch.events)
        self._uncommitted += 1
        self._work.set()

    @property
    def pending_events(self) -> int:
        """Events applied and not yet acknowledged."""
        return self._pending_events

    async def wait_for_room(self) -> None:
        """Backpressure: hold the agent while too many events wait for their commit."""
        if self._pending_events <= self.max_pending_events:
            return
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._pending_events <= self.max_pending_events)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued batch is committed (before partitions are handed over)."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._uncommitted == 0), timeout)
            except TimeoutError:
                log.warning("commit_drain_timeout pending_events=%d", self._pending_events)
                return False
        return True

    def discard_partitions(self, partitions: set[int],
                           partition_of: Callable[[str, bytes], int]) -> int:
        """Forget the uncommitted batches and overlay values of ``partitions`` (revoked).

        Their events are not acknowledged, so the partitions' next owner gets them again and
        applies them to the state in the changelog: it emits the same outputs (same ids) again
        and writes the changelog itself. Committing them here instead, after the revocation,
        could write this worker's stale values into the changelog after the new owner's (a
        zombie writer), which loses the new owner's changes. Returns the events discarded.
        """
        kept = deque(batch for batch in self._batches if batch.partition not in partitions)
        discarded = sum(len(batch.events) for batch in self._batches) - sum(
            len(batch.events) for batch in kept)
        dropped = len(self._batches) - len(kept)
        self._uncommitted -= dropped
        self._batches = kept
        self._pending_events -= discarded
        if dropped:
            asyncio.get_running_loop().create_task(self._notify_room())
        for name_key in [name_key for name_key in self.overlay
                         if partition_of(*name_key) in partitions]:
            del self.overlay[name_key]
        return discarded

    async def _notify_room(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the committer -----------------------------------------------------------------------

    async def run(self) -> None:
        """The committer task: forever, commit what is ready, in order."""
        while True:
            await self._work.wait()
            self._work.clear()
            while self._batches:
                head = self._batches[0]
                await self._delivered(head.outputs, "outputs")
                if not self._batches or self._batches[0] is not head:
                    continue  # discarded while its outputs were in flight (a revocation)
                group = [self._batches.popleft()]
                while self._batches and all(output.done() for output in self._batches[0].outputs):
                    group.append(self._batches.popleft())
                for batch in group:  # surface a failed delivery before anything is written
                    for output in batch.outputs:
                        output.result()
                await self._commit(group)

    async def _commit(self, group: list[PendingBatch]) -> None:
        started = asyncio.get_running_loop().time()
        latest: dict[tuple[str, bytes], tuple[PendingBatch, TableWrite]] = {}
        for batch in group:
            for write in batch.writes:
                latest[(write.table.name, write.key)] = (batch, write)
        first: list[tuple[PendingBatch, TableWrite]] = []
        later: list[tuple[PendingBatch, TableWrite]] = []
        for batch, write in latest.values():
            (later if write.table.name in self.later_tables else first).append((batch, write))
        deliveries: list[Awaitable[Any]] = []
        for step in (first, later):  # the second only once the first is delivered
            sent = [await self._write(batch, write) for batch, write in step]
            await self._delivered(sent, "changelog records")
            deliveries += sent
        if self.sender is not None:
            self._persist_offsets(first + later, deliveries)
        events = 0
        for batch in group:
            for event in batch.events:
                self.applied.add(event.message.tp, event.message.offset)
                event.ack()
            events += len(batch.events)
        for name_key, (batch, _) in latest.items():
            entry = self.overlay.get(name_key)
            if entry is not None and entry[1] == batch.sequence:
                del self.overlay[name_key]
        async with self._changed:
            self._pending_events -= events
            self._uncommitted -= len(group)
            self._changed.notify_all()
        if self.on_commit is not None:
            self.on_commit(events, asyncio.get_running_loop().time() - started)

    async def _delivered(self, deliveries: list[Awaitable[Any]], what: str) -> None:
        """Wait for ``deliveries`` (records of one batch share its delivery future: each is
        awaited once)."""
        try:
            await asyncio.wait_for(asyncio.gather(*dict.fromkeys(deliveries)),
                                   self.stall_seconds)
        except TimeoutError:
            pending = sum(1 for delivery in deliveries if not asyncio.isfuture(delivery)
                          or not delivery.done())
            raise CommitStalled(f"{pending} of {len(deliveries)} {what} not delivered after "
                                f"{self.stall_seconds:.0f} s") from None

    async def _write(self, batch: PendingBatch, write: TableWrite) -> Awaitable[Any]:
        """Write the table entry and send its changelog record; return the delivery future.

        A table store picks its partition (RocksDB: its database) from Faust's "current event",
        so one of the batch's events (all of one partition, by co-partitioning) is made current.
        """
        with as_current_event(batch.current if batch.current is not None else batch.events[-1]):
            if write.value is None:
                write.table.data.pop(write.key, None)
            else:
                write.table.data[write.key] = write.value
            if self.sender is None:
                return write.table.send_changelog(batch.partition, write.key, write.value)
        return await self.sender.send(write.table.changelog_topic.get_topic_name(), write.key,
                                      write.value, batch.partition)

    @staticmethod
    def _persist_offsets(writes: Iterable[tuple[PendingBatch, TableWrite]],
                         deliveries: list[Awaitable[Any]]) -> None:
        """Record in each table's store the last changelog offset delivered per partition, as
        Faust does for the records it sends itself (its RocksDB recovery starts after it)."""
        last: dict[tuple[Any, TP], int] = {}
        for (batch, write), delivery in zip(writes, deliveries, strict=True):
            table_tp = (write.table,
                        TP(write.table.changelog_topic.get_topic_name(), batch.partition))
            last[table_tp] = max(last.get(table_tp, -1), delivery.result())  # type: ignore[attr-defined]
        for (table, tp), offset in last.items():
            persist_changelog_offset(table, tp, offset)
