"""Which input offset the worker commits: only what it applied, from the committed offset on.

Faust commits, per input partition, up to the end of the first run of consecutive offsets in its
list of acknowledged ones (plus "gaps": offsets its fetcher jumped over, counted as done). That
list is not what this worker applied:

- Faust's stream acknowledges, by itself, a message it skips because it arrived while flow
  control was off or from an older consumer generation (``Stream.__aiter__``, even on a ``noack``
  stream). Around a rebalance such messages never reach the agent, yet their offsets were
  committed: an event lost for good (seen after a SIGKILL: the group's committed offset moved one
  past a message the restarted worker never received).
- An offset can be listed twice, after which every run ends after one or two offsets and the
  commit crawls one offset per interval (the SIGKILL test timed out in CI that way).
- Gaps count records dropped at Faust's seek as done.

So the worker keeps its own record (:class:`AppliedOffsets`: what the commit queue acknowledged,
i.e. whose effects are durable) and :func:`commit_applied_offsets` makes Faust commit one past the
run of applied offsets that starts at the committed offset. Faust's own lists are emptied at each
commit and otherwise ignored.

An offset that holds no message the worker can receive (a transaction marker: see
:mod:`streams.quirks.input_sequence`) is never applied, yet the commit must pass it, or it stops
there for good: the input sequence reports such offsets when a read from Kafka finds them, and
they are added here as done (:meth:`AppliedOffsets.add_empty`). Like Kafka's own consumer, whose
position moves past markers, the committed offset then reaches the end of the log.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from faust.types import TP

from streams.quirks.faust_internals import (
    committed_offsets,
    decide_commits,
    forget_acknowledged,
)


class AppliedOffsets:
    """Per input partition, the offsets whose effects are durable and not yet committed."""

    def __init__(self) -> None:
        self.offsets: defaultdict[TP, set[int]] = defaultdict(set)

    def add(self, tp: TP, offset: int) -> None:
        self.offsets[tp].add(offset)

    def add_empty(self, tp: TP, offsets: Iterable[int]) -> None:
        """Offsets that hold no message to apply (transaction markers): done as they are, so
        the commit passes them once every offset before them is applied."""
        self.offsets[tp].update(offsets)

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: what they applied and did not commit is redone by the next owner."""
        for tp in tps:
            self.offsets.pop(tp, None)


def commit_applied_offsets(consumer: Any, applied: AppliedOffsets,
                           starts: Mapping[TP, int]) -> None:
    """Make Faust's commit take :func:`committable_offset` for each partition."""
    decide_commits(consumer, lambda tp: committable_offset(consumer, tp, applied, starts))


def committable_offset(consumer: Any, tp: TP, applied: AppliedOffsets,
                       starts: Mapping[TP, int]) -> int | None:
    """The offset to commit for ``tp``: one past the run of consecutive applied offsets that
    starts at the committed offset; None while the committed offset itself is not applied.

    The committed offset is Faust's (after its seek, or its last commit), else ``starts`` (the
    group's committed offset as the worker read it at its first message after an assignment,
    see :mod:`streams.quirks.input_sequence`); with neither, nothing is committed.
    """
    forget_acknowledged(consumer, tp)
    committed = committed_offsets(consumer).get(tp)
    if committed is None:
        committed = starts.get(tp)
    offsets = applied.offsets.get(tp)
    if committed is None or not offsets:
        return None
    offsets.difference_update([offset for offset in offsets if offset < committed])
    end = committed
    while end in offsets:
        offsets.discard(end)
        end += 1
    return end if end > committed else None
