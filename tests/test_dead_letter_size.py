"""No input can make its dead letter too large to send: past the maximum message size a dead letter
keeps a prefix of the key and value with their size and SHA-256, and texts are cut; an oversized
message gets a reason naming its size, the limit and the setting; redrive reads a truncated
letter's original back and refuses one that is gone or is not the same message."""

from __future__ import annotations

import hashlib
import io
import os
import re
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from billing.events import InvalidEvent
from commands.deadletter import NotRetrieved, fetch_original, read_entry
from runtime.dead_letters import (
    DEAD_LETTER_KEY_BYTES,
    INLINE_CEILING,
    PREFIX_BYTES,
    REASON_BYTES,
    clip_text,
    dead_letter_key,
    make_dead_letter,
)
from runtime.settings import SettingsError, load_settings
from schemas import load_schema
from schemas.codec import Codec, check_message_size, oversized_reason

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
KIB = 1024
MB_VALUE = os.urandom(1024 * KIB)
BIG_KEY = b"k" * 300_000
LIMIT = 65536


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def letter_for(key: bytes | None, value: bytes | None, *, reason: str = "too large",
               max_bytes: int = LIMIT, **texts: str) -> tuple[bytes, dict[str, Any]]:
    codec = Codec()
    encoded = make_dead_letter(reason, texts.get("field"), key, value,
                               texts.get("topic", "billing.usage"), 2, 1234,
                               texts.get("worker", "host:1"), failed_at=T0, codec=codec,
                               max_bytes=max_bytes)
    entry = read_entry(codec, 0, 0, encoded)
    assert entry.error is None, entry.error
    return encoded, entry.letter


def test_a_1_mb_value_and_a_300_kb_key_make_a_small_dead_letter() -> None:
    encoded, letter = letter_for(BIG_KEY, MB_VALUE)
    assert len(encoded) < 64 * KIB
    assert letter["value"] == MB_VALUE[:PREFIX_BYTES] and letter["value_truncated"]
    assert letter["value_size"] == len(MB_VALUE) and letter["value_sha256"] == sha(MB_VALUE)
    assert letter["key"] == BIG_KEY[:PREFIX_BYTES] and letter["key_truncated"]
    assert letter["key_size"] == 300_000 and letter["key_sha256"] == sha(BIG_KEY)
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("billing.usage", 2, 1234)
    entry = read_entry(Codec(), 0, 0, encoded)
    assert entry.truncated
    assert entry.size_note == (f" {{key 300,000 bytes, sha256 {sha(BIG_KEY)[:16]}...: kept the "
                               f"first 1,024; value 1,048,576 bytes, sha256 "
                               f"{sha(MB_VALUE)[:16]}...: kept the first 1,024}}")


def test_up_to_the_limit_the_bytes_are_kept_whole_one_more_and_they_are_cut() -> None:
    _, whole = letter_for(b"acct-1", b"x" * LIMIT)
    assert whole["value"] == b"x" * LIMIT and not whole["value_truncated"]
    assert whole["value_size"] == LIMIT and whole["value_sha256"] == sha(b"x" * LIMIT)
    assert whole["key"] == b"acct-1" and not whole["key_truncated"]
    _, cut = letter_for(b"acct-1", b"x" * (LIMIT + 1))
    assert cut["value"] == b"x" * PREFIX_BYTES and cut["value_truncated"]
    assert cut["value_size"] == LIMIT + 1


def test_none_stays_none() -> None:
    _, letter = letter_for(None, None)
    assert letter["key"] is None and letter["value"] is None
    assert letter["key_size"] is letter["value_sha256"] is None
    assert not letter["key_truncated"] and not letter["value_truncated"]


def test_whatever_the_limit_and_the_texts_the_dead_letter_stays_well_under_1_mb() -> None:
    """A limit raised past Kafka's own still cuts at INLINE_CEILING; huge texts are cut."""
    huge = "é" * 500_000  # two UTF-8 bytes each
    encoded, letter = letter_for(b"k" * 900_000, os.urandom(900_000), reason=huge,
                                 max_bytes=2**31 - 1, field=huge, worker=huge, topic=huge)
    assert len(encoded) < 600 * KIB
    assert letter["value_truncated"] and letter["key_truncated"]
    assert len(letter["reason"].encode()) <= REASON_BYTES
    assert letter["reason"].startswith("éé") and letter["reason"].endswith("[1,000,000 bytes, cut]")
    for name in ("field", "worker", "topic"):
        assert len(letter[name].encode()) <= KIB
    _, kept = letter_for(b"k", b"v" * INLINE_CEILING, max_bytes=2**31 - 1)
    assert not kept["value_truncated"]


def test_clip_text_keeps_whole_characters_and_short_text_as_it_is() -> None:
    assert clip_text("short", 100) == "short"
    clipped = clip_text("€" * 100, 50)  # three bytes each
    assert len(clipped.encode()) <= 50 and clipped.startswith("€") and "cut" in clipped
    assert clip_text("a\ud800b", 100) == "a?b"  # a lone surrogate could not be encoded


