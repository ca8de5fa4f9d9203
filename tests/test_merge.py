"""The event-time merge: earliest (event time, topic rank, offset) first, and never past a source
that may still deliver something earlier."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from billing.merge import KIND_RANK, EventTimeMerger

SOURCES = ("usage", "payments", "accounts", "control")


def merger() -> EventTimeMerger:
    return EventTimeMerger(SOURCES, {source: KIND_RANK[source] for source in SOURCES})


def test_a_source_with_nothing_buffered_holds_the_partition_back() -> None:
    merge = merger()
    merge.add("usage", 0, 100, 0, "usage@100")
    assert list(merge.release(0, lambda source: -math.inf)) == []
    assert merge.waiting_for(0) == ["payments", "accounts", "control"]
    assert list(merge.release(0, lambda source: math.inf)) == ["usage@100"]
    assert merge.waiting_for(0) == list(SOURCES)


def test_earliest_first_and_settings_before_usage_at_the_same_millisecond() -> None:
    merge = merger()
    merge.add("usage", 0, 100, 0, "usage@100")
    merge.add("usage", 0, 300, 1, "usage@300")
    merge.add("accounts", 0, 100, 0, "accounts@100")
    merge.add("payments", 0, 200, 0, "payments@200")
    read_to_end = {"accounts", "control"}

    def caught_up_as_of(source: str) -> float:
        return math.inf if source in read_to_end else -math.inf

    released = list(merge.release(0, caught_up_as_of))
    # payments has nothing left after 200: usage@300 waits for it (it may deliver earlier).
    assert released == ["accounts@100", "usage@100", "payments@200"]
    assert list(merge.release(0, caught_up_as_of)) == []
    assert list(merge.release(0, lambda source: math.inf)) == ["usage@300"]


def test_an_empty_source_is_passed_only_by_what_was_fetched_before_it_was_seen_caught_up() -> None:
    """Caught up as of fetch 20: a later fetch may hold what it received since (a usage
    appended before a payment fetched at 30), so the payment waits for a newer look."""
    merge = merger()
    merge.add("accounts", 0, 100, 0, "accounts@100", fetched_at=10)
    merge.add("payments", 0, 200, 0, "payments@200", fetched_at=30)
    seen_at = {"usage": 20.0, "control": math.inf, "accounts": 20.0}

    def caught_up_as_of(source: str) -> float:
        return seen_at.get(source, -math.inf)

    assert list(merge.release(0, caught_up_as_of)) == ["accounts@100"]
    assert list(merge.release(0, caught_up_as_of)) == []
    assert merge.waiting_for(0) == ["usage", "accounts", "control"]
    seen_at.update(usage=30.0, accounts=30.0)  # the same fetch looked at them too
    assert list(merge.release(0, caught_up_as_of)) == ["payments@200"]


def test_a_dropped_partition_forgets_its_buffer() -> None:
    merge = merger()
    merge.add("usage", 3, 100, 7, "usage@100")
    merge.drop_partition(3)
    assert merge.partitions_with_pending() == []
    assert list(merge.release(3, lambda source: math.inf)) == []


@given(st.lists(st.tuples(st.sampled_from(SOURCES), st.integers(0, 50)), max_size=40))
def test_everything_is_released_in_event_time_order_once_every_source_is_read_to_its_end(
        events: list[tuple[str, int]]) -> None:
    """Each source's events in time order (as on a topic): the release is (time, rank) order."""
    merge, offsets = merger(), dict.fromkeys(SOURCES, 0)
    for source, event_time in sorted(events, key=lambda event: event[1]):
        merge.add(source, 0, event_time, offsets[source], (event_time, KIND_RANK[source]))
        offsets[source] += 1
    released = list(merge.release(0, lambda source: math.inf))
    assert released == sorted(released) and len(released) == len(events)
