"""The accounts' seen event ids and payment ids, in a changelog-backed Faust table.

This is :class:`billing.seen_ids.SeenIds` for the worker: the memory the ledger checks copies and
retried payments against, kept outside the account's record so that a busy account's record stays
small (the ids of 35 days of a busy account once made it too large for Kafka). Layout of the table
``seen-ids`` (raw bytes; every key starts with the account, so it lives in the account's partition):

- ``e`` + account + bucket + chunk number -> JSON list of event ids. A bucket is one hour of event
  time (``billing.seen_ids.BUCKET_MS``); its ids are split into chunks of at most
  :data:`CHUNK_IDS`, numbered from 0, so a batch rewrites one small record per account and hour,
  never a large one, and a bucket of any size fits Kafka's message limit. A forgotten bucket's
  chunks are deleted (changelog tombstones).
- ``p`` + account + payment id -> JSON ``[event type, amount, invoice id]``, kept for ever.
- ``h`` + account -> the account's bucket index: which buckets hold ids, as the first bucket
  (8 bytes, big-endian) and a bitmap of the buckets from it on (35 days of hours: at most 106
  bytes). Forgetting reads it instead of looking up every hour the horizon passed: an account
  sending a few events a day otherwise paid a table read per hour of its life. An account opened
  before the index existed gets one when its buckets are next forgotten, by looking up each hour
  from the oldest bucket that may hold ids to its newest (once).

Buckets are read once and cached (least recently used first out, bounded by :data:`CACHED_IDS`
ids), indexes likewise (bounded by :data:`CACHED_INDEXES`), and so is the absence of an index: an
account opened before indexes would otherwise read its missing index at every event until its
next forget builds one. What a batch changes is held in
:attr:`TableSeenIds.pending` until the batch ends; the worker then hands
:meth:`TableSeenIds.take_writes` to the commit queue with the batch's other table values, so the
ids become durable in the same order as the state they belong to (``streams/commit.py``). Until
committed, a value is read back from the commit queue's overlay, like account states.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal

import orjson

from billing.seen_ids import PaymentRecord

CHUNK_IDS = 32  # ids per chunk record: what one batch rewrites at most for one account and hour
CACHED_IDS = 2_000_000  # ids kept in memory across batches (about 200 MB at most)
CACHED_INDEXES = 200_000  # accounts' bucket indexes kept in memory (about 60 MB at most)
DELETED = b""  # a pending or overlay value meaning "deleted" (no real record is empty)

_LENGTH = struct.Struct(">I")
_BUCKET = struct.Struct(">q")


def account_prefix(kind: bytes, account_id: str) -> bytes:
    """``kind`` + the account id, length-prefixed so that no two accounts' keys overlap."""
    encoded = account_id.encode()
    return kind + _LENGTH.pack(len(encoded)) + encoded


def account_of_key(key: bytes) -> bytes:
    """The account id (UTF-8) of a ``seen-ids`` key: what its partition is chosen by."""
    (length,) = _LENGTH.unpack_from(key, 1)
    return key[5:5 + length]


class _Bucket:
    """One account-hour of event ids: the set to look up, and its chunks as stored."""

    __slots__ = ("chunks", "dirty", "ids", "prefix")

    def __init__(self, prefix: bytes, chunks: list[list[str]]) -> None:
        self.prefix = prefix  # key without the chunk number
        self.chunks = chunks
        self.ids = {event_id for chunk in chunks for event_id in chunk}
        self.dirty: set[int] = set()  # chunk numbers changed since the last write

    def key(self, chunk: int) -> bytes:
        return self.prefix + _LENGTH.pack(chunk)


