"""The codec round-trips every event exactly, in both framings, and explains bytes it cannot read.

No broker and no real schema registry: none that speaks Confluent's API installs from the package
registries this project uses (Confluent's is not on Maven Central, Karapace is not on PyPI), so
the registry framing is tested against :class:`FakeRegistry`, an in-process HTTP server on
127.0.0.1 that implements the two endpoints the codec calls.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.events import (
    INPUT_FIELDS,
    MAX_QUANTITY,
    OUTPUT_FIELDS,
    SNAPSHOT_FIELDS,
    TOPIC_OF_TYPE,
    InvalidEvent,
    normalize_input,
)
from commands.deadletter import read_entry, select
from runtime.dead_letters import make_dead_letter
from schemas import load_schema
from schemas.codec import HEADER, Codec, CodecError
from schemas.registry import RegistryError, SchemaRegistry
from schemas.topics import Topics

# --- a fake Confluent schema registry ------------------------------------------------------------


class FakeRegistry(ThreadingHTTPServer):
    """``POST /subjects/{s}/versions`` and ``GET /schemas/ids/{id}``, in memory; ids from 1."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RegistryHandler)
        self.schemas: list[str] = []
        self.subjects: dict[str, list[int]] = {}
        self.calls: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, subject: str, schema: str) -> int:
        if schema not in self.schemas:
            self.schemas.append(schema)
        schema_id = self.schemas.index(schema) + 1
        self.subjects.setdefault(subject, []).append(schema_id)
        return schema_id


