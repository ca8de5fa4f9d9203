"""Which input offset the consumer group may commit: the worker's own count, not Faust's.

A committed offset promises that everything before it has taken effect. The worker applies each
input partition in offset order, but acknowledges out of order in one case (a dead letter is
acknowledged while earlier events of its partition still wait in the merge buffer), and Faust may
deliver a message twice in one assignment (messages fetched before its post-recovery seek to the
committed offsets come again after it).

Faust's own bookkeeping (``Consumer._new_offset``) mishandles both, which the SIGKILL test caught
in CI: (1) it appends every acknowledged offset to a list and commits up to the end of the first
run of consecutive numbers; a twice-delivered offset appears twice, every run ends after one or
two offsets, and the commit crawled forward by one offset per commit interval while the worker sat
idle with everything applied (``lag`` stayed in the thousands for the whole 900 s timeout). (2) Its
head check (``min(acked) - committed > 1``) lets a commit pass over a single unacknowledged
offset at the head, the one case where a crash would lose an event.

:class:`InputPositions` counts instead: per partition, the smallest offset delivered and not yet
acknowledged, else one past the largest delivered. Offsets Kafka never delivers (transaction
markers, compacted records) cannot hold it back, and nothing is committed past an event that has
not taken effect. :func:`use_for_commits` makes Faust's committer ask it.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from typing import Any

from faust.types import TP


class _Partition:
    __slots__ = ("next_offset", "outstanding", "smallest")

    def __init__(self) -> None:
        self.outstanding: Counter[int] = Counter()  # offset -> deliveries not yet acknowledged
        self.smallest: list[int] = []  # heap over outstanding offsets (stale entries popped lazily)
        self.next_offset = 0  # one past the largest offset delivered


class InputPositions:
    """Delivered and acknowledged offsets per input partition; see the module docstring."""

    def __init__(self) -> None:
        self._partitions: dict[TP, _Partition] = {}

    def received(self, tp: TP, offset: int) -> None:
        partition = self._partitions.setdefault(tp, _Partition())
        if not partition.outstanding[offset]:
            heapq.heappush(partition.smallest, offset)
        partition.outstanding[offset] += 1
        partition.next_offset = max(partition.next_offset, offset + 1)

    def acknowledged(self, tp: TP, offset: int) -> None:
        partition = self._partitions.get(tp)
        if partition is None or not partition.outstanding[offset]:
            return  # delivered before a revocation that forgot its partition
        partition.outstanding[offset] -= 1
        if not partition.outstanding[offset]:
            del partition.outstanding[offset]

    def position(self, tp: TP) -> int | None:
        """The offset to commit for ``tp`` (where a new owner starts), None if nothing came."""
        partition = self._partitions.get(tp)
        if partition is None:
            return None
        while partition.smallest and partition.smallest[0] not in partition.outstanding:
            heapq.heappop(partition.smallest)
        return partition.smallest[0] if partition.smallest else partition.next_offset

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop revoked partitions: their unacknowledged events go to the next owner."""
        for tp in tps:
            self._partitions.pop(tp, None)


def use_for_commits(consumer: Any, positions: InputPositions) -> None:
    """Make Faust's committer commit ``positions``.

    Faust's committer looks at the partitions that have an entry in its list of acknowledged
    offsets (it drops a partition's entry at a revocation). The entry is emptied here, not
    removed: a partition whose last events take effect after its last message arrived must still
    be committed at the next interval.
    """

    def new_offset(tp: TP) -> int | None:
        consumer._acked[tp].clear()
        consumer._acked_index[tp].clear()
        consumer._gap.pop(tp, None)
        return positions.position(tp)

    consumer._new_offset = new_offset
