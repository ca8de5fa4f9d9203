"""The producer refuses bad events at the source, naming the field, and sends good ones right.

No broker: :class:`FakeKafkaProducer` stands in for ``kafka.KafkaProducer`` (same constructor
keywords, ``send``/``flush``/``close``/``partitions_for``, futures with ``add_errback``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import KafkaTimeoutError

from billing.config import BillingConfig
from billing.events import (
    INPUT_FIELDS,
    MAX_QUANTITY,
    TOPIC_OF_TYPE,
    InvalidEvent,
    normalize_input,
)
from billing.pricebook import PriceBook
from runtime import produce
from runtime.produce import DeliveryError, EventProducer, ProducerChecks, prepare, produce_command
from runtime.rules_files import load_pricebook
from runtime.settings import load_settings
from schemas.codec import Codec
from schemas.topics import Topics
from tests.test_codec import kind_strategy, text, times

PARTITIONS = 4


class FakeFuture:
    def __init__(self) -> None:
        self.errbacks: list[Any] = []

    def add_errback(self, errback: Any, *args: Any) -> FakeFuture:
        self.errbacks.append((errback, args))
        return self

    def chain(self, future: Any) -> FakeFuture:
        return self.add_errback(future.failure)

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


NOW = datetime(2026, 2, 1, 6, tzinfo=UTC)  # the producer's clock in these tests


def make_producer(**options: Any) -> tuple[EventProducer, FakeKafkaProducer]:
    options = {"now": lambda: NOW, "pricebook": load_pricebook(), **options}
    producer = EventProducer(load_settings({}), producer_factory=FakeKafkaProducer, **options)
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


def input_events(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """Canonical input events of a type (as tests.test_codec makes them, quantities in range)."""
    fields = {"event_id": text, "account_id": text, "timestamp": times}
    fields |= {name: QUANTITIES if kind == "quantities" else kind_strategy(kind)
               for name, kind in INPUT_FIELDS[event_type].items()}
    return st.fixed_dictionaries(fields).map(lambda raw: normalize_input({"type": event_type,
                                                                         **raw}))


QUANTITIES = st.dictionaries(text, st.integers(0, MAX_QUANTITY), min_size=1, max_size=5)
any_input = st.sampled_from(sorted(INPUT_FIELDS)).flatmap(input_events)


def pricing(event: dict[str, Any]) -> PriceBook:
    """A price book that knows the product and meters of ``event`` (if it is usage)."""
    if event["type"] != "usage":
        return load_pricebook()
    return PriceBook({event["product"]: {meter: Decimal("0.5") for meter in event["quantities"]}})


@settings(max_examples=50, deadline=None)
@given(event=any_input)
def test_every_type_goes_to_its_topic(event: dict[str, Any]) -> None:
    producer, kafka = make_producer(now=lambda: datetime(2100, 1, 1, tzinfo=UTC),
                                    pricebook=pricing(event))
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


# --- what the pipeline would dead-letter, or silently misread, is refused at the source ----------


@pytest.mark.parametrize(("ahead", "refused"), [
    (timedelta(0), False),
    (timedelta(minutes=5), False),  # the tolerance itself is accepted, as by the worker
    (timedelta(minutes=5, milliseconds=1), True),
    (timedelta(days=30), True),
    (-timedelta(days=300), False),  # backfills: lateness is the account's business, not ours
])
def test_a_timestamp_beyond_the_future_tolerance_of_the_producers_clock_is_refused(
    ahead: timedelta, refused: bool
) -> None:
    producer, kafka = make_producer()
    event = usage(timestamp=NOW + ahead)
    if not refused:
        producer.send(event)
        assert len(kafka.sent) == 1
        return
    with pytest.raises(InvalidEvent) as error:
        producer.send(event)
    assert error.value.field == "timestamp"
    assert "ahead of this producer's clock (2026-02-01T06:00:00.000Z)" in error.value.reason
    assert "0:05:00" in error.value.reason
    assert kafka.sent == []


def test_the_future_tolerance_comes_from_the_billing_config() -> None:
    producer, kafka = make_producer(config=BillingConfig(future_tolerance=timedelta(hours=2)))
    producer.send(usage(timestamp=NOW + timedelta(hours=1)))
    with pytest.raises(InvalidEvent, match="2:00:00"):
        producer.send(usage(event_id="u-2", timestamp=NOW + timedelta(hours=3)))
    assert len(kafka.sent) == 1


def test_every_event_type_is_held_to_the_producers_clock() -> None:
    producer, kafka = make_producer()
    with pytest.raises(InvalidEvent, match="ahead of this producer's clock"):
        producer.send({**CREDITS, "timestamp": "2026-03-01T00:00:00Z"})
    assert kafka.sent == []


@pytest.mark.parametrize(("event", "field", "message"), [
    (usage(product="deepseek-v4"), "product", "unknown product 'deepseek-v4'"),
    (usage(quantities={"input_tokens": 5, "image_tokens": 1}), "quantities.image_tokens",
     "unknown meter 'image_tokens' for product 'deepseek-v3': known meters are "
     "cached_input_tokens, input_tokens, output_tokens"),
])
def test_an_unknown_product_or_meter_is_refused_with_the_pipelines_reason(
    event: dict[str, Any], field: str, message: str
) -> None:
    producer, kafka = make_producer()
    with pytest.raises(InvalidEvent) as refused:
        producer.send(event)
    assert (refused.value.field, message in refused.value.reason) == (field, True)
    with pytest.raises(InvalidEvent) as pipeline:  # what the ledger would dead-letter it with
        load_pricebook().rate(event["product"], event["quantities"])
    assert refused.value.reason == pipeline.value.reason
    assert kafka.sent == []


def test_the_products_are_the_given_price_books() -> None:
    book = PriceBook({"my-model": {"tokens": Decimal("1")}})
    producer, kafka = make_producer(pricebook=book)
    producer.send(usage(product="my-model", quantities={"tokens": 3}))
    with pytest.raises(InvalidEvent, match="unknown product 'deepseek-v3'"):
        producer.send(usage())
    assert len(kafka.sent) == 1


@pytest.mark.parametrize(("event", "field", "message"), [
    (usage(request=500), "request",
     "unknown field 'request' for usage; did you mean 'requests'?"),
    (usage(quantity={"input_tokens": 1}), "quantity",
     "unknown field 'quantity' for usage; did you mean 'quantities'?"),
    ({**CREDITS, "amout": "5.00"}, "amout",
     "unknown field 'amout' for credits_purchased; did you mean 'amount'?"),
    ({**CREDITS, "colour": "red"}, "colour", "unknown field 'colour' for credits_purchased; "
     "its fields are account_id, amount, event_id, payment_id, receipt_url, timestamp, "
     "top_up_request_id, type"),
    # a misspelt required field is named as a typo, not as a missing field
    ({k: v for k, v in usage(acount_id="acct-1").items() if k != "account_id"}, "acount_id",
     "did you mean 'account_id'?"),
])
def test_an_unknown_field_is_refused_with_the_closest_known_one(
    event: dict[str, Any], field: str, message: str
) -> None:
    producer, kafka = make_producer()
    with pytest.raises(InvalidEvent) as refused:
        producer.send(event)
    assert refused.value.field == field
    assert message in refused.value.reason
    assert kafka.sent == []
    if field != "acount_id":
        normalize_input(event)  # which the worker accepts: it ignores unknown fields


def test_ingested_at_of_an_exported_line_is_accepted_and_not_sent() -> None:
    producer, kafka = make_producer()
    producer.send(usage(ingested_at="2026-01-31T12:00:01.000Z"))
    [message] = kafka.sent
    assert Codec().decode_input("usage", message["value"]) == normalize_input(usage())


def test_ids_longer_than_the_configured_size_are_refused() -> None:
    producer, kafka = make_producer(config=BillingConfig(max_id_bytes=16))
    producer.send(usage(event_id="é" * 8))  # 16 bytes of UTF-8
    with pytest.raises(InvalidEvent) as refused:
        producer.send(usage(event_id="é" * 8 + "x"))
    assert refused.value.field == "event_id" and "at most 16" in refused.value.reason
    assert len(kafka.sent) == 1


@pytest.mark.parametrize("count", ["5", "٣", "1_000", 5.0, True, MAX_QUANTITY + 1])
def test_a_quantity_is_a_json_integer_within_max_quantity(count: Any) -> None:
    producer, kafka = make_producer()
    with pytest.raises(InvalidEvent) as refused:
        producer.send(usage(quantities={"input_tokens": count}))
    assert refused.value.field == "quantities.input_tokens"
    producer.send(usage(quantities={"input_tokens": MAX_QUANTITY}))
    assert len(kafka.sent) == 1


def test_prepare_alone_applies_the_same_checks() -> None:
    checks = ProducerChecks(BillingConfig(), load_pricebook(), lambda: NOW)
    settings_, codec = load_settings({}), Codec()
    assert prepare(usage(), settings_, codec, checks).topic == "billing.usage"
    for bad in (usage(request=5), usage(product="x"), usage(timestamp="2026-03-01T00:00:00Z")):
        with pytest.raises(InvalidEvent):
            prepare(bad, settings_, codec, checks)


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


@pytest.mark.parametrize("flags", [
    ("--quantity", "input_tokens=٣"),
    ("--quantity", "input_tokens=1_000"),
    ("--quantity", "input_tokens=²"),
    ("--quantity", "input_tokens= 5"),
    ("--quantity", "input_tokens=1e3"),
    ("--quantity", "input_tokens=5", "--requests", "٣"),
    ("--quantity", "input_tokens=5", "--field", "requests=1_000"),
])
def test_counts_from_flags_are_ascii_whole_numbers(run: Any, flags: tuple[str, ...]) -> None:
    result = run("--type", "usage", "--account", "acct-1", "--product", "deepseek-v3", *flags)
    assert result.exit_code == 1, result.output
    assert "invalid event, not sent: field " in result.output
    assert "Traceback" not in result.output
    assert FakeKafkaProducer.instances == []


def test_flags_are_checked_against_the_given_price_book(run: Any, tmp_path: Path) -> None:
    book = tmp_path / "prices.json"
    book.write_text('{"products": {"my-model": {"tokens": "2.5"}}}')
    result = run("--pricebook", str(book), "--type", "usage", "--account", "acct-1",
                 "--product", "deepseek-v3", "--quantity", "input_tokens=5")
    assert result.exit_code == 1 and "unknown product 'deepseek-v3'" in result.output
    result = run("--pricebook", str(book), "--type", "usage", "--account", "acct-1",
                 "--product", "my-model", "--quantity", "tokens=5")
    assert result.exit_code == 0, result.output


def test_a_bad_price_book_stops_the_command_before_connecting(run: Any, tmp_path: Path) -> None:
    book = tmp_path / "prices.json"
    book.write_text('{"products": {"my-model": {"tokens": "1e3"}}}')
    result = run("--pricebook", str(book), "--file", str(book))
    assert result.exit_code == 1 and "my-model.tokens" in result.output
    assert FakeKafkaProducer.instances == []


def test_a_file_is_held_to_the_same_checks(run: Any, tmp_path: Path) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    lines = [usage(request=3), usage(event_id="u-2", timestamp=future),
             usage(event_id="u-3", product="gpt-9"),
             usage(event_id="u-4", ingested_at="2026-01-31T12:00:01.000Z")]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    result = run("--file", str(path))
    assert result.exit_code == 1
    assert "line 1: field request: unknown field 'request' for usage; did you mean " \
           "'requests'?" in result.output
    assert "line 2: field timestamp: " in result.output
    assert "line 3: field product: unknown product 'gpt-9'" in result.output
    assert "1 event(s) delivered, 0 not delivered, 3 invalid not sent" in result.output
    assert [event["event_id"] for event in sent_events()] == ["u-4"]


def test_an_id_or_message_the_worker_would_dead_letter_for_size_is_refused() -> None:
    producer, kafka = make_producer()
    with pytest.raises(InvalidEvent, match="at most 256") as refused:
        producer.send(usage(event_id="e" * 257))
    assert refused.value.field == "event_id"
    small = EventProducer(load_settings({"BILLING_MAX_MESSAGE_BYTES": "32"}),
                          producer_factory=FakeKafkaProducer, now=lambda: NOW,
                          pricebook=load_pricebook())
    with pytest.raises(InvalidEvent, match="maximum message size of 32 bytes"):
        small.send(usage())
    assert kafka.sent == [] and FakeKafkaProducer.instances[-1].sent == []