class _RegistryHandler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def do_POST(self) -> None:
        self.server.calls.append(f"POST {self.path}")
        match = re.fullmatch(r"/subjects/([^/]+)/versions", self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if match is None:
            return self._answer(404, {"error_code": 404, "message": "not found"})
        self._answer(200, {"id": self.server.add(match[1], body["schema"])})

    def do_GET(self) -> None:
        self.server.calls.append(f"GET {self.path}")
        match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
        schema_id = int(match[1]) if match else 0
        if not 1 <= schema_id <= len(self.server.schemas):
            return self._answer(404, {"error_code": 40403, "message": "Schema not found"})
        self._answer(200, {"schema": self.server.schemas[schema_id - 1]})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on ``calls`` instead."""


@pytest.fixture(scope="module")
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", params=["plain", "registry"])
def codec(request: pytest.FixtureRequest, registry: FakeRegistry) -> Codec:
    """Each test runs with both framings."""
    return Codec() if request.param == "plain" else Codec(registry=SchemaRegistry(registry.url))


# --- events built from the tables of billing.events ----------------------------------------------

MAX_MONEY = Decimal("999999999999.999999")  # decimal(18, 6)
text = st.text(min_size=1, max_size=20)
times = st.datetimes(datetime(1971, 1, 1), datetime(2099, 12, 31), timezones=st.just(UTC)).map(
    lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
money = st.decimals(Decimal(0), MAX_MONEY, places=6)
signed_money = st.decimals(-MAX_MONEY, MAX_MONEY, places=6)
KIND_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "str": text,
    "date": st.dates(),
    "money": money,
    "money>0": st.decimals(Decimal("0.000001"), MAX_MONEY, places=6),
    "time": times,
    "bool": st.booleans(),
    "requests": st.integers(0, 2**63 - 1),
    "int": st.integers(-(2**63), 2**63 - 1),
    "quantities": st.dictionaries(text, st.integers(0, MAX_QUANTITY), min_size=1, max_size=5),
    "contract": st.sampled_from(["self_serve", "enterprise"]),
    "billing_model": st.sampled_from(["prepaid", "postpaid"]),
    "period": st.builds("{:04d}-{:02d}".format, st.integers(1971, 2200), st.integers(1, 12)),
    "list[str]": st.lists(text, max_size=3).map(sorted),
}


def kind_strategy(kind: str, *, output: bool = False) -> st.SearchStrategy[Any]:
    """Values of a field kind; outputs may carry negative money (balances after usage in flight)."""
    if kind.endswith("?"):
        return st.none() | kind_strategy(kind[:-1], output=output)
    if kind == "money" and output:
        return signed_money
    if kind == "auto_top_up":
        return st.fixed_dictionaries({"enabled": st.booleans(), "minimum_balance": money,
                                      "top_up_amount": money})
    return KIND_STRATEGIES[kind]


def input_events(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = {"event_id": text, "account_id": text, "timestamp": times}
    fields |= {name: kind_strategy(kind) for name, kind in INPUT_FIELDS[event_type].items()}
    return st.fixed_dictionaries(fields).map(lambda raw: normalize_input({"type": event_type,
                                                                         **raw}))


snapshots = st.fixed_dictionaries(
    {name: kind_strategy(kind, output=True) for name, kind in SNAPSHOT_FIELDS.items()})


def output_events(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = {"event_id": text, "account_id": text, "timestamp": times, "cause_event_id": text}
    fields |= {name: kind_strategy(kind, output=True)
               for name, kind in OUTPUT_FIELDS[event_type].items()}
    return st.fixed_dictionaries({**fields, "snapshot": snapshots}).map(
        lambda event: {"type": event_type, **event})


any_input = st.sampled_from(sorted(INPUT_FIELDS)).flatmap(input_events)
any_output = st.sampled_from(sorted(OUTPUT_FIELDS)).flatmap(output_events)
T0 = datetime(2026, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)


def usage(**changes: Any) -> dict[str, Any]:
    return normalize_input({"type": "usage", "event_id": "u-1", "account_id": "acct-1",
                            "timestamp": "2026-01-31T12:00:00.123Z", "product": "deepseek-v3",
                            "quantities": {"input_tokens": 1000, "output_tokens": 20}, **changes})


def credits(amount: str) -> dict[str, Any]:
    return normalize_input({"type": "credits_purchased", "event_id": "c-1", "account_id": "acct-1",
                            "timestamp": "2026-01-31T12:00:00Z", "amount": amount,
                            "payment_id": "pay-1"})


# --- round trips ---------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(event=any_input)
def test_every_input_event_round_trips(codec: Codec, event: dict[str, Any]) -> None:
    kind = TOPIC_OF_TYPE[event["type"]]
    assert codec.decode(kind, codec.encode(kind, event)) == event
    assert codec.decode_input(kind, codec.encode(kind, event)) == event


@settings(max_examples=150, deadline=None)
@given(event=any_output)
def test_every_output_event_round_trips(codec: Codec, event: dict[str, Any]) -> None:
    assert codec.decode("account_state", codec.encode("account_state", event)) == event


@settings(max_examples=5, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("event_type", sorted(INPUT_FIELDS))
def test_each_input_type_decodes_as_itself(codec: Codec, event_type: str, data: st.DataObject
                                           ) -> None:
    """The type comes from the union branch's name, so look-alike records stay apart."""
    event = data.draw(input_events(event_type))
    kind = TOPIC_OF_TYPE[event_type]
    assert codec.decode(kind, codec.encode(kind, event))["type"] == event_type


@settings(max_examples=5, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("event_type", sorted(OUTPUT_FIELDS))
def test_each_output_type_decodes_as_itself(codec: Codec, event_type: str, data: st.DataObject
                                            ) -> None:
    event = data.draw(output_events(event_type))
    assert codec.decode("account_state", codec.encode("account_state", event))["type"] == event_type


@pytest.mark.parametrize("amount",
                         ["0.000001", "12345678901.123456", "999999999999.999999", "12.5"])
def test_money_is_exact(codec: Codec, amount: str) -> None:
    decoded = codec.decode("payments", codec.encode("payments", credits(amount)))
    assert decoded["amount"] == Decimal(amount)
    assert decoded["amount"].as_tuple().exponent == -6  # always 6 digits: "12.500000"
    assert decoded["receipt_url"] is None and decoded["top_up_request_id"] is None


def test_rated_usage_round_trips(codec: Codec) -> None:
    rated = {"event_id": "u-1", "account_id": "acct-1", "timestamp": T0, "product": "deepseek-v3",
             "quantities": {"input_tokens": 1843, "output_tokens": 377}, "requests": 1,
             "cost": Decimal("0.002018"), "billed_period": "2026-01", "late": False,
             "over_limit": True, "billing_model": "prepaid", "tier": "1"}
    assert codec.decode("usage_rated", codec.encode("usage_rated", rated)) == rated
    batch = {"records": [rated, {**rated, "event_id": "u-2", "account_id": "acct-2"}]}
    assert codec.decode("usage_rated", codec.encode("usage_rated", batch)) == batch
    with pytest.raises(CodecError, match=r"records\[1\]\.cost=0\.1234567 "):
        codec.encode("usage_rated", {"records": [rated, {**rated, "cost": Decimal("0.1234567")}]})


def test_broadcast_close_period_keeps_its_empty_account(codec: Codec) -> None:
    close = normalize_input({"type": "close_period", "event_id": "close-1", "account_id": "",
                             "timestamp": "2026-02-01T01:00:00Z", "period": "2026-01"})
    assert codec.decode_input("control", codec.encode("control", close)) == close


# --- what cannot be encoded ----------------------------------------------------------------------


def test_a_float_amount_is_refused_naming_the_field(codec: Codec) -> None:
    with pytest.raises(CodecError) as refused:
        codec.encode("payments", {**credits("1.50"), "amount": 1.5})
    assert refused.value.field == "amount"


@pytest.mark.parametrize("amount", ["1000000000000", "1000000000000.000000", "0.0000001"])
def test_money_outside_decimal_18_6_is_refused(codec: Codec, amount: str) -> None:
    with pytest.raises(CodecError, match="amount"):
        codec.encode("payments", {**credits("1"), "amount": Decimal(amount)})


def test_an_event_on_the_wrong_topic_is_refused(codec: Codec) -> None:
    with pytest.raises(CodecError, match="does not belong on the payments topic") as refused:
        codec.encode("payments", usage())
    assert refused.value.field == "type"


# --- what cannot be decoded ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain() -> Codec:
    return Codec()


@pytest.fixture(scope="module")
def framed(registry: FakeRegistry) -> Codec:
    return Codec(registry=SchemaRegistry(registry.url))


def test_truncated_avro(plain: Codec) -> None:
    data = plain.encode("usage", usage())
    with pytest.raises(CodecError, match=f"^not Avro: truncated at byte {len(data) - 3}$"):
        plain.decode("usage", data[:-3])


def test_json_instead_of_avro(plain: Codec) -> None:
    with pytest.raises(CodecError, match=r"not Avro: .*looks like JSON"):
        plain.decode("usage", b'{"type": "usage", "event_id": "u-1"}')


def test_bytes_left_over(plain: Codec) -> None:
    with pytest.raises(CodecError, match="2 bytes left over"):
        plain.decode("usage", plain.encode("usage", usage()) + b"\x00\x00")


def test_empty_value(plain: Codec) -> None:
    with pytest.raises(CodecError, match="empty value"):
        plain.decode("usage", b"")


def test_registry_framed_bytes_without_a_registry_get_a_hint(plain: Codec, framed: Codec) -> None:
    with pytest.raises(CodecError, match="looks Confluent-framed"):
        plain.decode("usage", framed.encode("usage", usage()))


def test_json_with_registry_framing(framed: Codec) -> None:
    with pytest.raises(CodecError, match=r"^magic byte 0x7b: looks like JSON"):
        framed.decode("usage", b'{"type": "usage"}')


def test_other_magic_byte(framed: Codec) -> None:
    with pytest.raises(CodecError, match=r"^magic byte 0x05: not Confluent-framed Avro"):
        framed.decode("usage", b"\x05\x00\x00\x00\x01rest")


def test_truncated_header(framed: Codec) -> None:
    with pytest.raises(CodecError, match="truncated at byte 3 inside the 5-byte header"):
        framed.decode("usage", b"\x00\x00\x00")


def test_unknown_schema_id(framed: Codec) -> None:
    with pytest.raises(CodecError, match=r"^unknown schema id 7777$"):
        framed.decode("usage", HEADER.pack(0, 7777) + b"\x00")


def test_a_message_of_another_topic(framed: Codec) -> None:
    with pytest.raises(CodecError, match="does not match the payments schema"):
        framed.decode("payments", framed.encode("usage", usage()))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), kind=st.sampled_from(["usage", "payments", "account_state"]))
