"""The worker's apply job: what the event-time merge releases, through the ledger, as batches.

:meth:`Apply.release_all` takes what the merge releases for each partition and applies it to the
accounts' states with the pure ledger, as one :class:`_Batch` per partition: each account's state
is read once per batch and written once at its end. It is read from the entry the last batch that
touched it left live (up to :data:`CACHED_ENTRIES` accounts, forgotten when partitions are
revoked), else an uncommitted batch's (:meth:`Apply.current`), else its record. A broadcast
``close_period`` closes the month for every account the partition owns, a number of them per
batch, holding the partition's later events meanwhile (:meth:`Apply._close_partition`); usage
advances the partition's watermark, whose passing of a month's close time is broadcast to every
partition of the control topic. The batch's outputs go out through the publishing job
(:mod:`streams.publish`), and the batch, as a :class:`~streams.commit.PendingBatch`, to the
commit queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from billing.account_record import AccountEntry, dump_entry, load_entry, status_version
from billing.account_status import status_record
from billing.events import InvalidEvent, batch_record_field, batch_record_reason
from billing.ledger import Ledger, LedgerFault, from_millis, snapshot
from billing.merge import EventTimeMerger
from billing.seen_ids import BUCKET_MS
from billing.watermark import Watermark
from runtime.settings import Settings
from streams.commit import CommitQueue, PendingBatch, TableWrite
from streams.metrics import WorkerMetrics
from streams.publish import Publisher
from streams.quirks.faust_internals import as_current_event
from streams.seen_table import TableSeenIds
from streams.sender import partition_of

if TYPE_CHECKING:
    from streams.intake import _Input

log = logging.getLogger("billing.worker")

# Account entries kept live between batches, least recently used first out: loading one from its
# record (JSON, Decimals) costs ~18 µs, as much as the ledger's work on a usage event. About
# 2.8 KB each, so ~55 MB at most.
CACHED_ENTRIES = 20_000


def _load_watermark(stored: bytes) -> Watermark:
    return Watermark.from_record(orjson.loads(stored))


class _Batch:
    """What one release of a partition has changed so far, handed to the commit queue at its end."""

    __slots__ = ("before", "clock", "clock_key", "generation", "outputs", "partition", "rated",
                 "states", "updated_at")

    def __init__(self, partition: int, generation: int) -> None:
        self.partition = partition
        self.generation = generation  # Apply.generation when it started (entries it may cache)
        self.states: dict[bytes, AccountEntry] = {}
        self.clock_key = f"partition-{partition}".encode()
        self.clock: Watermark | None = None
        self.outputs: list[Awaitable[Any]] = []  # delivery futures
        self.rated: list[dict[str, Any]] = []  # rated usage, sent together at the end
        # Each touched account's snapshot before the batch (None: opened in it), and the event
        # time of the last input applied to it: its account-status record is written at the end
        # of the batch if the snapshot changed.
        self.before: dict[bytes, dict[str, Any] | None] = {}
        self.updated_at: dict[bytes, datetime] = {}

    def touch(self, key: bytes, entry: AccountEntry | None) -> None:
        """Remember the account's snapshot as the batch found it (first touch only)."""
        if key not in self.before:
            self.before[key] = None if entry is None else snapshot(entry.state)


