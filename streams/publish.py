"""The worker's publishing job: what a batch emits, encoded and sent, as delivery futures.

Outputs (``billing.account-state``), rated usage (``billing.usage-rated``, one message per batch
and partition), account-status records and watermark broadcasts go through the worker's sender
(:mod:`streams.sender`: batched sends on the app's producer); dead letters, rare and keyed
by whatever the input carried (possibly nothing), through Faust's ``Topic.send``. Every method
returns delivery futures, which the batch hands to the commit queue: it writes the changelog and
acknowledges the inputs only once they are delivered (``streams/commit.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from billing.ledger import WATERMARK_CAUSE_PREFIX, Ledger, Transition
from runtime.dead_letters import REASON_BYTES, clip_text, dead_letter_key, make_dead_letter
from runtime.settings import Settings
from schemas.codec import encode_in_halves
from streams.metrics import WorkerMetrics

log = logging.getLogger("billing.worker")


# A rated usage message (``RatedUsageBatch``) packs at most this many records, and is halved while
# its value is over RATED_BATCH_BYTES: well under Kafka's default limit of 1 MiB a message.
RATED_BATCH_RECORDS = 1_000
RATED_BATCH_BYTES = 512 * 1024


class Sender(Protocol):
    async def send(self, topic: str, key: bytes, value: bytes | None,
                   partition: int | None = None) -> Awaitable[Any]: ...

    async def partition_count(self, topic: str) -> int: ...


class Publisher:
    """Encodes and sends what the ledger emits (see the module docstring)."""

    def __init__(self, app: Any, sender: Sender, codec: Any, settings: Settings, ledger: Ledger,
                 metrics: WorkerMetrics, worker_name: str) -> None:
        self.sender, self.codec, self.settings = sender, codec, settings
        self.ledger, self.metrics, self.worker_name = ledger, metrics, worker_name
        self.topics = settings.topics
        self.dead_letter_topic = app.topic(settings.topics.dead_letter)

    async def transition(self, key: bytes, transition: Transition) -> list[Awaitable[Any]]:
        """A transition's outputs, keyed by account (co-partitioned with its inputs). Its rated
        usage goes out with the batch's (:meth:`rated_usage`)."""
        deliveries = []
        for output in transition.outputs:
            self.metrics.output(output["type"])
            deliveries.append(await self.sender.send(
                self.topics.account_state, key, self.codec.encode("account_state", output)))
        return deliveries

    async def rated_usage(self, partition: int, records: list[dict[str, Any]]
                          ) -> list[Awaitable[Any]]:
        """A batch's rated usage, in the order it was rated, as ``RatedUsageBatch`` messages
        (issue 16: one message per batch, not per event; the sink expands them): at most
        :data:`RATED_BATCH_RECORDS` records each, on the partition of the accounts (modulo the
        topic's count, should it have fewer), keyed by the empty string since they hold several
        accounts."""
        if not records:
            return []
        topic = self.topics.usage_rated
        partition %= await self.sender.partition_count(topic)
        deliveries: list[Awaitable[Any]] = []
        for start in range(0, len(records), RATED_BATCH_RECORDS):
            for _, value in encode_in_halves(
                    lambda part: self.codec.encode("usage_rated", {"records": part}),
                    records[start:start + RATED_BATCH_RECORDS], RATED_BATCH_BYTES):
                deliveries.append(await self.sender.send(topic, b"", value, partition))
        return deliveries

    async def status(self, key: bytes, record: dict[str, Any]) -> Awaitable[Any]:
        """An account-status record (billing rules section 6)."""
        return await self.sender.send(self.topics.account_status, key,
                                      self.codec.encode("account_status", record))

    async def broadcast_close(self, period: str) -> list[Awaitable[Any]]:
        """A ``close_period`` of ``period`` with no account, to every partition of the control
        topic (``streams/README.md``, "Month close across partitions")."""
        close = {"type": "close_period", "event_id": WATERMARK_CAUSE_PREFIX + period,
                 "account_id": "", "timestamp": self.ledger.watermark_close_time(period),
                 "period": period}
        value = self.codec.encode("control", close)
        deliveries = [await self.sender.send(self.topics.control, b"", value, partition)
                      for partition in range(self.settings.partitions)]
        log.info("watermark_close_broadcast period=%s partitions=%d", period,
                 self.settings.partitions)
        return deliveries

    async def dead_letter(self, message: Any, reason: str, field: str | None) -> Awaitable[Any]:
        """Send the dead letter of input ``message``; return its delivery future (the input is
        acknowledged after)."""
        self.metrics.dead_letter(message.topic)
        log.warning("dead_letter topic=%s partition=%d offset=%d reason=%r", message.topic,
                    message.partition, message.offset, clip_text(reason, REASON_BYTES))
        return await self.dead_letter_topic.send(
            force=True,
            key=dead_letter_key(message.key),
            value=make_dead_letter(reason=reason, field=field, key=message.key,
                                   value=message.value, topic=message.topic,
                                   partition=message.partition, offset=message.offset,
                                   worker=self.worker_name,
                                   max_bytes=self.settings.max_message_bytes, codec=self.codec))
