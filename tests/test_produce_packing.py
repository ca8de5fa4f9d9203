"""``EventProducer(pack_usage=True)`` packs each account's usage into ``usage_batch`` messages.

No broker (the fake of ``test_produce_validation``); ``tests/integration/test_usage_batch.py``
sends a packed batch through a real one.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from kafka.errors import KafkaTimeoutError

from billing.events import InvalidEvent, normalize_input
from runtime import produce
from runtime.produce import DeliveryError, EventProducer, produce_command
from runtime.rules_files import load_pricebook
from runtime.settings import load_settings
from schemas.codec import Codec
from tests.test_produce_validation import (  # no_registry: autouse, resets the fake
    CREDITS,
    NOW,
    FakeKafkaProducer,
    make_producer,
    no_registry,  # noqa: F401
    usage,
)


def sent_batches(kafka: FakeKafkaProducer) -> list[tuple[bytes, list[str]]]:
    """Each usage message sent: its key and the event ids it carries, in order."""
    return [(message["key"], [event["event_id"] for event in
                              Codec().decode_inputs("usage", message["value"])])
            for message in kafka.sent if message["topic"] == "billing.usage"]


def test_an_accounts_usage_goes_in_batches_of_the_bound_and_the_rest_on_flush() -> None:
    producer, kafka = make_producer(pack_usage=True, pack_linger=60, pack_records=3)
    for n in range(7):
        producer.send(usage(event_id=f"a-{n}"))
    producer.send(usage(event_id="b-0", account_id="acct-2"))
    producer.send(CREDITS)  # not usage: sent at once, alone
    assert sent_batches(kafka) == [(b"acct-1", ["a-0", "a-1", "a-2"]),
                                   (b"acct-1", ["a-3", "a-4", "a-5"])]
    assert [message["topic"] for message in kafka.sent].count("billing.payments") == 1
    producer.flush()
    assert sent_batches(kafka)[2:] == [(b"acct-1", ["a-6"]), (b"acct-2", ["b-0"])]
    producer.close()


def test_packed_records_decode_to_the_events_that_were_sent() -> None:
    producer, kafka = make_producer(pack_usage=True, pack_linger=60)
    events = [usage(event_id=f"a-{n}", requests=n, quantities={"input_tokens": n})
              for n in range(5)]
    for event in events:
        producer.send(event)
    producer.close()
    [message] = kafka.sent
    assert Codec().decode_inputs("usage", message["value"]) == [
        normalize_input(event) for event in events]


def test_pending_records_go_out_after_the_linger_without_a_flush() -> None:
    producer, kafka = make_producer(pack_usage=True, pack_linger=0.05)
    producer.send(usage(event_id="a-0"))
    producer.send(usage(event_id="a-1"))
    deadline = time.monotonic() + 5
    while not kafka.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent_batches(kafka) == [(b"acct-1", ["a-0", "a-1"])]
    producer.close()


def test_a_batch_over_the_message_size_is_split_in_order() -> None:
    producer = EventProducer(load_settings({"BILLING_MAX_MESSAGE_BYTES": "400"}),
                             producer_factory=FakeKafkaProducer, now=lambda: NOW,
                             pricebook=load_pricebook(), pack_usage=True, pack_linger=60)
    kafka = FakeKafkaProducer.instances[-1]
    ids = [f"a-{n}" for n in range(40)]
    for event_id in ids:
        producer.send(usage(event_id=event_id))
    producer.close()
    assert len(kafka.sent) > 1 and all(len(message["value"]) <= 400 for message in kafka.sent)
    assert [event_id for _, batch in sent_batches(kafka) for event_id in batch] == ids


def test_a_bad_usage_event_is_refused_at_send_and_packs_nothing() -> None:
    producer, kafka = make_producer(pack_usage=True, pack_linger=60)
    with pytest.raises(InvalidEvent, match=r"quantities\.input_tokens is negative"):
        producer.send(usage(quantities={"input_tokens": -1}))
    producer.close()
    assert kafka.sent == []


def test_a_failed_batch_reports_every_event_it_carried() -> None:
    producer, _ = make_producer(pack_usage=True, pack_linger=60)
    futures = [producer.send(usage(event_id=f"a-{n}")) for n in range(3)]
    FakeKafkaProducer.fail_with = KafkaTimeoutError("no leader")
    with pytest.raises(DeliveryError) as raised:
        producer.close()
    assert [event_id for event_id, _ in raised.value.failures] == ["a-0", "a-1", "a-2"]
    assert all(future.failed() for future in futures)


@pytest.mark.parametrize("records", [0, 501])
def test_the_record_bound_is_one_to_the_batch_maximum(records: int) -> None:
    with pytest.raises(ValueError, match="pack_records"):
        make_producer(pack_usage=True, pack_records=records)


def test_packing_is_off_by_default() -> None:
    producer, kafka = make_producer()
    producer.send(usage(event_id="a-0"))
    producer.send(usage(event_id="a-1"))
    assert len(kafka.sent) == 2
    producer.close()


def test_billing_produce_packs_a_files_usage_when_asked(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setattr(produce, "KafkaProducer", FakeKafkaProducer)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in [
        usage(event_id="u-1"), CREDITS, usage(event_id="u-2"), usage(event_id="u-3")]))
    result = CliRunner().invoke(produce_command, ["--file", str(path), "--pack-usage", "60"])
    assert result.exit_code == 0, result.output
    assert "4 event(s) delivered" in result.output
    [kafka] = FakeKafkaProducer.instances
    assert sent_batches(kafka) == [(b"acct-1", ["u-1", "u-2", "u-3"])]
