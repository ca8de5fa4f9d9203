"""Faust's committable-offset calculation, with every acknowledged offset counted once.

Faust keeps, per input partition, a list of acknowledged offsets (plus "gaps": offsets its fetcher
jumped over) and commits up to the end of the first run of consecutive numbers in it. When a
message is delivered twice in one assignment (fetched before Faust's post-recovery seek to the
committed offsets and delivered again after it) or an acknowledged offset also lies in a gap, the
list holds that offset twice; every run then ends after one or two offsets, and the commit crawls
forward one run per commit interval. The SIGKILL test caught it in CI: the worker sat idle with
everything applied while the committed offsets stayed thousands behind for its whole 900 s
timeout (inspected live: every offset of two partitions appeared twice in the list).

:func:`commit_each_offset_once` replaces ``Consumer._new_offset`` on the worker's consumer with
the same calculation over a set. Everything else (when Faust commits, what it counts as a gap,
its check of the head of the list) is left as Faust does it.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP
from faust.utils.functional import consecutive_numbers


def commit_each_offset_once(consumer: Any) -> None:
    """Install :func:`committable_offset` as ``consumer._new_offset``."""
    consumer._new_offset = lambda tp: committable_offset(consumer, tp)


def committable_offset(consumer: Any, tp: TP) -> int | None:
    """The offset Faust may commit for ``tp``: one past the first run of consecutive offsets
    acknowledged (gaps included), counting each offset once; None if the head of the run is
    not acknowledged yet. Removes the run from the consumer's lists, as Faust does."""
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    offsets = set(acked)
    largest = max(offsets)
    gap = consumer._gap[tp]
    if gap:
        jumped = [offset for interval in gap.overlap(0, largest)
                  for offset in range(interval.begin, interval.end)]
        if jumped:
            offsets.update(jumped)
            gap.chop(0, max(max(jumped), largest + 1))
    ordered = sorted(offsets)
    committed = consumer._committed_offset[tp]
    if committed and ordered[0] - committed > 1:  # Faust's head check, unchanged
        acked[:] = ordered
        return None
    run = next(consecutive_numbers(ordered))
    acked[:] = ordered[len(run):]
    consumer._acked_index[tp].difference_update(run)
    return run[-1] + 1
