"""Which input offset the worker commits: Faust's calculation, made safe for this worker.

Faust keeps, per input partition, a list of acknowledged offsets (plus "gaps": offsets its fetcher
jumped over, counted as done) and commits up to the end of the first run of consecutive numbers in
it. Around a rebalance Faust delivers input before its seek to the committed offsets, and this
goes wrong two ways (see streams/README.md): an offset can be listed twice, after which every run
ends after one or two offsets and the commit crawls one offset per interval (so the SIGKILL test
timed out in CI, the worker idle with everything applied); and records dropped at the seek are
recorded as a gap, so their offsets would be committed although their events never took effect.

:func:`commit_each_offset_once` replaces ``Consumer._new_offset`` on the worker's consumer: each
offset counts once, gaps count for nothing, and the run must start at the committed offset.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP
from faust.utils.functional import consecutive_numbers


def commit_each_offset_once(consumer: Any) -> None:
    """Install :func:`committable_offset` as ``consumer._new_offset``."""
    consumer._new_offset = lambda tp: committable_offset(consumer, tp)


def committable_offset(consumer: Any, tp: TP) -> int | None:
    """The offset Faust may commit for ``tp``: one past the run of consecutive acknowledged
    offsets that starts at the committed offset, each offset counted once; None while the
    committed offset itself is not acknowledged. Removes the run from the consumer's lists.

    Faust's "gaps" (offsets its fetcher jumped over, which it counts as done) are ignored: on the
    input topics every offset is a message (their producers use no transactions and the topics
    are not compacted), so a jump means messages Faust dropped, and counting them as done would
    commit events that never took effect. The worker exits for a restart instead when its commit
    stays behind input it has applied (see ``LedgerWorker._stuck_reason``).
    """
    consumer._gap.pop(tp, None)
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    ordered = sorted(set(acked))
    committed = consumer._committed_offset[tp]
    if committed is not None and ordered[0] > committed:
        acked[:] = ordered
        return None
    run = next(consecutive_numbers(ordered))
    acked[:] = ordered[len(run):]
    consumer._acked_index[tp].difference_update(run)
    return run[-1] + 1