def test_garbage_gives_only_codec_errors(codec: Codec, data: bytes, kind: str) -> None:
    try:
        codec.decode(kind, data)
    except CodecError as error:
        assert error.reason


def test_an_unreachable_registry_is_not_the_messages_fault() -> None:
    """RegistryError is no InvalidEvent: a worker must retry, not dead-letter the message."""
    codec = Codec(registry=SchemaRegistry("http://127.0.0.1:9", timeout=2))
    with pytest.raises(RegistryError) as failed:
        codec.decode("usage", HEADER.pack(0, 1) + b"\x00")
    assert not isinstance(failed.value, InvalidEvent)


# --- input validation after decoding -------------------------------------------------------------


def test_decode_input_refuses_a_negative_quantity(plain: Codec) -> None:
    """Avro's long allows it; the contract does not."""
    data = plain.encode("usage", {**usage(), "quantities": {"input_tokens": -5}})
    assert plain.decode("usage", data)["quantities"] == {"input_tokens": -5}
    with pytest.raises(InvalidEvent) as refused:
        plain.decode_input("usage", data)
    assert refused.value.field == "quantities.input_tokens"


def test_decode_input_is_for_input_topics_only(plain: Codec) -> None:
    with pytest.raises(ValueError, match="not an input topic"):
        plain.decode_input("account_state", b"\x00")


# --- registry framing ----------------------------------------------------------------------------