class Apply:
    """The apply job (see the module docstring), on the worker's tables and merge."""

    def __init__(self, settings: Settings, ledger: Ledger, metrics: WorkerMetrics,
                 kind_of_topic: dict[str, str], merger: EventTimeMerger, lock: asyncio.Lock,
                 publisher: Publisher, commits: CommitQueue, accounts: Any, clock: Any,
                 seen_table: Any, seen: TableSeenIds) -> None:
        self.settings, self.ledger, self.metrics = settings, ledger, metrics
        self.kind_of_topic, self.merger, self.lock = kind_of_topic, merger, lock
        self.publisher, self.commits = publisher, commits
        self.accounts, self.clock, self.seen_table, self.seen = accounts, clock, seen_table, seen
        self.released_at = time.monotonic()  # when the merge was last released (RELEASE_WITHIN)
        # Live account entries, as the last batch that touched each left it (it is the overlay's
        # object while that batch is uncommitted); emptied when partitions are revoked.
        self._entries: OrderedDict[bytes, AccountEntry] = OrderedDict()
        # Counts the revocations: a batch that was running across one caches nothing (its
        # entries may belong to a partition another worker now changes).
        self.generation = 0
        # A month close in progress (``_close_partition``): per partition, the events released
        # and not yet applied (the close first), and the accounts it has left to close.
        self._held: dict[int, deque[_Input]] = {}
        self._closing: dict[int, tuple[list[bytes], int]] = {}

    @property
    def closing(self) -> bool:
        """Whether a month close is in progress: the worker is busy, not stuck."""
        return bool(self._closing)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Partitions were revoked: drop their held events (unacknowledged: redelivered to the
        next owner, whose close skips the accounts already closed) and their close in
        progress."""
        for partition in partitions:
            self._held.pop(partition, None)
            self._closing.pop(partition, None)

    def forget_entries(self) -> None:
        """Partitions were revoked: their accounts' next owner may change them."""
        self._entries.clear()
        self.generation += 1

    async def release_all(self, caught_up_as_of: Callable[[int], Any]) -> None:
        """Apply what the merge releases, one batch per partition (the agent and the tick).
        ``caught_up_as_of(partition)``: as of which fetch each of its inputs is known to hold
        nothing more (the input job's; :meth:`billing.merge.EventTimeMerger.release`)."""
        self.released_at = time.monotonic()
        async with self.lock:
            for partition in dict.fromkeys([*self._held,
                                            *self.merger.partitions_with_pending()]):
                await self._release(partition, caught_up_as_of)

    async def _release(self, partition: int, caught_up_as_of: Callable[[int], Any]) -> None:
        """Apply what the merge releases for ``partition``, as one batch, after what an earlier
        release held back: from a month close with accounts left to close, the rest waits for the
        next release (``_close_partition``).

        Each account's state is read once per batch and serialized once at its end (one
        changelog record instead of one per event); the batch then goes to the commit queue,
        which acknowledges its offsets only once its outputs and changelog records are delivered.
        """
        items = self._held.pop(partition, None) or deque()
        items.extend(self.merger.release(partition, caught_up_as_of(partition)))
        if not items:
            return
        batch = _Batch(partition, self.generation)
        applied: list[_Input] = []
        # A table store reads a key from the database of the current event's partition
        # (RocksDB): the agent's current event is the last one received, maybe of another
        # partition, so one of the batch's own is made current.
        current = items[-1].event
        with as_current_event(current):
            while items:
                item = items.popleft()
                if not await self._apply(item, batch):  # a month close not finished
                    items.appendleft(item)
                    self._held[partition] = items
                    break
                applied.append(item)
        await self._publish_statuses(batch)
        batch.outputs += await self.publisher.rated_usage(partition, batch.rated)
        # A message is acknowledged with its last event (a batch's records may be released
        # over several batches): one still in the merge, or held, is redelivered whole.
        pending = PendingBatch(partition, [item.event for item in applied if item.last],
                               batch.outputs, current=current)
        live: list[tuple[Any, bytes, Any]] = []
        for key, entry in batch.states.items():
            pending.writes.append(TableWrite(self.accounts, key, dump_entry(entry)))
            live.append((self.accounts, key, entry))
            self._cache_entry(batch, key, entry)
        if batch.clock is not None:
            pending.writes.append(TableWrite(self.clock, batch.clock_key,
                                             orjson.dumps(batch.clock.to_record())))
            live.append((self.clock, batch.clock_key, batch.clock))
        for key, value in self.seen.take_writes().items():
            pending.writes.append(TableWrite(self.seen_table, key, value or None))
            live.append((self.seen_table, key, value))
        self.commits.submit(pending, live)

    # -- the ledger ------------------------------------------------------------------------

    def current(self, table: Any, key: bytes, load: Any) -> Any:
        """The newest value of a table entry: an uncommitted batch's, else the table's."""
        value = self.commits.get(table, key)
        if value is None:
            stored = table.get(key)
            value = load(stored) if stored else None
        return value

    def _entry(self, key: bytes, batch: _Batch) -> AccountEntry | None:
        """The account's live entry: the batch's, else a cached one, else the newest stored."""
        entry = batch.states.get(key)
        if entry is not None:
            return entry
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        entry = self.current(self.accounts, key, self._load_entry)
        if entry is not None:
            self._cache_entry(batch, key, entry)
        return entry

    def _cache_entry(self, batch: _Batch, key: bytes, entry: AccountEntry) -> None:
        if batch.generation != self.generation:
            return  # partitions were revoked while the batch ran
        entries = self._entries
        entries[key] = entry
        entries.move_to_end(key)
        if len(entries) > CACHED_ENTRIES:
            entries.popitem(last=False)

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

    async def _apply(self, item: _Input, batch: _Batch) -> bool:
        """Apply one released event; False for a month close that has accounts left to close
        (``_close_partition``). A ``repeat`` (an offset taken in before) the ledger refuses is not
        dead-lettered again: its first copy was, in a batch committed before this one."""
        event, canonical = item.event, item.canonical
        if canonical["type"] == "close_period" and not canonical["account_id"]:
            finished = await self._close_partition(batch, canonical["period"],
                                                   canonical["event_id"],
                                                   canonical["timestamp"], event.message.offset)
            if finished:
                self.metrics.event_applied("close_period")
            return finished
        key = canonical["account_id"].encode()
        entry = self._entry(key, batch)
        batch.touch(key, entry)
        kind, offset = self.kind_of_topic[event.message.topic], event.message.offset
        if entry is not None and entry.includes(kind, offset, item.index):
            # Delivered again (its position is in the state): it changes nothing and emits
            # nothing. The state is written again all the same, in case a crash lost its
            # changelog record, and its ids recorded again, in case a crash lost theirs (see
            # streams.commit).
            self.ledger.remember_again(entry.state, canonical)
            batch.states[key] = entry
            self.metrics.duplicate()
            return True
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
            return True
        assert transition.state is not None
        if entry is None:
            entry = AccountEntry(transition.state, {})
        entry.state = transition.state
        entry.record_input(kind, offset, item.index, item.last)
        batch.states[key] = entry
        batch.updated_at[key] = canonical["timestamp"]
        if transition.duplicate:  # a copy by event_id, or a retried payment: written again too
            self.metrics.duplicate()
            return True
        self.metrics.event_applied(canonical["type"])
        batch.outputs.extend(await self.publisher.transition(key, transition))
        if transition.rated_usage is not None:
            batch.rated.append(transition.rated_usage)
        if canonical["type"] == "usage":
            await self._advance_watermark(batch, canonical["timestamp"])
        return True

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
                               timestamp: datetime, offset: int) -> bool:
        """A broadcast close at control ``offset``: close ``period`` for every account this
        partition owns, ``BILLING_CLOSE_ACCOUNTS_PER_BATCH`` of them per batch; True once every
        one is. At 95-200 µs an account (``apply_bench``, 100,000 accounts), one batch for a
        partition of 250,000 accounts would hold the agent, the worker's other partitions and
        the event loop for 25-50 s; the default, 2,000, is 0.2-0.4 s.

        The accounts are listed at its first batch; no other event of the partition is applied
        before the last (they are held), so none is opened meanwhile.

        An account it closes records the offset, like any input it applies. Delivered again (a
        crash before its offset commit), the close rewrites the state of those accounts: a
        SIGKILL can leave a state written to RocksDB whose changelog record was never delivered,
        and a silent account receives nothing else that would rewrite it (seen: 149 accounts
        whose changelog stayed in the closed month while their invoices were out)."""
        keys, start = self._closing.pop(batch.partition, None) or (
            self._accounts_of(batch), 0)
        end = start + self.settings.close_accounts_per_batch
        for key in keys[start:end]:
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
        if end < len(keys):
            self._closing[batch.partition] = keys, end
            return False
        return True

    def _accounts_of(self, batch: _Batch) -> list[bytes]:
        """Every account of the batch's partition: stored, uncommitted or in the batch."""
        partitions = self.settings.partitions
        uncommitted = {key for name, key in self.commits.overlay if name == self.accounts.name}
        return [key for key in set(self.accounts.keys()) | uncommitted | set(batch.states)
                if partition_of(key, partitions) == batch.partition]

    # -- the watermark -------------------------------------------------------------------

    async def _advance_watermark(self, batch: _Batch, usage_time: datetime) -> None:
        """Track this partition's watermark (``billing.watermark``); broadcast the close of every
        month whose close time it passed (one ``close_period`` closes that month and all before
        it)."""
        if batch.clock is None:
            batch.clock = self.current(self.clock, batch.clock_key, _load_watermark) \
                or Watermark()
        closable = batch.clock.advance(self.ledger, usage_time)
        if closable is not None:
            batch.outputs.extend(await self.publisher.broadcast_close(closable))
