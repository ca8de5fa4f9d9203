"""InputSequence: whatever order Faust delivers a partition's offsets in, the worker takes in
every offset from the committed one on, in order, each once as new (the rest as repeats)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from faust.types import TP, Message
from hypothesis import given
from hypothesis import strategies as st

from streams.quirks.input_sequence import FilledEvent, InputSequence

USAGE = TP("billing.usage", 0)


class PartitionLog:
    """A partition's messages as the reader sees them in Kafka (what BrokerReader reads)."""

    def __init__(self, committed: dict[TP, int], log_start: int = 0) -> None:
        self.committed, self.log_start = committed, log_start
        self.reads: list[tuple[TP, int, int]] = []

    async def start_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        return {tp: self.committed.get(tp, self.log_start) for tp in tps}

    async def read(self, tp: TP, start: int, end: int) -> list[Message]:
        self.reads.append((tp, start, end))
        return [message(tp, offset) for offset in range(start, end)]


def message(tp: TP, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"key", b"value", None, tp=tp)


def taken_in(sequence: InputSequence, deliveries: list[int]) -> list[tuple[int, bool]]:
    """(offset, repeat) in the order the worker would take them in."""
    async def run() -> list[tuple[int, bool]]:
        taken: list[tuple[int, bool]] = []
        for offset in deliveries:
            admitted = await sequence.admit(USAGE, offset)
            taken.extend((missing.offset, False) for missing in admitted.missing)
            taken.append((offset, admitted.repeat))
        return taken
    return asyncio.run(run())


def test_in_order_delivery_reads_nothing() -> None:
    log = PartitionLog({USAGE: 5})
    assert taken_in(InputSequence(log), [5, 6, 7]) == [(5, False), (6, False), (7, False)]
    assert log.reads == []


def test_a_jump_is_filled_from_kafka_before_the_message() -> None:
    """The failure seen after a restart: 208, then 213; 209-212 never delivered by Faust."""
    log, jumps = PartitionLog({USAGE: 208}), []
    sequence = InputSequence(log, on_jump=lambda *jump: jumps.append(jump))
    assert taken_in(sequence, [208, 213, 214]) == [
        (208, False), (209, False), (210, False), (211, False), (212, False), (213, False),
        (214, False)]
    assert log.reads == [(USAGE, 209, 213)]
    assert jumps == [(USAGE, 209, 213, 4)]


def test_the_first_delivery_after_an_assignment_starts_at_the_committed_offset() -> None:
    log = PartitionLog({USAGE: 100})
    assert taken_in(InputSequence(log), [103])[:3] == [(100, False), (101, False), (102, False)]


def test_a_partition_the_group_never_committed_starts_at_the_log_start() -> None:
    assert taken_in(InputSequence(PartitionLog({}, log_start=3)), [4]) == [(3, False),
                                                                          (4, False)]


def test_copies_delivered_again_after_the_seek_are_repeats() -> None:
    """Faust's pre-seek delivery: 10-12, then again 10-13 after its seek to the commit."""
    assert taken_in(InputSequence(PartitionLog({USAGE: 10})), [10, 11, 12, 10, 11, 12, 13]) == [
        (10, False), (11, False), (12, False), (10, True), (11, True), (12, True), (13, False)]


def test_forget_starts_again_at_the_committed_offset() -> None:
    log = PartitionLog({USAGE: 0})
    sequence = InputSequence(log)
    taken_in(sequence, [0, 1, 2])
    log.committed[USAGE] = 2
    sequence.forget([USAGE])
    assert taken_in(sequence, [2]) == [(2, False)]


def test_read_ahead_takes_a_stalled_partition_to_its_end_and_later_deliveries_repeat() -> None:
    log = PartitionLog({USAGE: 7})
    sequence = InputSequence(log)
    read = asyncio.run(sequence.read_ahead(USAGE, 10))
    assert [item.offset for item in read] == [7, 8, 9]
    assert asyncio.run(sequence.read_ahead(USAGE, 10)) == []
    assert taken_in(sequence, [7, 10]) == [(7, True), (10, False)]


def test_a_read_under_way_at_a_revocation_does_not_record_its_end() -> None:
    class SlowLog(PartitionLog):
        async def read(self, tp: TP, start: int, end: int) -> list[Message]:
            sequence.forget([tp])  # the partition is revoked while Kafka answers
            return await super().read(tp, start, end)

    sequence = InputSequence(SlowLog({USAGE: 0}))
    taken_in(sequence, [3])
    assert USAGE not in sequence.next_offset


def test_a_filled_event_is_acknowledged_to_the_consumer() -> None:
    class Consumer:
        def __init__(self) -> None:
            self.acked: list[int] = []

        def ack(self, acked: Message) -> bool:
            self.acked.append(acked.offset)
            return True

    consumer = Consumer()
    assert FilledEvent(message(USAGE, 4), consumer).ack()
    assert consumer.acked == [4]


@given(committed=st.integers(0, 20),
       deliveries=st.lists(st.integers(0, 60), max_size=40))
def test_any_delivery_order_takes_in_each_offset_once_new_in_order(
        committed: int, deliveries: list[int]) -> None:
    """New offsets are consecutive from the committed one, whatever Faust delivered."""
    fresh = [offset for offset, repeat in taken_in(InputSequence(PartitionLog({USAGE: committed})),
                                                    deliveries) if not repeat]
    assert fresh == list(range(committed, committed + len(fresh)))
    assert not deliveries or max(deliveries) < committed or fresh[-1] == max(deliveries)


class LogWithMarkers(PartitionLog):
    """A partition with transaction markers: offsets a read returns no message for."""

    def __init__(self, committed: dict[TP, int], markers: set[int]) -> None:
        super().__init__(committed)
        self.markers = markers

    async def read(self, tp: TP, start: int, end: int) -> list[Message]:
        self.reads.append((tp, start, end))
        return [message(tp, offset) for offset in range(start, end)
                if offset not in self.markers]


def test_offsets_without_a_message_are_reported_by_jumps_and_reads_ahead() -> None:
    """Records 0-3, a marker at 4, records 5-6, a marker at 7 (the end): Faust delivers 0-3
    and 5-6; the jump over 4 and the read of the tail name 4 and 7 as holding no message."""
    log, empty = LogWithMarkers({USAGE: 0}, {4, 7}), []
    sequence = InputSequence(log, on_empty=lambda tp, offsets: empty.append((tp, offsets)))
    taken = taken_in(sequence, [0, 1, 2, 3, 5, 6])
    assert [offset for offset, repeat in taken if not repeat] == [0, 1, 2, 3, 5, 6]
    assert empty == [(USAGE, [4])]
    assert asyncio.run(sequence.read_ahead(USAGE, 8)) == []
    assert empty == [(USAGE, [4]), (USAGE, [7])]
    assert sequence.next_offset[USAGE] == 8


def test_a_read_of_messages_only_reports_nothing_empty() -> None:
    """Without markers (every offset a message) nothing is reported: at_least_once as before."""
    empty: list[object] = []
    sequence = InputSequence(PartitionLog({USAGE: 208}),
                             on_empty=lambda tp, offsets: empty.append(offsets))
    taken_in(sequence, [208, 213])
    asyncio.run(sequence.read_ahead(USAGE, 220))
    assert empty == []