def test_registry_subject_is_topic_value_and_ids_are_cached(registry: FakeRegistry) -> None:
    codec = Codec(Topics(usage="team.usage"), SchemaRegistry(registry.url))
    before = len(registry.calls)
    for _ in range(3):
        data = codec.encode("usage", usage())
    assert registry.calls[before:] == ["POST /subjects/team.usage-value/versions"]
    assert data[0] == 0 and HEADER.unpack_from(data)[1] in registry.subjects["team.usage-value"]
    reader = Codec(registry=SchemaRegistry(registry.url))
    assert reader.decode("usage", data) == usage()
    assert reader.decode("usage", data) == usage()
    assert registry.calls[before + 1:] == [f"GET /schemas/ids/{HEADER.unpack_from(data)[1]}"]


def test_without_a_registry_a_rated_usage_of_the_one_record_before_the_union_still_reads(
        plain: Codec) -> None:
    """Messages older workers wrote have no branch byte (``schemas.WAS_ONE_RECORD``): a new sink
    reads them. The usage topic has no such second reading: an old single usage value is
    refused, as a corrupt one is."""
    rated = {"event_id": "u-1", "account_id": "acct-1", "timestamp": T0,
             "product": "deepseek-v3", "quantities": {"input_tokens": 1843}, "requests": 1,
             "cost": Decimal("0.002018"), "billed_period": "2026-01", "late": False,
             "over_limit": False, "billing_model": "prepaid", "tier": "1"}
    for kind, event in (("usage_rated", rated), ("usage", usage())):
        body = io.BytesIO()
        fastavro.schemaless_writer(body, fastavro.parse_schema(load_schema(kind)[0]),
                                   {k: v for k, v in event.items() if k != "type"})
        if kind == "usage_rated":
            assert plain.decode(kind, body.getvalue()) == event
        else:
            with pytest.raises(CodecError):
                plain.decode(kind, body.getvalue())
        assert plain.decode(kind, plain.encode(kind, event)) == event
        with pytest.raises(CodecError, match="truncated"):  # the union's error, not the record's
            plain.decode(kind, plain.encode(kind, event)[:-1])


def test_registry_framing_reads_data_written_with_an_older_schema(registry: FakeRegistry) -> None:
    """The writer's schema comes by id, so a reader one version ahead resolves the difference:
    here an old producer whose Usage had no ``requests`` field (the default, 1, fills it in),
    and whose usage schema was that one record, not yet a union with ``UsageBatch``."""
    old = load_schema("usage")[0]
    old["fields"] = [field for field in old["fields"] if field["name"] != "requests"]
    schema_id = registry.add("billing.usage-value", json.dumps(old))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), usage())
    codec = Codec(registry=SchemaRegistry(registry.url))
    decoded = codec.decode_input("usage", HEADER.pack(0, schema_id) + body.getvalue())
    assert decoded == usage(requests=1)


# --- dead letters --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [b"acct-1", None])
def test_dead_letter_round_trips(codec: Codec, key: bytes | None) -> None:
    original = b'{"not": "avro"}'
    value = make_dead_letter("not Avro: looks like JSON", None, key, original, "billing.usage", 3,
                             41, "worker-a:123", failed_at=T0, codec=codec)
    entry = read_entry(codec, 0, 7, value)
    assert entry.error is None and entry.position == "0:7"
    assert entry.source == "billing.usage[3]@41"
    assert entry.letter == {"key": key, "value": original, "topic": "billing.usage",
                            "partition": 3, "offset": 41, "reason": "not Avro: looks like JSON",
                            "field": None, "failed_at": T0, "worker": "worker-a:123",
                            "key_size": None if key is None else len(key),
                            "key_sha256": None if key is None else hashlib.sha256(key).hexdigest(),
                            "key_truncated": False, "value_size": len(original),
                            "value_sha256": hashlib.sha256(original).hexdigest(),
                            "value_truncated": False}
    assert not entry.truncated and entry.size_note == ""


def test_dead_letter_selection(plain: Codec) -> None:
    def letter(offset: int, reason: str, field: str | None = None) -> bytes:
        return make_dead_letter(reason, field, b"k", b"v", "billing.usage", 0, offset, "w",
                                codec=plain)

    entries = [read_entry(plain, 0, 0, letter(10, "unknown product gpt-9", "product")),
               read_entry(plain, 1, 0, letter(11, "account acct-9 was never opened")),
               read_entry(plain, 1, 1, b"garbage"),
               read_entry(plain, 1, 2, letter(12, "Unknown product llama"))]
    assert entries[2].error is not None
    assert [e.position for e in select(entries)] == ["0:0", "1:0", "1:2"]
    assert [e.position for e in select(entries, reason_contains="unknown PRODUCT")] == ["0:0",
                                                                                        "1:2"]
    assert [e.position for e in select(entries, offsets=["1:0"])] == ["1:0"]
    assert [e.position for e in select(entries, offsets=["0"])] == ["0:0", "1:0"]
    assert select(entries, offsets=["1:2"], reason_contains="never opened") == []
