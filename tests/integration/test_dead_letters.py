"""Every kind of bad input, sent through the real broker, lands in the dead-letter topic with a
reason a person can act on, while the good events before and after it are billed; after the
cause is fixed, ``billing deadletter redrive`` sends it through again and it is billed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

import billing
from billing.events import normalize_input
from commands.deadletter import deadletter, read_dead_letters
from runtime.observe import table_snapshots
from runtime.settings import Settings
from schemas.codec import Codec
from tests.integration.pipeline import WorkerProcess, isolated, publish

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, tzinfo=UTC)


AVRO = Codec()  # plain Avro, as the test stacks run without a schema registry


def event(event_type: str, event_id: str, minutes: int, **fields: Any) -> dict[str, Any]:
    return normalize_input({"type": event_type, "event_id": event_id, "account_id": "acct-1",
                            "timestamp": START + timedelta(minutes=minutes), **fields})


def usage(event_id: str, minutes: int, **fields: Any) -> dict[str, Any]:
    return event("usage", event_id, minutes, **{
        "product": "llama-v3p1-8b", "quantities": {"input_tokens": 1_000_000}, **fields})


def raw_usage(event_id: str, **fields: Any) -> bytes:
    """A usage record the schema carries but the rules refuse (no validation on this path)."""
    return AVRO.encode("usage", {**usage(event_id, 5), **fields})


# (what is wrong, topic kind, key, value bytes, words the reason must contain)
BAD_INPUTS: list[tuple[str, str, bytes, bytes, str]] = [
    ("random bytes", "usage", b"acct-1", b"\xff\xfe\x00garbage", "not Avro"),
    ("JSON instead of Avro", "payments", b"acct-1", b'{"type": "credits_purchased"}',
     "looks like JSON"),
    ("truncated Avro", "usage", b"acct-1", raw_usage("t-1")[:9], "not Avro"),
    ("a union branch the topic does not have", "accounts", b"acct-1", b"\x0a\x02x", "schema"),
    ("a negative quantity", "usage", b"acct-1",
     raw_usage("neg-1", quantities={"input_tokens": -5}), "negative"),
    ("a missing (empty) required field", "usage", b"acct-1", raw_usage("empty-1", product=""),
     "product"),
    ("an unknown product", "usage", b"acct-1", raw_usage("p-1", product="gpt-17"),
     "unknown product"),
    ("an unknown meter", "usage", b"acct-1",
     raw_usage("m-1", quantities={"thinking_tokens": 3}), "unknown meter"),
    ("an account never opened", "usage", b"acct-404",
     raw_usage("ghost-1", account_id="acct-404"), "never opened"),
    ("a key that is not the account id", "usage", b"acct-2", raw_usage("key-1"),
     "differs from account_id"),
]


def test_bad_input_is_dead_lettered_and_good_input_billed(stack: Settings, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings, app_id = isolated(stack, "deadletter")
    publish(settings, [
        event("account_opened", "open-1", 0, created_at=START, contract="self_serve"),
        usage("good-before", 1),
    ])
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for _, kind, key, value, _ in BAD_INPUTS:
        producer.send(getattr(settings.topics, kind), key=key, value=value)
    producer.flush()
    producer.close()
    publish(settings, [usage("good-after", 10)])

    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log").run_to_end(timeout=300)

    letters = [entry.letter for entry in read_dead_letters(settings, Codec(settings.topics))]
    assert len(letters) == len(BAD_INPUTS), [letter["reason"] for letter in letters]
    for what, kind, key, value, words in BAD_INPUTS:
        matching = [letter for letter in letters if letter["value"] == value]
        assert matching, f"{what}: not in the dead-letter topic"
        letter = matching[0]
        assert words in letter["reason"], f"{what}: reason {letter['reason']!r}"
        assert letter["topic"] == getattr(settings.topics, kind) and letter["key"] == key
        assert letter["offset"] >= 0 and letter["worker"]

    snapshot = table_snapshots(settings, app_id)["acct-1"]
    # $1 free credit, two good usages of 1M llama tokens at $0.20 each.
    assert snapshot["lifetime_spend"] == Decimal("0.400000")
    assert snapshot["credit_balance"] == Decimal("0.600000")

    # The fix: the price book learns the product. Re-driving that dead letter bills it.
    book = json.loads((Path(billing.__file__).parent / "pricebook.default.json").read_text())
    book["products"]["gpt-17"] = {"input_tokens": "1.00"}
    (tmp_path / "pricebook.json").write_text(json.dumps(book))
    monkeypatch.setenv("BILLING_PRICEBOOK", str(tmp_path / "pricebook.json"))
    redriven = CliRunner().invoke(deadletter, ["redrive", "--reason-contains", "unknown product"],
                                  env=settings.to_env())
    assert redriven.exit_code == 0, redriven.output
    worker.run_to_end(timeout=300)
    snapshot = table_snapshots(settings, app_id)["acct-1"]
    assert snapshot["lifetime_spend"] == Decimal("1.400000")  # + 1M gpt-17 tokens at $1.00