def test_oversized_reason_names_the_size_the_limit_and_the_setting() -> None:
    assert oversized_reason(b"k" * LIMIT, b"v" * LIMIT, LIMIT) is None
    assert oversized_reason(None, None, LIMIT) is None
    reason = oversized_reason(b"acct-1", MB_VALUE, LIMIT)
    assert reason == ("message value is 1,048,576 bytes, over the maximum message size of "
                      "65,536 bytes (BILLING_MAX_MESSAGE_BYTES): fix the producer, or raise "
                      "BILLING_MAX_MESSAGE_BYTES on the workers and redrive")
    both = oversized_reason(BIG_KEY, MB_VALUE, LIMIT)
    assert both is not None
    assert both.startswith("message key is 300,000 bytes and value is 1,048,576 bytes, over")
    with pytest.raises(InvalidEvent) as raised:
        check_message_size(BIG_KEY, b"", LIMIT)
    assert raised.value.reason == oversized_reason(BIG_KEY, b"", LIMIT)
    assert raised.value.field is None
    check_message_size(b"acct-1", b"v", LIMIT)  # no exception


def test_the_dead_letter_key_is_the_original_key_or_its_hash() -> None:
    assert dead_letter_key(None) is None
    assert dead_letter_key(b"acct-1") == b"acct-1"
    assert dead_letter_key(b"k" * DEAD_LETTER_KEY_BYTES) == b"k" * DEAD_LETTER_KEY_BYTES
    hashed = dead_letter_key(BIG_KEY)
    assert hashed == b"sha256:" + sha(BIG_KEY).encode() and len(hashed) == 71


def test_a_dead_letter_written_with_the_previous_schema_is_still_read() -> None:
    """No registry: the bytes carry no schema id, and old letters are in the topic already."""
    old = {"key": b"acct-1", "value": b"\xff", "topic": "billing.usage", "partition": 1,
           "offset": 7, "reason": "not Avro", "field": None, "failed_at": T0, "worker": "w"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(load_schema("dead_letter",
                                                                       previous=True)), old)
    entry = read_entry(Codec(), 0, 3, body.getvalue())
    assert entry.error is None
    assert entry.letter == {**old, "key_size": None, "key_sha256": None, "key_truncated": False,
                            "value_size": None, "value_sha256": None, "value_truncated": False}
    assert not entry.truncated and entry.size_note == ""
    assert read_entry(Codec(), 0, 4, b"\xff\x00garbage").error is not None


def test_the_setting_defaults_to_64_kib_and_must_be_positive() -> None:
    assert load_settings({}).max_message_bytes == 65536
    settings = load_settings({"BILLING_MAX_MESSAGE_BYTES": "1048576"})
    assert settings.max_message_bytes == 1048576
    assert load_settings(settings.to_env()) == settings  # a child process gets the same limit
    for bad in ("0", "-5", "64k"):
        with pytest.raises(SettingsError, match="BILLING_MAX_MESSAGE_BYTES"):
            load_settings({"BILLING_MAX_MESSAGE_BYTES": bad})


# --- redrive's fetch of the original, against a fake consumer -------------------------------------


class FakeConsumer:
    """One partition holding ``records`` (offset -> (key, value)) from ``start`` to ``end``."""

    def __init__(self, records: dict[int, tuple[bytes | None, bytes | None]], start: int,
                 end: int) -> None:
        self.records, self.start, self.end, self.position = records, start, end, 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0} if topic == "t" else set()

    def assign(self, partitions: list[Any]) -> None:
        self.tp = partitions[0]

    def beginning_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        return {self.tp: self.start}

    def end_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        return {self.tp: self.end}

    def seek(self, tp: Any, offset: int) -> None:
        self.position = offset

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[ConsumerRecord]]:
        offset = min((o for o in self.records if o >= self.position), default=None)
        if offset is None:
            return {}
        key, value = self.records[offset]
        self.position = offset + 1
        return {self.tp: [ConsumerRecord("t", 0, None, offset, 0, 0, key, value, [], None,
                                         len(key or b""), len(value or b""), -1)]}


def truncated_letter(offset: int, key: bytes, value: bytes, topic: str = "t") -> dict[str, Any]:
    encoded = make_dead_letter("too large", None, key, value, topic, 0, offset, "w",
                               codec=Codec(), max_bytes=LIMIT)
    return read_entry(Codec(), 0, 0, encoded).letter


def test_fetch_original_returns_the_same_message() -> None:
    consumer = FakeConsumer({5: (b"acct-1", MB_VALUE), 6: (b"acct-1", b"next")}, 0, 7)
    record = fetch_original(consumer, truncated_letter(5, b"acct-1", MB_VALUE))
    assert (record.offset, record.key, record.value) == (5, b"acct-1", MB_VALUE)


@pytest.mark.parametrize(("records", "start", "end", "words"), [
    ({9: (b"acct-1", b"x")}, 9, 10, "no longer retained: t[0] now starts at offset 9"),
    ({}, 0, 3, "ends at offset 3, before 5"),
    ({5: (b"acct-1", b"other bytes")}, 0, 7, "holds a different message: its value is 11 bytes"),
    ({5: (b"acct-2", MB_VALUE)}, 0, 7, "holds a different message: its key is 6 bytes"),
    ({6: (b"acct-1", MB_VALUE)}, 0, 7, "holds no record (the next one is at 6)"),
])
def test_fetch_original_says_why_it_cannot(records: dict[int, tuple[bytes, bytes]], start: int,
                                           end: int, words: str) -> None:
    consumer = FakeConsumer(records, start, end)
    with pytest.raises(NotRetrieved, match=re.escape(words)):
        fetch_original(consumer, truncated_letter(5, b"acct-1", MB_VALUE))


def test_fetch_original_of_a_partition_that_does_not_exist() -> None:
    with pytest.raises(NotRetrieved, match=r"gone\[0\] does not exist"):
        fetch_original(FakeConsumer({}, 0, 0),
                       truncated_letter(5, b"acct-1", MB_VALUE, topic="gone"))
