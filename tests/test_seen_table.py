"""The worker's table of seen ids answers exactly as replay's in-memory one, batch after batch,
through evictions and forgetting, and keeps every record small."""

from __future__ import annotations

import struct
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.seen_ids import MemorySeenIds, PaymentRecord
from streams.seen_table import CHUNK_IDS, DELETED, TableSeenIds, account_of_key, account_prefix


class Table:
    """A committed table: what take_writes produced, applied (tombstones delete); ``read``
    answers like ``data.get`` and records each key asked for in ``reads``."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.reads: list[bytes] = []

    def read(self, key: bytes) -> bytes | None:
        self.reads.append(key)
        return self.data.get(key)

    def commit(self, writes: dict[bytes, bytes]) -> None:
        for key, value in writes.items():
            if value == DELETED:
                self.data.pop(key, None)
            else:
                self.data[key] = value


ACCOUNTS = ("a", "a:b", "b")

operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(ACCOUNTS), st.integers(0, 5),
              st.sampled_from([f"e{n}" for n in range(80)])),
    st.tuples(st.just("has"), st.sampled_from(ACCOUNTS), st.integers(0, 5),
              st.sampled_from([f"e{n}" for n in range(80)])),
    st.tuples(st.just("forget"), st.sampled_from(ACCOUNTS), st.integers(0, 3)),
    st.tuples(st.just("pay"), st.sampled_from(["a", "b"]), st.sampled_from(["p1", "p2"]),
              st.sampled_from(["1.000000", "2.000000"])),
    st.just(("batch",)),
    st.just(("restart",)),
    st.just(("before_indexes",)),
)


def _live_buckets(data: dict[bytes, bytes]) -> set[tuple[str, int]]:
    """(account, bucket) of every stored chunk of event ids."""
    live = set()
    for key in data:
        if key.startswith(b"e"):
            account = account_of_key(key)
            (bucket,) = struct.unpack_from(">q", key, 5 + len(account))
            live.add((account.decode(), bucket))
    return live


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(operation, max_size=300), st.sampled_from([1, 5, 1000]),
       st.sets(st.sampled_from(ACCOUNTS)))
def test_the_table_answers_as_the_in_memory_reference(operations, cached_ids, opened_after):
    """As the ledger uses it: forgetting moves up from where it last stopped, to at most the
    newest bucket, and nothing is added below it. Accounts in ``opened_after`` were opened with
    indexes; ``before_indexes`` turns the store into one written before indexes existed."""
    table = Table()
    seen = TableSeenIds(table.data.get, cached_ids=cached_ids)
    reference = MemorySeenIds()
    forgotten_below = dict.fromkeys(ACCOUNTS, 0)
    newest = dict.fromkeys(ACCOUNTS, 0)
    for account in opened_after:
        seen.start_account(account)
    for step in operations:
        kind = step[0]
        if kind == "add":
            _, account, bucket, event_id = step
            if bucket >= forgotten_below[account] \
                    and not reference.has_event(account, bucket, event_id):
                seen.add_event(account, bucket, event_id)
                reference.add_event(account, bucket, event_id)
                newest[account] = max(newest[account], bucket)
        elif kind == "has":
            _, account, bucket, event_id = step
            assert seen.has_event(account, bucket, event_id) == \
                reference.has_event(account, bucket, event_id)
        elif kind == "forget":
            _, account, length = step
            first = forgotten_below[account]
            end = min(first + length, newest[account] + 1)
            if end > first:
                seen.forget_buckets(account, first, end, newest[account])
                reference.forget_buckets(account, first, end, newest[account])
                forgotten_below[account] = end
        elif kind == "pay":
            _, account, payment_id, amount = step
            record = PaymentRecord("credits_purchased", Decimal(amount), None)
            if reference.payment(account, payment_id) is None:
                seen.add_payment(account, payment_id, record)
                reference.add_payment(account, payment_id, record)
            assert seen.payment(account, payment_id) == reference.payment(account, payment_id)
        elif kind == "batch":
            table.commit(seen.take_writes())
        else:  # a restarted worker: only what was committed survives
            table.commit(seen.take_writes())
            if kind == "before_indexes":
                for key in [key for key in table.data if key.startswith(b"h")]:
                    del table.data[key]
            seen = TableSeenIds(table.data.get, cached_ids=cached_ids)
    table.commit(seen.take_writes())
    fresh = TableSeenIds(table.data.get)
    for account in ACCOUNTS:
        for bucket in range(6):
            for number in range(80):
                assert fresh.has_event(account, bucket, f"e{number}") == \
                    reference.has_event(account, bucket, f"e{number}")
    # Nothing forgotten is left behind in the table.
    assert _live_buckets(table.data) == {
        (account, bucket) for account in ACCOUNTS for bucket in range(6)
        if any(reference.has_event(account, bucket, f"e{n}") for n in range(80))}


def test_forgetting_reads_only_the_buckets_an_opened_account_has():
    """An account sending an event a day: forgetting 30 hours reads its index and the two
    buckets it has there, not every hour."""
    table = Table()
    seen = TableSeenIds(table.read)
    seen.start_account("quiet")
    for day in range(3):
        seen.add_event("quiet", day * 24, f"e{day}")
    table.commit(seen.take_writes())
    restarted = TableSeenIds(table.read)
    table.reads.clear()
    restarted.forget_buckets("quiet", 0, 30, 48)
    assert len(table.reads) == 1 + 2 * 2  # the index; per bucket held, its chunk 0 and the end
    table.commit(restarted.take_writes())
    assert _live_buckets(table.data) == {("quiet", 48)}


def test_an_account_without_an_index_reads_for_it_once_until_a_forget_builds_one():
    """Opened before indexes: its events do not each read the missing index again."""
    table = Table()
    seen = TableSeenIds(table.read)
    for number in range(5):
        seen.add_event("old", 0, f"e{number}")
    assert table.reads.count(account_prefix(b"h", "old")) == 1
    seen.forget_buckets("old", 0, 1, 1)
    seen.add_event("old", 1, "e5")
    table.commit(seen.take_writes())
    assert account_prefix(b"h", "old") in table.data  # the forget built and wrote it
    assert table.reads.count(account_prefix(b"h", "old")) == 1


def test_a_busy_hour_is_split_into_small_chunks_and_a_batch_rewrites_only_the_last():
    table = Table()
    seen = TableSeenIds(table.data.get)
    for number in range(CHUNK_IDS * 3 + 1):
        seen.add_event("hot", 7, f"event-{number:06d}")
    first = seen.take_writes()
    assert len(first) == 4
    assert max(len(value) for value in first.values()) < 64 * CHUNK_IDS
    table.commit(first)
    seen.add_event("hot", 7, "one-more")
    assert len(seen.take_writes()) == 1


def test_forgetting_a_bucket_deletes_all_of_its_chunks_after_a_restart():
    table = Table()
    seen = TableSeenIds(table.data.get)
    for number in range(CHUNK_IDS + 5):
        seen.add_event("a", 3, f"e{number}")
    table.commit(seen.take_writes())
    restarted = TableSeenIds(table.data.get)
    restarted.forget_buckets("a", 0, 4, 3)
    writes = restarted.take_writes()
    index = writes.pop(account_prefix(b"h", "a"))
    assert sorted(writes.values()) == [DELETED, DELETED]
    table.commit(writes)
    assert table.data == {}
    assert index == bytes(8)  # the account's index, now of no bucket


def test_keys_start_with_their_account_so_they_follow_its_partition():
    assert account_of_key(account_prefix(b"e", "a:b") + b"\x00" * 12) == b"a:b"
    assert account_of_key(account_prefix(b"p", "ü") + b"pay-1") == "ü".encode()
    # length-prefixed: account "a" + payment "bc" never reads as account "ab" + payment "c"
    assert account_prefix(b"p", "a") + b"bc" != account_prefix(b"p", "ab") + b"c"


def test_the_index_follows_buckets_added_out_of_order_and_forgotten():
    """Events arrive out of order within the horizon: the index takes buckets below its first
    one, and forgetting removes exactly the hours it passes."""
    table = Table()
    seen = TableSeenIds(table.data.get)
    seen.start_account("a")
    for bucket in (5, 3, 9, 4, 3):
        seen.add_event("a", bucket, f"e{bucket}")
    table.commit(seen.take_writes())
    restarted = TableSeenIds(table.data.get)
    restarted.forget_buckets("a", 0, 5, 9)
    table.commit(restarted.take_writes())
    assert _live_buckets(table.data) == {("a", 5), ("a", 9)}
    again = TableSeenIds(table.data.get)
    again.add_event("a", 2, "late")  # below the index's first bucket
    again.forget_buckets("a", 5, 9, 9)
    table.commit(again.take_writes())
    assert _live_buckets(table.data) == {("a", 2), ("a", 9)}
    last = TableSeenIds(table.data.get)
    last.forget_buckets("a", 0, 10, 9)
    table.commit(last.take_writes())
    assert table.data == {account_prefix(b"h", "a"): bytes(8)}
