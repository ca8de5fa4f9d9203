"""The gateway client without a broker: the merge rule (highest version wins, tombstones forget),
unknown accounts, readiness and progress, lag and staleness, threads and asyncio. Kafka is a small
in-memory stand-in for the few kafka-python calls the client makes; the real-broker tests are in
``tests/integration/test_account_status.py``."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from kafka import TopicPartition

from billing.account_status import status_record
from runtime.account_status import AccountStatusClient, StatusTable, StatusTopicError
from runtime.settings import load_settings
from schemas.codec import Codec

SETTINGS = load_settings({})
TOPIC = SETTINGS.topics.account_status
CODEC = Codec(SETTINGS.topics)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def record(account: str, version: int, *, status: str = "active",
           pause_reasons: tuple[str, ...] = (), rpm: int = 600,
           balance: str = "5.000000") -> dict[str, Any]:
    snapshot = {
        "account_id": account, "billing_model": "prepaid", "contract": "self_serve",
        "status": status, "pause_reasons": list(pause_reasons),
        "credit_balance": Decimal(balance), "outstanding_balance": Decimal("0.000000"),
        "month_to_date_spend": Decimal("1.250000"), "open_period": "2026-03",
        "lifetime_spend": Decimal("1.250000"), "lifetime_credits_purchased": Decimal("5.000000"),
        "tier": "1", "monthly_budget": None, "rpm_limit": rpm, "tpm_limit": rpm * 100,
        "has_payment_method": True,
        "auto_top_up": {"enabled": False, "minimum_balance": Decimal("0.000000"),
                        "top_up_amount": Decimal("0.000000")},
        "pending_top_up_request_id": None,
    }
    return status_record(snapshot, T0 + timedelta(seconds=version), version)


class Message(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None


class FakeConsumer:
    """The kafka-python calls the client makes, over in-memory partitions."""

    def __init__(self, log: FakeLog, **config: Any) -> None:
        self.log, self.config = log, config
        self.positions: dict[TopicPartition, int] = {}
        self.closed = False

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(len(self.log.partitions))) if topic == self.log.topic else None

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(partitions, 0)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.highwater(tp) for tp in partitions}

    def highwater(self, tp: TopicPartition) -> int:
        with self.log.lock:
            return len(self.log.partitions[tp.partition])

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Message]]:
        out: dict[TopicPartition, list[Message]] = {}
        with self.log.lock:
            for tp, position in self.positions.items():
                messages = self.log.partitions[tp.partition][position:position + max_records]
                if messages:
                    out[tp] = messages
                    self.positions[tp] = position + len(messages)
        if not out:
            time.sleep(timeout_ms / 1000 / 10)
        return out

    def close(self) -> None:
        self.closed = True


class FakeLog:
    """A topic: partitions of messages, appended to under a lock."""

    def __init__(self, partitions: int = 3, topic: str = TOPIC) -> None:
        self.topic = topic
        self.partitions: list[list[Message]] = [[] for _ in range(partitions)]
        self.lock = threading.Lock()
        self.consumers: list[FakeConsumer] = []

    def append(self, record_or_value: dict[str, Any] | bytes | None, key: str | None = None,
               partition: int | None = None) -> None:
        if isinstance(record_or_value, dict):
            key = key or record_or_value["account_id"]
            value: bytes | None = CODEC.encode("account_status", record_or_value)
        else:
            value = record_or_value
        number = partition if partition is not None else sum(map(ord, key or "")) % len(
            self.partitions)
        with self.lock:
            messages = self.partitions[number]
            messages.append(Message(len(messages), None if key is None else key.encode(), value))

    def consumer(self, **config: Any) -> FakeConsumer:
        consumer = FakeConsumer(self, **config)
        self.consumers.append(consumer)
        return consumer


def client(log: FakeLog, **options: Any) -> AccountStatusClient:
    return AccountStatusClient(SETTINGS, consumer_factory=log.consumer, codec=CODEC,
                               poll_timeout_ms=20, **options)


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- the merge rule -------------------------------------------------------------------------

def test_the_highest_version_wins_whatever_the_order_it_arrives_in() -> None:
    table = StatusTable()
    versions = list(range(1, 51))
    random.Random(3).shuffle(versions)
    for version in versions:
        table.apply("A", record("A", version, rpm=version))
    decision = table.decision("A")
    assert decision.version == 50 and decision.rpm_limit == 50
    assert not table.apply("A", record("A", 49, status="suspended"))
    assert table.decision("A").allowed


def test_at_an_equal_version_the_later_record_wins() -> None:
    """A batch applied again after a crash writes the same state under the same version; and an
    account's first inputs at offset 0 (opened, then its first purchase) leave the worker's
    version at 0 although the state changed (seen on the real broker): the later one counts."""
    table = StatusTable()
    assert table.apply("A", record("A", 0, rpm=100))
    assert table.apply("A", record("A", 0, status="paused", pause_reasons=("credits_exhausted",)))
    assert table.decision("A").reason == "credits_exhausted"
    assert not table.apply("A", record("A", -1))  # lower: ignored


def test_a_paused_or_suspended_account_is_refused_with_its_reasons() -> None:
    table = StatusTable()
    table.apply("P", record("P", 3, status="paused",
                            pause_reasons=("budget_reached", "credits_exhausted")))
    table.apply("S", record("S", 4, status="suspended"))
    paused, suspended = table.decision("P"), table.decision("S")
    assert not paused.allowed and paused.reason == "budget_reached,credits_exhausted"
    assert not suspended.allowed and suspended.reason == "suspended"
    assert paused.credit_balance == Decimal("5.000000") and paused.updated_at == T0 + timedelta(
        seconds=3)


def test_unknown_accounts_are_refused_unless_allowed() -> None:
    refused, allowed = StatusTable(), StatusTable(allow_unknown=True)
    assert not refused.decision("nobody").allowed
    assert refused.decision("nobody").reason == "unknown"
    assert allowed.decision("nobody").allowed and allowed.decision("nobody").reason == "unknown"


def test_a_tombstone_forgets_the_account() -> None:
    table = StatusTable()
    table.apply("A", record("A", 1))
    assert table.apply("A", None)
    assert table.decision("A").reason == "unknown" and len(table) == 0


def test_concurrent_readers_and_a_writer_see_whole_decisions() -> None:
    """A smoke test: readers never see a torn entry nor an error; the last version wins."""
    table = StatusTable()
    records = [record("A", version, rpm=version) for version in range(1, 3001)]
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            seen = 0
            while not done.is_set():
                decision = table.decision("A")
                if decision.version is not None:
                    assert decision.rpm_limit == decision.version  # one record, not a mix
                    assert decision.version >= seen  # never goes back
                    seen = decision.version
        except BaseException as error:
            errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    for item in records:
        table.apply("A", item)
    done.set()
    for reader in readers:
        reader.join(10)
    assert not errors and table.decision("A").version == 3000


# -- the client over a stand-in for Kafka ---------------------------------------------------

def test_it_reads_to_the_end_before_it_is_ready_then_follows() -> None:
    log = FakeLog()
    for index in range(300):
        log.append(record(f"acct-{index}", 10 + index))
    log.append(record("acct-7", 5, status="suspended"))  # older: ignored
    log.append(record("acct-8", 9_999, status="paused", pause_reasons=("credits_exhausted",)))
    wall = iter(range(1_000_000, 2_000_000))
    progresses = []
    statuses = client(log, max_poll_records=10, progress_interval=0.0,
                      on_progress=progresses.append, wall_clock=lambda: next(wall))
    with statuses:
        assert statuses.wait_ready(5)
        assert statuses.bootstrap_seconds is not None and len(statuses) == 300
        assert progresses[-1].ready and progresses[-1].records_read == 302
        assert progresses[-1].offsets_total == 302 and progresses[-1].fraction == 1.0
        assert any(not progress.ready for progress in progresses)  # it showed how far it got
        assert statuses.lag() == 0
        assert statuses.may_send("acct-7").allowed
        refused = statuses.may_send("acct-8")
        assert not refused.allowed and refused.reason == "credits_exhausted"
        assert statuses.status("acct-1") == record("acct-1", 11)
        assert statuses.status("nobody") is None and statuses.may_send("nobody").reason == \
            "unknown"

        log.append(record("acct-1", 50_000, status="suspended"))
        wait_for(lambda: not statuses.may_send("acct-1").allowed)
        assert statuses.version("acct-1") == 50_000 and statuses.lag() == 0
        assert statuses.last_updated_at == T0 + timedelta(seconds=50_000)
        assert statuses.last_applied_at is not None
        assert statuses.last_applied_at > datetime.fromtimestamp(1_000_000, UTC)
    assert log.consumers[0].closed
    assert log.consumers[0].config["group_id"] is None  # no consumer group


def test_on_applied_names_the_accounts_of_each_batch_once_may_send_answers_from_it() -> None:
    log = FakeLog(partitions=1)
    log.append(record("A", 1), partition=0)
    batches: list[tuple[list[str], bool]] = []
    statuses: AccountStatusClient

    def applied(accounts: list[str]) -> None:
        batches.append((accounts, statuses.may_send("B").allowed))
        if accounts == ["B"]:
            raise RuntimeError("a failing callback must not stop the client")

    statuses = client(log, on_applied=applied)
    with statuses:
        assert statuses.wait_ready(5)
        assert batches == [(["A"], False)]  # B unknown yet
        log.append(record("B", 1, status="paused", pause_reasons=("credits_exhausted",)),
                   partition=0)
        wait_for(lambda: len(batches) == 2)
        log.append(record("B", 2), partition=0)
        log.append(record("A", 2), partition=0)
        wait_for(lambda: sum(len(accounts) for accounts, _ in batches) == 4)
        assert batches[1] == (["B"], False)
        assert [account for accounts, _ in batches[2:] for account in accounts] == ["B", "A"]
        assert batches[2][1]  # B's new record was applied before the callback ran
        assert statuses.last_error is None


def test_an_empty_topic_is_ready_at_once() -> None:
    with client(FakeLog()) as statuses:
        assert statuses.ready and statuses.progress.fraction == 1.0
        assert not statuses.may_send("A").allowed


def test_unknown_accounts_may_send_when_the_gateway_says_so() -> None:
    log = FakeLog()
    log.append(record("known", 1, status="suspended"))
    with client(log, allow_unknown=True) as statuses:
        assert statuses.wait_ready(5)
        assert statuses.may_send("new-account").allowed
        assert not statuses.may_send("known").allowed


def test_bad_records_are_counted_and_skipped() -> None:
    log = FakeLog(partitions=1)
    log.append(b"{not avro", key="A", partition=0)
    log.append(record("B", 1), partition=0)
    log.append(record("C", 1), partition=0)
    log.partitions[0][2] = log.partitions[0][2]._replace(key=None)  # no key: no account
    with client(log) as statuses:
        assert statuses.wait_ready(5)
        assert statuses.bad_records == 2 and statuses.account_ids() == ["B"]


def test_a_missing_topic_is_an_error_at_start() -> None:
    log = FakeLog(topic="another-topic")
    with pytest.raises(StatusTopicError, match="does not exist"):
        client(log).start()
    assert log.consumers[0].closed


def test_asyncio_waits_without_blocking_the_loop() -> None:
    log = FakeLog()
    for index in range(50):
        log.append(record(f"acct-{index}", index + 1))

    async def main() -> tuple[bool, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        class Slow(FakeConsumer):
            def poll(self, timeout_ms: int, max_records: int) -> dict:
                time.sleep(0.01)
                return super().poll(timeout_ms, max_records)

        ticker = asyncio.create_task(tick())
        with AccountStatusClient(SETTINGS, consumer_factory=lambda **c: Slow(log, **c),
                                 codec=CODEC, max_poll_records=1) as statuses:
            assert not statuses.ready
            ready = await statuses.wait_ready_async(5)
            decision = statuses.may_send("acct-3")
        ticker.cancel()
        assert decision.allowed and decision.version == 4
        return ready, ticks

    ready, ticks = asyncio.run(main())
    assert ready and ticks > 5  # the loop ran while the client read


def test_wait_ready_times_out_while_the_end_is_not_reached() -> None:
    log = FakeLog(partitions=1)
    log.append(record("A", 1), partition=0)

    class Stalled(FakeConsumer):
        def poll(self, timeout_ms: int, max_records: int) -> dict:
            time.sleep(timeout_ms / 1000)
            return {}

    statuses = AccountStatusClient(SETTINGS, consumer_factory=lambda **c: Stalled(log, **c),
                                   codec=CODEC, poll_timeout_ms=10)
    with statuses:
        assert not statuses.wait_ready(0.2)
        assert not asyncio.run(statuses.wait_ready_async(0.05))
        assert statuses.lag() == 1 and statuses.progress.fraction == 0.0
        assert not statuses.may_send("A").allowed  # not read yet: unknown
