"""The worker's own reads from Kafka: committed offsets and ranges of input messages.

:class:`~streams.quirks.input_sequence.InputSequence` needs, outside Faust's fetcher, where the
worker's group must start on a partition and the messages Faust skipped. They are read with
kafka-python (no group membership, nothing committed) on one thread of their own, so the event loop
never blocks and the client, which is not thread-safe, is used from one thread only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from faust.types import TP, Message
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from runtime.kafka_security import kafka_python_security
from runtime.observe import committed_offsets
from runtime.settings import Settings
from streams.quirks.faust_internals import consumer_tp


class BrokerReadTimeout(RuntimeError):
    """Kafka did not return the requested messages in time."""


class BrokerReader:
    """Reads for one consumer group (the worker's app id); implements ``RangeReader``."""

    def __init__(self, settings: Settings, group: str, *, read_committed: bool = False,
                 timeout: float = 60.0) -> None:
        self.settings, self.group, self.timeout = settings, group, timeout
        self.read_committed = read_committed  # exactly_once: skip aborted transactions
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="input-reader")
        self._consumer: KafkaConsumer | None = None
        self._admin: KafkaAdminClient | None = None

    async def start_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        return await self._in_thread(self._start_offsets, list(tps))

    async def read(self, tp: TP, start: int, end: int) -> list[Message]:
        return await self._in_thread(self._read, tp, start, end)

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Each partition's end as Kafka answers now (the last stable offset when reading
        committed only): the worker's own look, newer than its consumer's last fetch."""
        return await self._in_thread(self._end_offsets, list(tps))

    async def close(self) -> None:
        await self._in_thread(self._close_clients)
        self._executor.shutdown(wait=False)

    async def _in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _clients(self) -> tuple[KafkaAdminClient, KafkaConsumer]:
        if self._consumer is None or self._admin is None:
            security = kafka_python_security(self.settings)
            bootstrap = self.settings.kafka_bootstrap
            self._admin = KafkaAdminClient(bootstrap_servers=bootstrap, **security)
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed" if self.read_committed else "read_uncommitted",
                **security)
        return self._admin, self._consumer

    def _close_clients(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                client.close()
        self._consumer = self._admin = None

    def _start_offsets(self, tps: list[TP]) -> dict[TP, int]:
        admin, consumer = self._clients()
        committed = committed_offsets(admin, self.group)
        starts: dict[TP, int] = {}
        for tp in tps:
            offset = committed.get(TopicPartition(tp.topic, tp.partition))
            if offset is not None and offset.offset >= 0:
                starts[tp] = offset.offset
        without = [TopicPartition(tp.topic, tp.partition) for tp in tps if tp not in starts]
        if without:  # the group never committed here: it starts at the log start ("earliest")
            for partition, offset in consumer.beginning_offsets(without).items():
                starts[TP(partition.topic, partition.partition)] = offset
        return starts

    def _end_offsets(self, tps: list[TP]) -> dict[TP, int]:
        _, consumer = self._clients()
        for topic in {tp.topic for tp in tps}:
            # kafka-python 3.0 leaves a partition whose leader it does not know yet (a topic
            # this client has not looked up) out of its request and then fails with KeyError
            # (seen once per topic in a new worker's first probe): look the topic up first.
            consumer.partitions_for_topic(topic)
        ends = consumer.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in tps])
        return {TP(partition.topic, partition.partition): end for partition, end in ends.items()}

    def _read(self, tp: TP, start: int, end: int) -> list[Message]:
        _, consumer = self._clients()
        partition = TopicPartition(tp.topic, tp.partition)
        consumer.assign([partition])
        consumer.seek(partition, start)
        messages: list[Message] = []
        deadline = time.monotonic() + self.timeout
        while consumer.position(partition) < end:
            if time.monotonic() > deadline:
                raise BrokerReadTimeout(
                    f"{tp.topic}[{tp.partition}] offsets {start}-{end - 1}: reached "
                    f"{consumer.position(partition)} after {self.timeout:.0f} s")
            for record in consumer.poll(timeout_ms=500).get(partition, ()):
                if record.offset < end:
                    messages.append(_message(tp, record))
        return messages


def _message(tp: TP, record: Any) -> Message:
    """A kafka-python record as the Faust message the worker handles (its ``tp`` of the type
    Faust's own messages carry: it is acknowledged to Faust's consumer like theirs)."""
    return Message(topic=tp.topic, partition=tp.partition, offset=record.offset,
                   timestamp=record.timestamp / 1000, timestamp_type=record.timestamp_type,
                   headers=record.headers, key=record.key, value=record.value, checksum=None,
                   tp=consumer_tp(tp))
