"""The producer refuses bad events at the source, naming the field, and sends good ones right.

No broker: :class:`FakeKafkaProducer` stands in for ``kafka.KafkaProducer`` (same constructor
keywords, ``send``/``flush``/``close``/``partitions_for``, futures with ``add_errback``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from kafka.errors import KafkaTimeoutError

from billing import produce
from billing.codec import Codec
from billing.events import TOPIC_OF_TYPE, InvalidEvent, normalize_input
from billing.produce import DeliveryError, EventProducer, produce_command
from billing.settings import Topics, load_settings
from tests.test_codec import any_input

PARTITIONS = 4


class FakeFuture:
    def __init__(self) -> None:
        self.errbacks: list[Any] = []

    def add_errback(self, errback: Any, *args: Any) -> FakeFuture:
        self.errbacks.append((errback, args))
        return self

    def fail(self, error: Exception) -> None:
        for errback, args in self.errbacks:
            errback(*args, error)


class FakeKafkaProducer:
    """Records what is sent; fails every pending message at flush when ``fail_with`` is set."""

    fail_with: Exception | None = None
    instances: ClassVar[list[FakeKafkaProducer]] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[dict[str, Any]] = []
        self.pending: list[FakeFuture] = []
        self.closed = False
        FakeKafkaProducer.instances.append(self)

    def send(
        self, topic: str, value: bytes, key: bytes | None, partition: int | None
    ) -> FakeFuture:
        self.sent.append({"topic": topic, "key": key, "value": value, "partition": partition})
        future = FakeFuture()
        self.pending.append(future)
        return future

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def flush(self, timeout: float | None = None) -> None:
        for future in self.pending:
            if self.fail_with is not None:
                future.fail(self.fail_with)
        self.pending = []

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_SCHEMA_REGISTRY_URL", raising=False)
    FakeKafkaProducer.instances = []
    FakeKafkaProducer.fail_with = None


def make_producer() -> tuple[EventProducer, FakeKafkaProducer]:
    producer = EventProducer(load_settings({}), producer_factory=FakeKafkaProducer)
    return producer, FakeKafkaProducer.instances[-1]


def usage(**changes: Any) -> dict[str, Any]:
    return {"type": "usage", "event_id": "u-1", "account_id": "acct-1",
            "timestamp": "2026-01-31T12:00:00Z", "product": "deepseek-v3",
            "quantities": {"input_tokens": 1000, "output_tokens": 20}, **changes}


CREDITS = {"type": "credits_purchased", "event_id": "c-1", "account_id": "acct-1",
           "timestamp": "2026-01-31T12:00:00Z", "amount": "20.00", "payment_id": "pay-1"}


def test_kafka_is_asked_for_durable_idempotent_batched_writes() -> None:
    _, kafka = make_producer()
    assert kafka.config["bootstrap_servers"] == "127.0.0.1:19092"
    assert kafka.config["acks"] == "all" and kafka.config["enable_idempotence"] is True
    assert kafka.config["linger_ms"] > 0 and kafka.config["batch_size"] > 16384
    assert kafka.config["retries"] > 0


def test_usage_is_keyed_by_account_and_encoded_with_the_codec() -> None:
    producer, kafka = make_producer()
    producer.send(usage())
    [message] = kafka.sent
    assert (message["topic"], message["key"], message["partition"]) == ("billing.usage",
                                                                         b"acct-1", None)
    assert Codec().decode_input("usage", message["value"]) == normalize_input(usage())


@settings(max_examples=50, deadline=None)
@given(event=any_input)
def test_every_type_goes_to_its_topic(event: dict[str, Any]) -> None:
    producer, kafka = make_producer()
    producer.send(event)
    kind = TOPIC_OF_TYPE[event["type"]]
    assert {message["topic"] for message in kafka.sent} == {getattr(producer.settings.topics,
                                                                    kind)}
    assert Codec().decode_input(kind, kafka.sent[0]["value"]) == event


@pytest.mark.parametrize(("event", "field"), [
    (usage(quantities={"input_tokens": -5}), "quantities.input_tokens"),
    ({k: v for k, v in usage().items() if k != "account_id"}, "account_id"),
    (usage(requests=-1), "requests"),
    (usage(timestamp="2026-01-31T12:00:00"), "timestamp"),
    ({**CREDITS, "amount": 20.0}, "amount"),
    ({**CREDITS, "amount": "0"}, "amount"),
    ({**CREDITS, "amount": "1000000000000"}, "amount"),  # beyond decimal(18, 6): the codec says
    ({**CREDITS, "type": "refund_issued"}, "type"),
])
def test_invalid_events_are_refused_naming_the_field_and_nothing_is_sent(
    event: dict[str, Any], field: str
) -> None:
    producer, kafka = make_producer()
    with pytest.raises(InvalidEvent) as refused:
        producer.send(event)
    assert refused.value.field == field
    assert field.split(".")[0] in refused.value.reason
    assert kafka.sent == []


def test_a_broadcast_close_period_goes_to_every_partition() -> None:
    producer, kafka = make_producer()
    producer.send({"type": "close_period", "event_id": "close-1", "account_id": "",
                   "timestamp": "2026-02-01T01:00:00Z", "period": "2026-01"})
    assert [(m["topic"], m["key"], m["partition"]) for m in kafka.sent] == [
        ("billing.control", None, partition) for partition in range(PARTITIONS)]


def test_delivery_failures_are_raised_by_flush_then_forgotten() -> None:
    producer, kafka = make_producer()
    producer.send(usage())
    producer.send(usage(event_id="u-2"))
    kafka.fail_with = KafkaTimeoutError("no leader")
    with pytest.raises(DeliveryError) as failed:
        producer.flush()
    assert [event_id for event_id, _ in failed.value.failures] == ["u-1", "u-2"]
    assert "no leader" in str(failed.value)
    producer.flush()  # reported once


def test_close_flushes_and_closes_even_when_delivery_failed() -> None:
    producer, kafka = make_producer()
    kafka.fail_with = KafkaTimeoutError("no leader")
    with pytest.raises(DeliveryError), producer:
        producer.send(usage())
    assert kafka.closed


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(produce, "KafkaProducer", FakeKafkaProducer)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(produce_command, list(args))

    return invoke


def sent_events() -> list[dict[str, Any]]:
    [kafka] = FakeKafkaProducer.instances
    kind_of_topic = {getattr(Topics(), kind): kind for kind in TOPIC_OF_TYPE.values()}
    return [Codec().decode_input(kind_of_topic[message["topic"]], message["value"])
            for message in kafka.sent]


def test_one_usage_event_from_flags(run: Any) -> None:
    result = run("--type", "usage", "--account", "acct-1", "--product", "deepseek-v3",
                 "--quantity", "input_tokens=1000", "--quantity", "output_tokens=20")
    assert result.exit_code == 0, result.output
    [event] = sent_events()
    assert event["quantities"] == {"input_tokens": 1000, "output_tokens": 20}
    assert event["requests"] == 1 and uuid.UUID(event["event_id"])
    assert datetime.now(UTC) - event["timestamp"] < timedelta(minutes=1)


def test_other_types_take_their_fields(run: Any) -> None:
    result = run("--type", "auto_top_up_configured", "--account", "acct-1", "--event-id", "a-1",
                 "--timestamp", "2026-01-31T12:00:00Z", "--field", "enabled=true",
                 "--field", "minimum_balance=5", "--field", "top_up_amount=25.50")
    assert result.exit_code == 0, result.output
    [event] = sent_events()
    assert (event["enabled"], str(event["top_up_amount"])) == (True, "25.500000")


def test_an_invalid_flag_event_is_not_sent(run: Any) -> None:
    result = run("--type", "usage", "--account", "acct-1", "--product", "deepseek-v3",
                 "--quantity", "input_tokens=-5")
    assert result.exit_code == 1
    assert "field quantities.input_tokens" in result.output
    assert FakeKafkaProducer.instances == []  # refused before connecting


def test_an_unknown_field_is_a_usage_error(run: Any) -> None:
    result = run("--type", "budget_set", "--account", "acct-1", "--field", "budget=5")
    assert result.exit_code == 2 and "monthly_budget" in result.output


def test_a_file_sends_the_valid_lines_and_reports_the_others(run: Any, tmp_path: Path) -> None:
    lines = [orjson.dumps(usage()), b"{not json", orjson.dumps(usage(event_id="u-2",
             quantities={"input_tokens": -1})), b"", orjson.dumps(CREDITS)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = run("--file", str(path))
    assert result.exit_code == 1
    assert "line 2: not JSON" in result.output
    assert "line 3: field quantities.input_tokens" in result.output
    assert "2 event(s) delivered, 0 not delivered, 2 invalid not sent" in result.output
    assert [event["event_id"] for event in sent_events()] == ["u-1", "c-1"]


def test_delivery_failure_fails_the_command(run: Any, tmp_path: Path) -> None:
    FakeKafkaProducer.fail_with = KafkaTimeoutError("no leader")
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(usage()) + b"\n")
    result = run("--file", str(path))
    assert result.exit_code == 1
    assert "0 event(s) delivered, 1 not delivered" in result.output
