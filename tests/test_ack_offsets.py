"""The committed input offset never passes an event that has not taken effect (Faust's own
calculation could: through its gaps, its head check, and the messages its stream acknowledges by
itself) and is not held back by an offset acknowledged twice (that made the commit crawl in CI)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st
from intervaltree import IntervalTree

from streams.quirks.ack_offsets import AppliedOffsets, committable_offset

USAGE = TP("billing.usage", 2)


def a_consumer(acked: list[int], committed: int | None = None,
               gaps: tuple[tuple[int, int], ...] = ()) -> Any:
    """Faust's consumer state: its acknowledged offsets, gaps and committed offset."""
    consumer = SimpleNamespace(_acked=defaultdict(list), _acked_index=defaultdict(set),
                               _gap=defaultdict(IntervalTree), _committed_offset={USAGE: committed})
    consumer._acked[USAGE] = list(acked)
    consumer._acked_index[USAGE] = set(acked)
    for begin, end in gaps:
        consumer._gap[USAGE].addi(begin, end)
    consumer._gap[USAGE].merge_overlaps()  # as Faust does after each gap
    return consumer


def applied(*offsets: int) -> AppliedOffsets:
    record = AppliedOffsets()
    for offset in offsets:
        record.add(USAGE, offset)
    return record


def test_a_message_faust_acknowledged_by_itself_is_not_committed() -> None:
    """Seen after a SIGKILL: Faust's stream skipped 13224 (flow control off) and acknowledged
    it; Faust's calculation commits past it although the agent never received it."""
    assert Consumer._new_offset(a_consumer([13224, 13225], 13224), USAGE) == 13226
    consumer = a_consumer([13224, 13225], 13224)
    assert committable_offset(consumer, USAGE, applied(13225), {}) is None
    assert committable_offset(consumer, USAGE, applied(13224, 13225), {}) == 13226


def test_offsets_acknowledged_twice_are_committed_in_one_go() -> None:
    """The CI failure: every offset listed twice; Faust's commit moves by one offset."""
    acked = [offset for offset in range(11454, 22097) for _ in range(2)]
    assert Consumer._new_offset(a_consumer(acked, 11454), USAGE) == 11455
    consumer = a_consumer(acked, 11454)
    assert committable_offset(consumer, USAGE, applied(*acked), {}) == 22097
    assert consumer._acked[USAGE] == [] and not consumer._acked_index[USAGE]


def test_offsets_faust_jumped_over_are_not_counted_as_done() -> None:
    """Records dropped at Faust's seek: Faust would commit past them."""
    acked, gaps = [5, 6, 7, 12], ((8, 12),)
    assert Consumer._new_offset(a_consumer(acked, 5, gaps), USAGE) == 13
    record = applied(*acked)
    assert committable_offset(a_consumer(acked, 5, gaps), USAGE, record, {}) == 8
    assert record.offsets[USAGE] == {12}


def test_the_committed_offset_itself_must_be_applied() -> None:
    """Faust's head check lets one unacknowledged offset through."""
    assert Consumer._new_offset(a_consumer([41, 42], 40), USAGE) == 43
    assert committable_offset(a_consumer([41, 42], 40), USAGE, applied(41, 42), {}) is None


def test_before_faust_knows_the_committed_offset_the_start_read_from_kafka_counts() -> None:
    consumer = a_consumer([], None)
    assert committable_offset(consumer, USAGE, applied(7, 8), {}) is None
    assert committable_offset(consumer, USAGE, applied(7, 8), {USAGE: 7}) == 9


def test_revoked_partitions_forget_what_they_applied() -> None:
    record = applied(3, 4)
    record.forget([USAGE])
    assert committable_offset(a_consumer([], 3), USAGE, record, {}) is None


@given(st.sets(st.integers(0, 40), max_size=40), st.integers(0, 40))
def test_one_past_the_run_of_applied_offsets_from_the_committed_one(
        done: set[int], committed: int) -> None:
    offset = committed
    while offset in done:
        offset += 1
    expected = offset if offset > committed else None
    record = applied(*done)
    assert committable_offset(a_consumer([], committed), USAGE, record, {}) == expected
    assert all(left >= (expected or committed) for left in record.offsets[USAGE])


def test_offsets_without_a_message_are_passed_once_the_ones_before_are_applied() -> None:
    """A transaction marker at 8 (never delivered, found by a read from Kafka): the commit
    passes it, but not before 7 is applied, and never past 9 while 9 is not."""
    record = applied(6)
    record.add_empty(USAGE, [8])
    assert committable_offset(a_consumer([], 6), USAGE, record, {}) == 7
    record.add(USAGE, 7)
    assert committable_offset(a_consumer([], 7), USAGE, record, {}) == 9
    record.add(USAGE, 9)
    record.add_empty(USAGE, [10, 11])
    assert committable_offset(a_consumer([], 9), USAGE, record, {}) == 12
