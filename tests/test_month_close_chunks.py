"""A broadcast month close walks every account of its partition: it closes
``BILLING_CLOSE_ACCOUNTS_PER_BATCH`` of them per release, holds the partition's later events
meanwhile, lets the other partitions go on, and ends with what one uninterrupted close gives
(``streams/apply.py``)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from faust.types import TP

from billing.account_record import load_entry
from billing.events import normalize_input
from billing.ledger import Ledger, snapshot
from billing.merge import KIND_RANK, EventTimeMerger
from runtime.rules_files import load_config, load_pricebook
from runtime.settings import SettingsError, load_settings
from schemas.codec import Codec
from streams.apply import Apply
from streams.commit import CommitQueue
from streams.intake import _Input
from streams.metrics import WorkerMetrics
from streams.publish import Publisher
from streams.seen_table import TableSeenIds
from streams.sender import partition_of
from tests.test_commit_order import _Table
from tests.test_publish import NoTopics

SETTINGS = load_settings({})
CODEC = Codec()
TOPICS = SETTINGS.topics
KINDS = ("usage", "payments", "accounts", "control")
KIND_OF_TOPIC = {getattr(TOPICS, kind): kind for kind in KINDS}
NOW = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)
# Five accounts of partition 0 and one of partition 1.
ACCOUNTS = [f"acct-{n}" for n in range(200)
            if partition_of(f"acct-{n}".encode(), SETTINGS.partitions) == 0][:5]
OTHER = next(f"acct-{n}" for n in range(200)
             if partition_of(f"acct-{n}".encode(), SETTINGS.partitions) == 1)


class _Tables(_Table):
    """A Faust table as the apply job reads it, besides what the commit queue writes."""

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def keys(self) -> Any:
        return self.data.keys()


class _Event:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.message = type("Message", (), {"topic": topic, "partition": partition,
                                            "offset": offset, "tp": TP(topic, partition),
                                            "key": b"", "value": b""})()
        self.acked = False

    def ack(self) -> None:
        self.acked = True


class _DeliveredAtOnce:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None,
                   partition: int | None = None) -> asyncio.Future[int]:
        self.sent.append((topic, value))
        delivered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        delivered.set_result(len(self.sent))
        return delivered

    async def partition_count(self, topic: str) -> int:
        return SETTINGS.partitions


class Worker:
    """The apply job and commit queue of one worker, on dicts, delivering at once."""

    def __init__(self, close_accounts_per_batch: int) -> None:
        settings = replace(SETTINGS, close_accounts_per_batch=close_accounts_per_batch)
        self.accounts, self.clock, self.seen_table = (
            _Tables("accounts"), _Tables("partition-clock"), _Tables("seen-ids"))
        self.sender = _DeliveredAtOnce()
        self.commits = CommitQueue(sender=self.sender,  # type: ignore[arg-type]
                                   later_tables=["seen-ids"])
        seen = TableSeenIds(lambda key: self.apply.current(self.seen_table, key, bytes))
        self.ledger = Ledger(load_config(None), load_pricebook(None)).with_seen(seen)
        self.merger = EventTimeMerger(tuple(KIND_OF_TOPIC), {
            topic: KIND_RANK[kind] for topic, kind in KIND_OF_TOPIC.items()})
        publisher = Publisher(NoTopics(), self.sender, CODEC, SETTINGS, self.ledger,
                              WorkerMetrics(), "test")
        self.apply = Apply(settings, self.ledger, WorkerMetrics(), KIND_OF_TOPIC, self.merger,
                           asyncio.Lock(), publisher, self.commits, self.accounts, self.clock,
                           self.seen_table, seen)
        self.offsets: dict[tuple[str, int], int] = {}

    def take(self, raw: dict[str, Any], kind: str) -> _Event:
        """Put one input event in the merge, as the intake does; returns its Faust event."""
        canonical = normalize_input(raw)
        topic = getattr(TOPICS, kind)
        partition = partition_of(raw["account_id"].encode(), SETTINGS.partitions) \
            if raw["account_id"] else 0
        offset = self.offsets[topic, partition] = self.offsets.get((topic, partition), -1) + 1
        event = _Event(topic, partition, offset)
        self.merger.add(topic, partition, round(canonical["timestamp"].timestamp() * 1000),
                        offset, _Input(event, canonical, False, 0, True, False))  # type: ignore[arg-type]
        return event

    async def release(self) -> None:
        """One release of every partition, then its commit."""
        await self.apply.release_all(lambda partition: lambda topic: math.inf)
        await asyncio.sleep(0.01)

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {key.decode(): snapshot(load_entry(value).state)
                for key, value in self.accounts.data.items()}

    def output_ids(self) -> list[str]:
        """The ids of the account-state events sent, sorted."""
        return sorted(CODEC.decode("account_state", value)["event_id"]
                      for topic, value in self.sender.sent
                      if topic == TOPICS.account_state and value is not None)


def usage(account: str, number: int, when: str) -> dict[str, Any]:
    return {"type": "usage", "event_id": f"u-{account}-{number}", "account_id": account,
            "timestamp": when, "product": "llama-v3p1-8b",
            "quantities": {"input_tokens": 10_000_000}, "requests": 1}


def january(worker: Worker) -> None:
    """Every account opened, postpaid (an invoice at the close), with usage in January."""
    for account in [*ACCOUNTS, OTHER]:
        worker.take({"type": "account_opened", "event_id": f"open-{account}",
                     "account_id": account, "timestamp": "2026-01-02T00:00:00Z",
                     "created_at": "2024-01-01T00:00:00Z", "contract": "self_serve"}, "accounts")
        worker.take(usage(account, 1, "2026-01-10T00:00:00Z"), "usage")


def close_then_more(worker: Worker) -> tuple[_Event, _Event, _Event]:
    """The broadcast close of January on partition 0, then February usage on both partitions."""
    close = worker.take({"type": "close_period", "event_id": "watermark:2026-01",
                         "account_id": "", "timestamp": "2026-02-01T01:00:00Z",
                         "period": "2026-01"}, "control")
    after = worker.take(usage(ACCOUNTS[0], 2, "2026-02-01T02:00:00Z"), "usage")
    other = worker.take(usage(OTHER, 2, "2026-02-01T02:00:00Z"), "usage")
    return close, after, other


def test_a_close_goes_in_chunks_and_ends_as_one_close_does() -> None:
    async def run(chunk: int) -> tuple[Worker, list[tuple[bool, bool, bool, bool]]]:
        worker = Worker(chunk)
        committer = asyncio.ensure_future(worker.commits.run())
        january(worker)
        await worker.release()
        close, after, other = close_then_more(worker)
        steps = []  # after each release: closing, close acked, after acked, other acked
        for _ in range(4):
            await worker.release()
            steps.append((worker.apply.closing, close.acked, after.acked, other.acked))
        committer.cancel()
        return worker, steps

    whole, whole_steps = asyncio.run(run(100))
    chunked, chunked_steps = asyncio.run(run(2))
    assert whole_steps == [(False, True, True, True)] * 4
    # 5 accounts, 2 a release: 3 releases; the other partition goes on from the first.
    assert chunked_steps == [(True, False, False, True), (True, False, False, True),
                             (False, True, True, True), (False, True, True, True)]
    assert chunked.snapshots() == whole.snapshots()
    assert {snapshot["open_period"] for snapshot in chunked.snapshots().values()} == {"2026-02"}
    invoices = [i for i in chunked.output_ids() if i.endswith(":invoice_issued")]
    assert chunked.output_ids() == whole.output_ids() and len(invoices) >= len(ACCOUNTS)


def test_a_revocation_drops_a_close_in_progress() -> None:
    async def run() -> None:
        worker = Worker(2)
        committer = asyncio.ensure_future(worker.commits.run())
        january(worker)
        await worker.release()
        close, after, _ = close_then_more(worker)
        await worker.release()
        assert worker.apply.closing
        worker.apply.forget_partitions({0})
        worker.merger.drop_partition(0)
        await worker.release()
        assert not worker.apply.closing and not close.acked and not after.acked
        committer.cancel()

    asyncio.run(run())


def test_the_setting_defaults_to_2000_reaches_a_child_and_must_be_positive() -> None:
    assert SETTINGS.close_accounts_per_batch == 2000
    settings = load_settings({"BILLING_CLOSE_ACCOUNTS_PER_BATCH": "50"})
    assert load_settings(settings.to_env()).close_accounts_per_batch == 50
    for bad in ("0", "-1", "many"):
        with pytest.raises(SettingsError, match="BILLING_CLOSE_ACCOUNTS_PER_BATCH"):
            load_settings({"BILLING_CLOSE_ACCOUNTS_PER_BATCH": bad})