class _Index:
    """The buckets of one account that hold ids (see ``h`` in the module docstring): bit ``n``
    of ``bits`` is bucket ``base + n``. An int, not a set: dumped as it is stored, and a forget
    tests only the hours it passes."""

    __slots__ = ("base", "bits", "dirty")

    def __init__(self, base: int, bits: int, dirty: bool) -> None:
        self.base, self.bits, self.dirty = base, bits, dirty

    @classmethod
    def load(cls, stored: bytes) -> _Index:
        (base,) = _BUCKET.unpack_from(stored)
        return cls(base, int.from_bytes(stored[_BUCKET.size:], "big"), False)

    def dump(self) -> bytes:
        return _BUCKET.pack(self.base) + self.bits.to_bytes((self.bits.bit_length() + 7) // 8,
                                                            "big")

    def add(self, bucket: int) -> None:
        if not self.bits:
            self.base = bucket
        elif bucket < self.base:
            self.bits <<= self.base - bucket
            self.base = bucket
        bit = 1 << (bucket - self.base)
        if not self.bits & bit:
            self.bits |= bit
            self.dirty = True

    def take(self, first: int, end: int) -> list[int]:
        """Remove the buckets from ``first`` to ``end`` (exclusive); return those it held."""
        first, end = max(first, self.base), min(end, self.base + self.bits.bit_length())
        if end <= first:
            return []
        mask = ((1 << (end - first)) - 1) << (first - self.base)
        taken = self.bits & mask  # walked by its set bits only, not by every hour of the range
        held = []
        while taken:
            lowest = taken & -taken
            held.append(self.base + lowest.bit_length() - 1)
            taken ^= lowest
        if held:
            self.bits &= ~mask
            low = (self.bits & -self.bits).bit_length() - 1  # the lowest bucket left
            if low < 0:
                self.base = 0
            elif low > 0:
                self.bits >>= low
                self.base += low
            self.dirty = True
        return held


# Cached in place of the index of an account that has none (opened before indexes existed).
_NO_INDEX = _Index(0, 0, False)


