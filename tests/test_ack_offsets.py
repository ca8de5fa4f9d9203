"""The committed input offset never passes an event that has not taken effect (Faust's own
calculation could, through its gaps and its head check) and is not held back by an offset
acknowledged twice (that made the commit crawl in CI)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from hypothesis import assume, given
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


def test_offsets_acknowledged_twice_are_committed_in_one_go() -> None:
    """The CI failure: every offset listed twice; Faust's commit moves by one offset."""
    acked = [offset for offset in range(11454, 22097) for _ in range(2)]
    assert Consumer._new_offset(a_consumer(acked, 11454), USAGE) == 11455
    consumer = a_consumer(acked, 11454)
    assert committable_offset(consumer, USAGE) == 22097
    assert consumer._acked[USAGE] == [] and not consumer._acked_index[USAGE]


def test_offsets_faust_jumped_over_are_not_counted_as_done() -> None:
    """Records dropped at Faust's seek: Faust would commit past them."""
    acked, gaps = [5, 6, 7, 12], ((8, 12),)
    assert Consumer._new_offset(a_consumer(acked, 5, gaps), USAGE) == 13
    consumer = a_consumer(acked, 5, gaps)
    assert committable_offset(consumer, USAGE) == 8
    assert consumer._acked[USAGE] == [12]


def test_the_committed_offset_itself_must_be_acknowledged() -> None:
    """Faust's head check lets one unacknowledged offset through."""
    assert Consumer._new_offset(a_consumer([41, 42], 40), USAGE) == 43
    consumer = a_consumer([41, 42], 40)
    assert committable_offset(consumer, USAGE) is None
    assert consumer._acked[USAGE] == [41, 42]


def test_nothing_acknowledged_commits_nothing() -> None:
    assert committable_offset(a_consumer([]), USAGE) is None


@given(st.lists(st.integers(0, 40), max_size=40), st.one_of(st.none(), st.integers(0, 40)))
def test_one_past_the_run_of_acknowledged_offsets_from_the_committed_one(
        acked: list[int], committed: int | None) -> None:
    done = set(acked)
    assume(not done or committed is None or min(done) >= committed)  # Faust never lists less
    offset = min(done) if committed is None and done else committed
    expected = None
    if done and offset in done:
        while offset in done:
            offset += 1
        expected = offset
    assert committable_offset(a_consumer(acked, committed), USAGE) == expected
