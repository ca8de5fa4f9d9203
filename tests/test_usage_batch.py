"""A ``usage_batch`` message packs one account's usage records; each is a usage event of its own.

Decoding yields the records as canonical ``usage`` events, validated exactly as single usage
messages are; a record that is bad alone is refused alone, naming its index and event_id, and
the others are kept. No broker: the codec and the account record's positions only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.events import MAX_BATCH_RECORDS, InvalidEvent, normalize_input, unpack_batch
from schemas.codec import Codec, CodecError

START = datetime(2026, 1, 5, 12, tzinfo=UTC)


def record(n: int, **changes: Any) -> dict[str, Any]:
    """The ``n``-th usage record of a batch (no account_id: the batch carries it)."""
    return {"event_id": f"u-{n}", "timestamp": START + timedelta(milliseconds=7 * n),
            "product": "llama-v3p1-8b", "quantities": {"input_tokens": 100 + n},
            "requests": 1, **changes}


def batch(records: list[dict[str, Any]], account_id: str = "acct-1") -> dict[str, Any]:
    return {"type": "usage_batch", "account_id": account_id, "records": records}


def single(entry: dict[str, Any], account_id: str = "acct-1") -> dict[str, Any]:
    return {"type": "usage", "account_id": account_id, **entry}


@pytest.fixture
def codec() -> Codec:
    return Codec()


def test_a_batch_decodes_to_the_events_its_records_would_be_alone(codec: Codec) -> None:
    records = [record(n) for n in range(3)]
    value = codec.encode("usage", batch(records))
    alone = [codec.decode_input("usage", codec.encode("usage", single(entry)))
             for entry in records]
    assert codec.decode_inputs("usage", value) == alone
    assert len(value) < sum(len(codec.encode("usage", single(entry))) for entry in records)


def test_a_single_usage_message_is_still_one_event(codec: Codec) -> None:
    value = codec.encode("usage", single(record(0)))
    assert codec.decode_inputs("usage", value) == [codec.decode_input("usage", value)]


def test_a_bad_record_is_refused_alone_naming_its_index_and_event_id(codec: Codec) -> None:
    records = [record(0), record(1, quantities={"input_tokens": -5}), record(2)]
    events = codec.decode_inputs("usage", codec.encode("usage", batch(records)))
    assert [event["event_id"] for event in events if isinstance(event, dict)] == ["u-0", "u-2"]
    refused = events[1]
    assert isinstance(refused, InvalidEvent)
    assert refused.reason == ("usage_batch record 1 (event_id 'u-1'): quantities.input_tokens "
                              "is negative (-5); usage quantities must be >= 0")
    assert refused.field == "records[1].quantities.input_tokens"


def test_an_oversized_id_in_one_record_refuses_that_record(codec: Codec) -> None:
    records = [record(0, event_id="x" * 300), record(1)]
    events = codec.decode_inputs("usage", codec.encode("usage", batch(records)))
    assert isinstance(events[0], InvalidEvent) and events[0].field == "records[0].event_id"
    assert isinstance(events[1], dict)


@pytest.mark.parametrize(("raw", "reason"), [
    (batch([]), "records of a usage_batch must be a non-empty list"),
    (batch([record(n) for n in range(MAX_BATCH_RECORDS + 1)]),
     f"a usage_batch packs 501 records; at most {MAX_BATCH_RECORDS} are accepted"),
    (batch([record(0)], account_id=""), "account_id must be a non-empty string, got ''"),
    (batch([record(0)], account_id="a" * 300), "account_id is 300 bytes of UTF-8; at most 256"),
])
def test_a_bad_batch_is_refused_whole(codec: Codec, raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        codec.decode_inputs("usage", codec.encode("usage", raw))


def test_a_batch_cannot_go_on_another_topic(codec: Codec) -> None:
    with pytest.raises(CodecError, match="'usage_batch' does not belong on the payments topic"):
        codec.encode("payments", batch([record(0)]))


def test_a_batch_is_no_event_a_replay_line_may_be() -> None:
    """``billing export`` writes each record as its own usage line; replay knows no batch."""
    with pytest.raises(InvalidEvent, match="unknown event type 'usage_batch'"):
        normalize_input(batch([record(0)]))


quantities = st.dictionaries(st.sampled_from(["input_tokens", "output_tokens"]),
                             st.integers(-3, 10**6), min_size=1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(quantities, st.integers(0, 5)), min_size=1, max_size=30))
def test_unpacking_keeps_each_record_as_its_single_event(
        entries: list[tuple[dict[str, int], int]]) -> None:
    """Whatever the records, each unpacks to what it is alone: the same event, or a refusal
    with the same reason behind its index and event_id."""
    records = [record(n, quantities=counts, requests=requests)
               for n, (counts, requests) in enumerate(entries)]
    for index, (unpacked, entry) in enumerate(zip(unpack_batch(batch(records)), records,
                                                  strict=True)):
        try:
            expected: dict[str, Any] | str = normalize_input(single(entry))
        except InvalidEvent as error:
            expected = f"usage_batch record {index} (event_id 'u-{index}'): {error.reason}"
        got = unpacked.reason if isinstance(unpacked, InvalidEvent) else unpacked
        assert got == expected
