"""The committable offset is Faust's, except that an offset acknowledged twice counts once
(twice-listed offsets made the commit crawl one offset per interval in CI)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st
from intervaltree import IntervalTree

from streams.ack_offsets import committable_offset

USAGE = TP("billing.usage", 2)


def a_consumer(acked: list[int], committed: int | None = None,
               gaps: tuple[tuple[int, int], ...] = ()) -> Any:
    consumer = SimpleNamespace(_acked=defaultdict(list), _acked_index=defaultdict(set),
                               _gap=defaultdict(IntervalTree), _committed_offset={USAGE: committed})
    consumer._acked[USAGE] = list(acked)
    consumer._acked_index[USAGE] = set(acked)
    for begin, end in gaps:
        consumer._gap[USAGE].addi(begin, end)
    consumer._gap[USAGE].merge_overlaps()  # as Faust does after each gap
    return consumer


def test_offsets_delivered_twice_are_committed_in_one_go() -> None:
    """The CI failure: every offset listed twice; Faust's commit moves by one offset."""
    acked = [offset for offset in range(11454, 22097) for _ in range(2)]
    assert Consumer._new_offset(a_consumer(acked, 11454), USAGE) == 11455
    consumer = a_consumer(acked, 11454)
    assert committable_offset(consumer, USAGE) == 22097
    assert consumer._acked[USAGE] == [] and not consumer._acked_index[USAGE]


def test_a_gap_overlapping_acknowledged_offsets_counts_once() -> None:
    consumer = a_consumer([5, 6, 7, 8, 12], committed=5, gaps=((6, 12),))
    assert committable_offset(consumer, USAGE) == 13
    assert not consumer._gap[USAGE]


def test_an_unacknowledged_head_holds_the_commit_back() -> None:
    consumer = a_consumer([40, 41, 41], committed=37)
    assert committable_offset(consumer, USAGE) is None
    assert consumer._acked[USAGE] == [40, 41]


def test_nothing_acknowledged_commits_nothing() -> None:
    assert committable_offset(a_consumer([]), USAGE) is None


offsets = st.lists(st.integers(0, 60), max_size=40)
gap_ranges = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 6)).map(
    lambda start_length: (start_length[0], start_length[0] + start_length[1])), max_size=3)


@given(offsets, st.one_of(st.none(), st.integers(0, 60)), gap_ranges)
def test_the_same_as_faust_over_each_offset_once(acked: list[int], committed: int | None,
                                                 gaps: list[tuple[int, int]]) -> None:
    """Over a list without repeats (gaps not overlapping it), Faust's own calculation gives the
    same offset and leaves the same lists; with repeats, ours equals Faust's over the set."""
    distinct = sorted(set(acked))
    free_gaps = tuple(gap for gap in gaps if not any(gap[0] <= o < gap[1] for o in distinct))
    ours, faust = a_consumer(acked, committed, free_gaps), a_consumer(distinct, committed,
                                                                       free_gaps)
    assert committable_offset(ours, USAGE) == Consumer._new_offset(faust, USAGE)
    assert sorted(ours._acked[USAGE]) == sorted(faust._acked[USAGE])
    assert ours._acked_index[USAGE] == faust._acked_index[USAGE]
