"""Event-time merge of the co-partitioned input topics.

An account's events arrive on four topics (usage, payments, accounts, control). Kafka orders each
topic-partition, not the four together, so a worker that applied events in arrival order would bill
a purchase and a usage in whichever order the fetcher happened to deliver them, and two runs over
the same data could disagree. Like Kafka Streams' task-level timestamp synchronisation, the worker
instead buffers the heads of the four partitions with the same number and releases the earliest
(event time, topic rank, offset) first, but only while every source either has a buffered event
or is caught up with its log end. Given the same topic contents the release order is therefore
always the same, and matches ``billing replay`` over the events sorted by time.

Whether a source with nothing buffered may be passed over is the caller's call (``may_skip``):
the worker says yes when the source is read to its end, or when it has delivered nothing for a
while although data exists (a stalled fetch delays billing, it never stops it). A source that is
still delivering is always waited for, however busy the worker is.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Same-millisecond ties for one account: settings and payments before the usage they enable.
KIND_RANK = {"accounts": 0, "payments": 1, "usage": 2, "control": 3}


@dataclass
class _Group:
    """Buffered events of one partition number, one queue per source topic."""

    queues: dict[str, deque[tuple[tuple[int, int, int], Any]]] = field(default_factory=dict)

    def size(self) -> int:
        return sum(len(queue) for queue in self.queues.values())


class EventTimeMerger:
    """Buffers events per partition number and releases them in event-time order."""

    def __init__(self, sources: tuple[str, ...], rank: dict[str, int]) -> None:
        self.sources = sources
        self.rank = rank  # source -> tie-break rank for equal event times
        self._groups: dict[int, _Group] = {}

    def add(self, source: str, partition: int, event_time_ms: int, offset: int,
            item: Any) -> None:
        """Buffer ``item``; within a source, items must be added in offset order."""
        group = self._groups.setdefault(partition, _Group())
        queue = group.queues.setdefault(source, deque())
        queue.append(((event_time_ms, self.rank[source], offset), item))

    def partitions_with_pending(self) -> list[int]:
        return [partition for partition, group in self._groups.items() if group.size()]

    def waiting_for(self, partition: int) -> list[str]:
        """The sources of ``partition`` with nothing buffered (what its release may wait on)."""
        group = self._groups.get(partition)
        return [] if group is None else [
            source for source in self.sources if not group.queues.get(source)]

    def release(self, partition: int, may_skip: Callable[[str], bool]) -> Iterator[Any]:
        """Yield the items of ``partition`` that can go now, earliest first.

        An item goes when every source of its partition has a buffered item or ``may_skip``
        says that source need not be waited for.
        """
        group = self._groups.get(partition)
        if group is None:
            return
        heads = [(queue[0][0], source) for source, queue in group.queues.items() if queue]
        heapq.heapify(heads)
        while heads:
            _, source = heads[0]
            queue = group.queues[source]
            if not all(group.queues.get(other) or may_skip(other) for other in self.sources):
                return
            _, item = queue.popleft()
            if queue:
                heapq.heapreplace(heads, (queue[0][0], source))
            else:
                heapq.heappop(heads)
            yield item

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition's buffer (its events will be redelivered unacked)."""
        self._groups.pop(partition, None)
