"""The commit queue makes a batch's account states durable before its seen ids: the ids' records
are not even written until every other table's record of the group is delivered
(``streams/commit.py``, step 2). A crash between the two then keeps the states, whose input
positions recognise the redelivered events, and never the ids alone, which made a worker that
rebuilt the partition from the changelog drop the redelivered events as copies of themselves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from faust.types import TP

from streams.commit import CommitQueue, PendingBatch, TableWrite


@dataclass
class _Changelog:
    topic: str

    def get_topic_name(self) -> str:
        return self.topic


class _Store(dict):
    """A table's store: values, and the changelog offset persisted per partition."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[TP, int] = {}

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted[tp] = offset


@dataclass(eq=False)  # hashable by identity, as Faust's tables are
class _Table:
    """What the commit queue uses of a Faust table: its name, store and changelog topic."""

    name: str
    data: _Store = field(default_factory=_Store)

    @property
    def changelog_topic(self) -> _Changelog:
        return _Changelog(f"{self.name}-changelog")


class _Message:
    def __init__(self, offset: int) -> None:
        self.tp, self.offset = TP("usage", 0), offset


class _Event:
    def __init__(self, offset: int) -> None:
        self.message = _Message(offset)
        self.acked = False

    def ack(self) -> None:
        self.acked = True


class _Sender:
    """Records what is sent, in order; each record's delivery completes when the test says."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.deliveries: list[asyncio.Future[int]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None,
                   partition: int | None = None) -> asyncio.Future[int]:
        self.sent.append((topic, key))
        delivery: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    def deliver_all(self) -> None:
        for offset, delivery in enumerate(self.deliveries):
            if not delivery.done():
                delivery.set_result(offset)


def test_seen_ids_are_written_and_sent_only_once_the_states_are_delivered():
    async def run() -> None:
        accounts, seen = _Table("accounts"), _Table("seen-ids")
        sender = _Sender()
        queue = CommitQueue(sender=sender, later_tables=[seen.name])  # type: ignore[arg-type]
        committer = asyncio.ensure_future(queue.run())
        event = _Event(7)
        batch = PendingBatch(0, [event])  # type: ignore[list-item]
        batch.writes = [TableWrite(seen, b"e-a", b"ids"), TableWrite(accounts, b"a", b"state")]
        queue.submit(batch, [])
        await asyncio.sleep(0.01)
        assert sender.sent == [("accounts-changelog", b"a")]
        assert seen.data == {} and accounts.data == {b"a": b"state"}
        sender.deliver_all()
        await asyncio.sleep(0.01)
        assert sender.sent[1:] == [("seen-ids-changelog", b"e-a")]
        assert seen.data == {b"e-a": b"ids"} and not event.acked
        sender.deliver_all()
        await asyncio.sleep(0.01)
        assert event.acked and queue.applied.offsets[TP("usage", 0)] == {7}
        assert accounts.data.persisted == {TP("accounts-changelog", 0): 0}
        assert seen.data.persisted == {TP("seen-ids-changelog", 0): 1}
        committer.cancel()

    asyncio.run(run())


def test_without_later_tables_every_record_goes_out_at_once():
    async def run() -> None:
        accounts, seen = _Table("accounts"), _Table("seen-ids")
        sender = _Sender()
        queue = CommitQueue(sender=sender)  # type: ignore[arg-type]
        committer = asyncio.ensure_future(queue.run())
        batch = PendingBatch(0, [_Event(1)])  # type: ignore[list-item]
        batch.writes = [TableWrite(seen, b"e-a", b"ids"), TableWrite(accounts, b"a", b"state")]
        queue.submit(batch, [])
        await asyncio.sleep(0.01)
        assert len(sender.sent) == 2
        committer.cancel()

    asyncio.run(run())


def test_a_batch_without_events_is_drained_too():
    """A month close's batch may acknowledge nothing (``streams/apply.py``): the drain before a
    hand-over still waits for it to be committed."""
    async def run() -> None:
        accounts = _Table("accounts")
        sender = _Sender()
        queue = CommitQueue(sender=sender)  # type: ignore[arg-type]
        committer = asyncio.ensure_future(queue.run())
        batch = PendingBatch(0, [], current=_Event(3))  # type: ignore[arg-type]
        batch.writes = [TableWrite(accounts, b"a", b"closed")]
        queue.submit(batch, [])
        assert queue.pending_events == 0
        assert not await queue.drain(timeout=0.05)  # its changelog record is not delivered
        sender.deliver_all()
        assert await queue.drain(timeout=1.0)
        assert accounts.data == {b"a": b"closed"}
        committer.cancel()

    asyncio.run(run())
