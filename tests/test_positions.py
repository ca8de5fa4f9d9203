"""The committed input offset never passes an event that has not taken effect, and is not held
back by anything that has (the two ways Faust's own bookkeeping went wrong)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from streams.positions import InputPositions, use_for_commits

USAGE = TP("billing.usage", 1)


def test_nothing_delivered_commits_nothing() -> None:
    assert InputPositions().position(USAGE) is None


def test_an_unacknowledged_head_holds_the_commit_back() -> None:
    """A dead letter acknowledged while the event before it waits in the merge buffer."""
    positions = InputPositions()
    for offset in (40, 41, 42):
        positions.received(USAGE, offset)
    positions.acknowledged(USAGE, 41)
    positions.acknowledged(USAGE, 42)
    assert positions.position(USAGE) == 40
    positions.acknowledged(USAGE, 40)
    assert positions.position(USAGE) == 43


def test_a_message_delivered_twice_does_not_slow_the_commit() -> None:
    """Fetched before the post-recovery seek and again after it: once both copies are done the
    commit goes straight to the end."""
    positions = InputPositions()
    for _ in range(2):
        for offset in range(100, 110):
            positions.received(USAGE, offset)
    for offset in range(100, 110):
        positions.acknowledged(USAGE, offset)
    assert positions.position(USAGE) == 100  # the second copies are still outstanding
    for offset in range(100, 110):
        positions.acknowledged(USAGE, offset)
    assert positions.position(USAGE) == 110


def test_offsets_kafka_skips_do_not_hold_the_commit_back() -> None:
    """Transaction markers and compacted records are never delivered."""
    positions = InputPositions()
    for offset in (7, 9, 15):
        positions.received(USAGE, offset)
        positions.acknowledged(USAGE, offset)
    assert positions.position(USAGE) == 16


def test_a_revoked_partition_is_forgotten_and_late_acknowledgements_ignored() -> None:
    positions = InputPositions()
    positions.received(USAGE, 5)
    positions.forget([USAGE])
    positions.acknowledged(USAGE, 5)
    assert positions.position(USAGE) is None


deliveries = st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8)), max_size=12)


@given(deliveries, st.data())
def test_the_position_is_the_first_offset_not_yet_done(runs: list[tuple[int, int]],
                                                       data: st.DataObject) -> None:
    """Runs of consecutive offsets (a seek may start one anywhere earlier), acknowledged in
    any order: the position is the smallest offset with a delivery not yet acknowledged, else one
    past the largest delivered."""
    positions, outstanding, largest = InputPositions(), [], -1
    for start, length in runs:
        for offset in range(start, start + length):
            positions.received(USAGE, offset)
            outstanding.append(offset)
            largest = max(largest, offset)
        done = data.draw(st.lists(st.sampled_from(outstanding), unique=True) if outstanding
                         else st.just([]))
        for offset in done:
            positions.acknowledged(USAGE, offset)
            outstanding.remove(offset)
        expected = min(outstanding) if outstanding else (largest + 1 if largest >= 0 else None)
        assert positions.position(USAGE) == expected


def test_faust_commits_the_positions_and_keeps_looking_at_the_partition() -> None:
    consumer = SimpleNamespace(_acked=defaultdict(list), _acked_index=defaultdict(set),
                               _gap=defaultdict(list))
    consumer._acked[USAGE] = [3, 4, 4, 5]
    consumer._acked_index[USAGE] = {3, 4, 5}
    consumer._gap[USAGE] = [(0, 9)]
    positions = InputPositions()
    for offset in range(3, 7):
        positions.received(USAGE, offset)
    for offset in (3, 4, 5):
        positions.acknowledged(USAGE, offset)
    use_for_commits(consumer, positions)
    assert consumer._new_offset(USAGE) == 6
    assert consumer._acked[USAGE] == [] and not consumer._acked_index[USAGE]
    assert USAGE not in consumer._gap
    positions.acknowledged(USAGE, 6)  # took effect after the last message arrived
    assert USAGE in consumer._acked, "Faust's committer must still look at the partition"
    assert consumer._new_offset(USAGE) == 7
