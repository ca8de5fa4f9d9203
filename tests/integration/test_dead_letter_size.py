"""Dead letters of messages too large to keep, against the real broker: the letter keeps a prefix
and the SHA-256, ``billing deadletter list`` says so, and ``billing deadletter redrive`` reads the
whole message back from its topic, partition and offset and republishes it byte for byte; when
Kafka no longer holds it (records deleted below it), redrive names it, skips it and exits 1.

The worker side (dead-lettering an oversized input) is in ``streams/intake.py``; here the
dead letters are built with :func:`make_dead_letter` for messages really produced to a topic."""

from __future__ import annotations

import os
import re

import pytest
from click.testing import CliRunner
from kafka import KafkaProducer, TopicPartition

from commands.deadletter import deadletter, read_dead_letters
from runtime.codecs import codec_for
from runtime.dead_letters import PREFIX_BYTES, dead_letter_key, make_dead_letter, sha256_hex
from runtime.settings import Settings
from runtime.topic_reader import read_topic
from runtime.topics import admin_client
from schemas.codec import oversized_reason
from tests.integration.pipeline import isolated

pytestmark = pytest.mark.integration

BIG_VALUE = os.urandom(1_000_000)  # fits the broker's default 1 MB limit, not a dead letter whole
GONE_VALUE = os.urandom(200_000)
BIG_KEY = b"k" * 300_000


def produce(settings: Settings, messages: list[tuple[str, int, bytes, bytes]]) -> list[int]:
    """Send (topic, partition, key, value) messages; return their offsets."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             max_request_size=2 * 1024 * 1024)
    try:
        futures = [producer.send(topic, key=key, value=value, partition=partition)
                   for topic, partition, key, value in messages]
        producer.flush()
        return [future.get(timeout=30).offset for future in futures]
    finally:
        producer.close()


def test_truncated_dead_letters_are_redriven_from_the_source_while_kafka_holds_it(
        stack: Settings) -> None:
    settings, _ = isolated(stack, "dlsize")
    source, limit = settings.topics.usage, settings.max_message_bytes
    originals = [(source, 0, b"acct-1", BIG_VALUE), (source, 0, BIG_KEY, b"small value"),
                 (source, 1, b"acct-2", GONE_VALUE)]
    offsets = produce(settings, originals)
    codec = codec_for(settings)
    letters = [(dead_letter_key(key),
                make_dead_letter(oversized_reason(key, value, limit) or "", None, key, value,
                                 topic, partition, offset, "test-worker", codec=codec,
                                 max_bytes=limit))
               for (topic, partition, key, value), offset in zip(originals, offsets, strict=True)]
    small = make_dead_letter("not Avro: looks like JSON", None, b"acct-3", b'{"json": 1}', source,
                             1, 999, "test-worker", codec=codec, max_bytes=limit)
    produce(settings, [(settings.topics.dead_letter, 0, key or b"", value)
                       for key, value in [*letters, (b"acct-3", small)]])
    assert all(len(value) < 8 * 1024 for _, value in letters)
    assert letters[1][0] == b"sha256:" + sha256_hex(BIG_KEY).encode()

    # The third message's offset falls below its partition's log start.
    with admin_client(settings) as admin:
        admin.delete_records({TopicPartition(source, 1): offsets[2] + 1})

    entries = {(entry.letter["partition"], entry.letter["offset"]): entry
               for entry in read_dead_letters(settings, codec)}
    assert entries[0, offsets[0]].letter["value"] == BIG_VALUE[:PREFIX_BYTES]
    assert entries[0, offsets[0]].letter["value_sha256"] == sha256_hex(BIG_VALUE)
    assert entries[0, offsets[1]].letter["key"] == BIG_KEY[:PREFIX_BYTES]

    env = settings.to_env()
    listed = CliRunner().invoke(deadletter, ["list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert (f"{{value 1,000,000 bytes, sha256 {sha256_hex(BIG_VALUE)[:16]}...: kept the first "
            "1,024}") in listed.output
    assert "message value is 1,000,000 bytes, over the maximum message size of 65,536 bytes " \
           "(BILLING_MAX_MESSAGE_BYTES)" in listed.output

    gone = entries[1, offsets[2]]
    dry = CliRunner().invoke(deadletter, ["redrive", "--all", "--dry-run"], env=env)
    assert dry.exit_code == 1, dry.output
    assert f"skip {gone.position} -> {source}[1]@{offsets[2]}: no longer retained" in dry.output
    assert "3 dead letter(s) would be redriven, 1 skipped" in dry.output

    redriven = CliRunner().invoke(deadletter, ["redrive", "--all"], env=env)
    assert redriven.exit_code == 1, redriven.output  # one could not be redriven
    assert re.search(rf"skip {gone.position} -> \S+: no longer retained: {re.escape(source)}\[1\] "
                     rf"now starts at offset {offsets[2] + 1}", redriven.output), redriven.output
    assert ("the whole message, key 6 and value 1,000,000 bytes, read back from the source; "
            "sha256 matches") in redriven.output
    assert "note: it is over BILLING_MAX_MESSAGE_BYTES=65,536" in redriven.output
    assert (f"3 dead letter(s) redriven, 0 failed, 1 skipped ({gone.position}: not retrievable"
            in redriven.output)

    back = [(record.partition, record.offset, record.key, record.value)
            for record in read_topic(settings, source)]
    assert (0, offsets[1] + 1, b"acct-1", BIG_VALUE) in back  # the whole original, byte for byte
    assert (0, offsets[1] + 2, BIG_KEY, b"small value") in back
    assert (1, offsets[2] + 1, b"acct-3", b'{"json": 1}') in back  # not truncated: as before
    assert [value for _, _, _, value in back].count(GONE_VALUE) == 0
