"""Event-time merge of the co-partitioned input topics.

An account's events arrive on four topics (usage, payments, accounts, control). Kafka orders each
topic-partition, not the four together, so a worker that applied events in arrival order would bill
a purchase and a usage in whichever order the fetcher happened to deliver them, and two runs over
the same data could disagree. Like Kafka Streams' task-level timestamp synchronisation, the worker
instead buffers the heads of the four partitions with the same number and releases the earliest
(event time, topic rank, offset) first, but only while every source either has a buffered event
or is caught up with its log end. Given the same topic contents the release order is therefore
always the same, and matches ``billing replay`` over the events sorted by time.

Whether a source with nothing buffered may be passed over is the caller's call
(``caught_up_as_of``): the fetch time as of which the source was known to hold nothing more. An
item may pass it only if it was fetched no later than that: "read to its end" as of an older
fetch says nothing of what was appended since: a payment fetched after that moment may follow a
usage appended to the empty source in between (aiokafka leaves a partition out of its fetches
while it holds records of it, so a busy input's end can be older than the fetch that brought
the payment). A source that is still delivering is always waited for, however busy the worker
is. What no reader can order is what Kafka has not appended yet: events of two topics are
applied in the order they were appended when they arrive while the worker is caught up.
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

    # per source: ((event time, rank, offset), fetched at, item), in offset order
    queues: dict[str, deque[tuple[tuple[int, int, int], float, Any]]] = field(
        default_factory=dict)

    def size(self) -> int:
        return sum(len(queue) for queue in self.queues.values())


class EventTimeMerger:
    """Buffers events per partition number and releases them in event-time order."""

    def __init__(self, sources: tuple[str, ...], rank: dict[str, int]) -> None:
        self.sources = sources
        self.rank = rank  # source -> tie-break rank for equal event times
        self._groups: dict[int, _Group] = {}

    def add(self, source: str, partition: int, event_time_ms: int, offset: int,
            item: Any, fetched_at: float = 0.0) -> None:
        """Buffer ``item``; within a source, items must be added in offset order. ``fetched_at``:
        when it was fetched, or any later time (a finite number, on the clock that
        ``caught_up_as_of`` answers in)."""
        group = self._groups.setdefault(partition, _Group())
        queue = group.queues.setdefault(source, deque())
        queue.append(((event_time_ms, self.rank[source], offset), fetched_at, item))

    def partitions_with_pending(self) -> list[int]:
        return [partition for partition, group in self._groups.items() if group.size()]

    def waiting_for(self, partition: int) -> list[str]:
        """The sources of ``partition`` with nothing buffered (what its release may wait on)."""
        group = self._groups.get(partition)
        return [] if group is None else [
            source for source in self.sources if not group.queues.get(source)]

    def release(self, partition: int,
                caught_up_as_of: Callable[[str], float]) -> Iterator[Any]:
        """Yield the items of ``partition`` that can go now, earliest first.

        An item goes when every other source of its partition has a buffered item, or was caught
        up (``caught_up_as_of``: ``math.inf``, for good; ``-math.inf``, not known to be) as of
        the item's fetch or later.
        """
        group = self._groups.get(partition)
        if group is None:
            return
        heads = [(queue[0][0], source) for source, queue in group.queues.items() if queue]
        heapq.heapify(heads)
        while heads:
            _, source = heads[0]
            queue = group.queues[source]
            fetched_at = queue[0][1]
            if not all(group.queues.get(other) or fetched_at <= caught_up_as_of(other)
                       for other in self.sources):
                return
            _, _, item = queue.popleft()
            if queue:
                heapq.heapreplace(heads, (queue[0][0], source))
            else:
                heapq.heappop(heads)
            yield item

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition's buffer (its events will be redelivered unacked)."""
        self._groups.pop(partition, None)