class TableSeenIds:
    """:class:`billing.seen_ids.SeenIds` over the ``seen-ids`` table (see the module docstring).

    ``read(key)`` returns the newest stored value of a key (the commit queue's overlay, else the
    table), ``None`` when absent.
    """

    def __init__(self, read: Callable[[bytes], bytes | None], cached_ids: int = CACHED_IDS) -> None:
        self._read_stored = read
        self.cached_ids = cached_ids
        self.pending: dict[bytes, bytes] = {}  # this batch's writes (DELETED: a tombstone)
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()  # prefix -> bucket, LRU
        self._dirty: dict[bytes, _Bucket] = {}  # buckets changed in this batch
        self._ids_cached = 0
        self._indexes: OrderedDict[str, _Index] = OrderedDict()  # account -> its index, LRU
        # Indexes changed since the last take_writes: walking every cached index at each batch
        # cost a batch time in proportion to the accounts cached (up to CACHED_INDEXES).
        self._dirty_indexes: dict[str, _Index] = {}

    # -- SeenIds ------------------------------------------------------------------------------

    def has_event(self, account_id: str, bucket: int, event_id: str) -> bool:
        return event_id in self._bucket(account_id, bucket).ids

    def add_event(self, account_id: str, bucket: int, event_id: str) -> None:
        entry = self._bucket(account_id, bucket)
        entry.ids.add(event_id)
        chunks = entry.chunks
        if not chunks or len(chunks[-1]) >= CHUNK_IDS:
            chunks.append([])
        chunks[-1].append(event_id)
        entry.dirty.add(len(chunks) - 1)
        self._dirty[entry.prefix] = entry
        self._ids_cached += 1
        index = self._index(account_id)
        if index is not None:
            index.add(bucket)
            if index.dirty:
                self._dirty_indexes[account_id] = index

    def start_account(self, account_id: str) -> None:
        self._cache_index(account_id, _Index(0, 0, True))

    def forget_buckets(self, account_id: str, first: int, end: int, newest: int) -> None:
        index = self._index(account_id)
        if index is None:  # opened before indexes: find its buckets once
            index = _Index(0, 0, True)
            for bucket in range(first, max(end, newest + 1)):
                if self._bucket(account_id, bucket, cache=False).chunks:
                    index.add(bucket)
            self._cache_index(account_id, index)
        held = index.take(first, end)
        if index.dirty:
            self._dirty_indexes[account_id] = index
        for bucket in held:
            entry = self._bucket(account_id, bucket, cache=False)
            for chunk in range(len(entry.chunks)):
                self.pending[entry.key(chunk)] = DELETED
            self._dirty.pop(entry.prefix, None)
            self._drop(entry.prefix)

    def payment(self, account_id: str, payment_id: str) -> PaymentRecord | None:
        stored = self._read(account_prefix(b"p", account_id) + payment_id.encode())
        if stored is None:
            return None
        event_type, amount, invoice_id = orjson.loads(stored)
        return PaymentRecord(event_type, None if amount is None else Decimal(amount), invoice_id)

    def add_payment(self, account_id: str, payment_id: str, record: PaymentRecord) -> None:
        amount = None if record.amount is None else str(record.amount)
        self.pending[account_prefix(b"p", account_id) + payment_id.encode()] = orjson.dumps(
            [record.event_type, amount, record.invoice_id])

    # -- the worker's side --------------------------------------------------------------------

    def take_writes(self) -> dict[bytes, bytes]:
        """This batch's changes (``DELETED``: delete the key), to commit with its states."""
        for entry in self._dirty.values():
            self._stage(entry)
        self._dirty.clear()
        for account_id, index in self._dirty_indexes.items():
            if index.dirty:  # else staged already, when it left the cache
                self._stage_index(account_id, index)
        self._dirty_indexes.clear()
        writes, self.pending = self.pending, {}
        return writes

    def clear_cache(self) -> None:
        """Forget every cached bucket (partitions were revoked: another worker may change them).
        Call between batches: nothing may be pending."""
        self._buckets.clear()
        self._ids_cached = 0
        self._indexes.clear()
        self._dirty_indexes.clear()

    # -- internals ------------------------------------------------------------------------------

    def _read(self, key: bytes) -> bytes | None:
        value = self.pending.get(key)
        if value is None:
            value = self._read_stored(key)
        return None if value is None or value == DELETED else value

    def _bucket(self, account_id: str, bucket: int, cache: bool = True) -> _Bucket:
        prefix = account_prefix(b"e", account_id) + _BUCKET.pack(bucket)
        entry = self._buckets.get(prefix)
        if entry is not None:
            self._buckets.move_to_end(prefix)
            return entry
        chunks: list[list[str]] = []
        while (stored := self._read(prefix + _LENGTH.pack(len(chunks)))) is not None:
            chunks.append(orjson.loads(stored))
        entry = _Bucket(prefix, chunks)
        if cache:
            self._buckets[prefix] = entry
            self._ids_cached += len(entry.ids)
            self._evict()
        return entry

    def _index(self, account_id: str) -> _Index | None:
        """The account's bucket index; None for an account opened before indexes existed."""
        index = self._indexes.get(account_id)
        if index is None:
            stored = self._read(account_prefix(b"h", account_id))
            index = _NO_INDEX if stored is None else _Index.load(stored)
            self._cache_index(account_id, index)
        else:
            self._indexes.move_to_end(account_id)
        return None if index is _NO_INDEX else index

    def _cache_index(self, account_id: str, index: _Index) -> None:
        self._indexes[account_id] = index
        self._indexes.move_to_end(account_id)
        if index.dirty:
            self._dirty_indexes[account_id] = index
        while len(self._indexes) > CACHED_INDEXES:
            evicted_id, evicted = self._indexes.popitem(last=False)
            if evicted.dirty:  # its change stays pending: reads see it until committed
                self._stage_index(evicted_id, evicted)

    def _stage_index(self, account_id: str, index: _Index) -> None:
        self.pending[account_prefix(b"h", account_id)] = index.dump()
        index.dirty = False

    def _stage(self, entry: _Bucket) -> None:
        """Move a bucket's changed chunks into :attr:`pending`."""
        for chunk in entry.dirty:
            self.pending[entry.key(chunk)] = orjson.dumps(entry.chunks[chunk])
        entry.dirty.clear()

    def _drop(self, prefix: bytes) -> None:
        entry = self._buckets.pop(prefix, None)
        if entry is not None:
            self._ids_cached -= len(entry.ids)

    def _evict(self) -> None:
        while self._ids_cached > self.cached_ids and len(self._buckets) > 1:
            prefix, entry = next(iter(self._buckets.items()))
            self._stage(entry)  # its changes stay pending: reads see them until committed
            self._dirty.pop(prefix, None)
            self._drop(prefix)

