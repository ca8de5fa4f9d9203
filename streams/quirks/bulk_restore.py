"""A worker's tables read from their changelogs in bulk, before Faust's own recovery reads the rest.

Faust's recovery hands every changelog record through its fetcher, its conductor and a queue,
one record at a time: ~106 µs of CPU per record here, so a new worker (no local files) took 244 s
to rebuild a million accounts (BENCHMARKS.md, State and recovery). A plain aiokafka consumer
reads the same records for ~4 µs each. So at each recovery round, once Faust knows where it
would start reading each active changelog partition and where the partition ends, the worker
reads that range with a consumer of its own, writes it through the table's own
``apply_changelog_batch`` (the very call Faust's recovery makes; RocksDB persists the offset with
each batch) and moves Faust's start offset past what it wrote. Faust's reading then finds
nothing left, or the few records written since.

It is only a faster way to the same place, so it may stop anywhere: a record is counted as read
only once its batch is in the store, and what is left is Faust's to read as before. It stops at
its time budget (the round's steps run under Faust's request timeout, and a step that outlives it
stops the recovery service for good), at a rebalance (Faust cancels the step), and on any error
of its consumer (logged; Faust reads the rest). Standby partitions are left to Faust: they are
read while the worker bills, not before it starts.

The hook into Faust's recovery round is ``restore_actives_in_bulk`` in
``streams/quirks/faust_internals.py``; this module only reads and writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP

log = logging.getLogger("billing.worker")

FETCH_RECORDS = 10_000  # records per getmany: one store batch per partition and fetch
# Per partition and fetch: 8 MiB cost 65 MB more peak memory at a million accounts than this,
# for no measurable speed (BENCHMARKS.md); aiokafka's default, 1 MiB, is ~1,300 accounts.
PARTITION_FETCH_BYTES = 2 * 1024 * 1024
PROGRESS_EVERY = 5.0  # seconds between progress lines of a long restore


@dataclass(frozen=True, slots=True)
class ChangelogMessage:
    """A changelog record in the shape a Faust store's ``apply_changelog_batch`` reads: the
    message (``tp``, ``partition``, ``offset``, raw ``key`` and ``value``) and, as the event, the
    same key and value (the worker's tables are raw bytes, so decoded and raw are one)."""

    tp: TP
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def message(self) -> ChangelogMessage:
        return self


def ranges_to_read(tps: Any, offsets: Mapping[TP, int | None],
                   highwaters: Mapping[TP, int | None]) -> dict[TP, tuple[int, int]]:
    """Each partition of ``tps`` with records left, as (first offset to read, last offset).

    Faust's offsets are the last offset already in the store (-1: none) and its highwaters the
    last offset of the partition (-1: empty), both as its recovery keeps them."""
    ranges = {}
    for tp in tps:
        done, last = offsets.get(tp), highwaters.get(tp)
        if done is not None and last is not None and last > done:
            ranges[tp] = (done + 1, last)
    return ranges


class BulkRestore:
    """Reads changelog ranges with its own aiokafka consumer into the tables' stores."""

    def __init__(self, consumer_factory: Callable[[], AIOKafkaConsumer],
                 on_restored: Callable[[int, float], None]) -> None:
        """``on_restored(records, seconds)`` is called after each restore, interrupted or not
        (the worker's metrics)."""
        self.consumer_factory, self.on_restored = consumer_factory, on_restored

    async def restore(self, tables: Mapping[TP, Any], tps: Any,
                      offsets: MutableMapping[TP, int], highwaters: Mapping[TP, int | None],
                      budget: float) -> int:
        """Write the records of each partition of ``tps`` past ``offsets[tp]``, up to
        ``highwaters[tp]``, into the store of ``tables[tp]``, setting ``offsets[tp]`` to the last
        offset written after each batch; stop after ``budget`` seconds. Returns the number of
        records written."""
        ranges = ranges_to_read(tps, offsets, highwaters)
        if not ranges:
            return 0
        started = time.monotonic()
        written = [0]  # records in the stores so far, also when the reading fails
        consumer = self.consumer_factory()
        try:
            await consumer.start()
            await self._read(consumer, tables, ranges, offsets, started + budget, written)
        except asyncio.CancelledError:  # a rebalance: Faust's next round goes on from here
            log.info("bulk_restore_interrupted records=%d: a rebalance; the next recovery round "
                     "starts after them", written[0])
            raise
        except Exception as exc:  # never worse than Faust's own reading, which goes on from here
            log.warning("bulk_restore_stopped reason=%r records=%d: Faust's recovery reads the "
                        "rest", exc, written[0])
        finally:
            await consumer.stop()
            self.on_restored(written[0], time.monotonic() - started)
        left = sum(last - offsets[tp] for tp, (_, last) in ranges.items() if offsets[tp] < last)
        log.info("bulk_restore records=%d partitions=%d seconds=%.1f left_to_faust=%d",
                 written[0], len(ranges), time.monotonic() - started, left)
        return written[0]

    async def _read(self, consumer: AIOKafkaConsumer, tables: Mapping[TP, Any],
                    ranges: Mapping[TP, tuple[int, int]], offsets: MutableMapping[TP, int],
                    deadline: float, written: list[int]) -> None:
        partitions = {TopicPartition(tp.topic, tp.partition): tp for tp in ranges}
        consumer.assign(list(partitions))
        for partition, tp in partitions.items():
            consumer.seek(partition, ranges[tp][0])
        next_progress = time.monotonic() + PROGRESS_EVERY
        reading = set(partitions)
        while reading and time.monotonic() < deadline:
            fetched = await consumer.getmany(*reading, timeout_ms=500,
                                             max_records=FETCH_RECORDS)
            for partition, records in fetched.items():
                tp = partitions[partition]
                last = ranges[tp][1]
                batch = [ChangelogMessage(tp, tp.partition, record.offset, record.key,
                                          record.value)
                         for record in records if record.offset <= last]
                if batch:
                    tables[tp].apply_changelog_batch(batch)
                    offsets[tp] = batch[-1].offset
                    written[0] += len(batch)
            for partition in list(reading):  # its position passes transaction markers too
                tp = partitions[partition]
                if await consumer.position(partition) > ranges[tp][1]:
                    # All of it read: past any transaction markers at its end too, which Faust's
                    # reading would otherwise wait for as records.
                    offsets[tp] = max(offsets[tp], ranges[tp][1])
                    reading.discard(partition)
                    consumer.pause(partition)
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_EVERY
                log.info("bulk_restore_progress records=%d partitions_left=%d", written[0],
                         len(reading))


def consumer_factory(app: Any) -> Callable[[], AIOKafkaConsumer]:
    """An unstarted aiokafka consumer with no group, configured like Faust's own for ``app``:
    its brokers, its credentials, and reading committed records only under exactly_once (as
    Faust's recovery does)."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list

    conf = app.conf

    def create() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=server_list(conf.broker, 9092),
            client_id=f"{conf.broker_client_id}-restore", group_id=None,
            enable_auto_commit=False,
            # A start offset Kafka no longer holds (records deleted since Faust looked) reads
            # from the earliest it holds; aiokafka's default would jump to the end, and the
            # partition would look read.
            auto_offset_reset="earliest",
            isolation_level="read_committed" if app.in_transaction else "read_uncommitted",
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            request_timeout_ms=int(conf.broker_request_timeout * 1000),
            **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
    return create
