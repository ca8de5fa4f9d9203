"""The generated Avro writers (``schemas/avro_writer.py``) write fastavro's bytes, exactly.

Records are drawn from every topic's parsed schema, field by field from its Avro types (not from
the event tables), so every field, union branch and nested record of every ``.avsc`` is exercised:
nulls, extreme and negative decimals, long and non-ASCII strings, 64-bit longs, times before 1970
and off UTC. Each must be written by the fast path (no silent fallback to fastavro) with fastavro's
bytes, and read back as itself. Values outside the canonical shape must make the codec behave
exactly as it did before the fast path: the same bytes or the same error.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import TOPIC_KINDS, load_schema
from schemas.avro_writer import (
    AvroWriter,
    NotCanonical,
    UnsupportedSchema,
    decimal_encodings,
    encode_long,
)
from schemas.codec import (
    TYPE_OF_RECORD,
    Codec,
    CodecError,
    _check_money,
    _encode_error,
    topic_schema,
)

MAX_MONEY = Decimal("999999999999.999999")
# Around each boundary of the writer's tables (8192, 2**27, 2**41 before zig-zag) and of a long.
EDGE_LONGS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8192, 2**27 - 1, 2**27, 2**41 - 1, 2**41,
              2**63 - 1, -(2**63), 1_767_225_600_000]
# Two's complement lengths: fastavro writes -0.000128 as ff 80, not 80.
EDGE_MONEY = [Decimal(text) for text in (
    "0.000000", "-0.000000", "0.000001", "-0.000001", "0.000127", "0.000128", "-0.000128",
    "-0.000129", "0.032767", "-0.032768", "999999999999.999999", "-999999999999.999999")]
OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                           timezone(-timedelta(hours=8))])

RATED: dict[str, Any] = {
    "event_id": "u-1", "account_id": "a", "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
    "product": "p", "quantities": {"t": 1}, "requests": 1, "cost": Decimal("0.000001"),
    "billed_period": "2026-01", "late": False, "over_limit": False, "billing_model": "prepaid",
    "tier": "1"}
# The writer of one rated usage record alone (the topic's first branch): a record of every kind of
# field the writer checks, without a union around it.
RATED_WRITER = AvroWriter(fastavro.parse_schema(load_schema("usage_rated")[0]))


def values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of an Avro type (as ``fastavro.parse_schema`` gives it), in the canonical shape."""
    if isinstance(schema, list):  # ["null", T]
        return st.one_of(*(values(branch, named) for branch in schema))
    if isinstance(schema, str):
        return values(named[schema], named) if schema in named else PRIMITIVES[schema]
    logical = schema.get("logicalType")
    if logical == "decimal":
        return st.sampled_from(EDGE_MONEY) | st.decimals(-MAX_MONEY, MAX_MONEY, places=6)
    if logical == "timestamp-millis":
        return st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=OFFSETS)
    if logical == "date":
        return st.dates()
    if schema["type"] == "record":
        return st.fixed_dictionaries({field["name"]: values(field["type"], named)
                                      for field in schema["fields"]})
    if schema["type"] == "array":
        return st.lists(values(schema["items"], named), max_size=4)
    if schema["type"] == "map":
        return st.dictionaries(PRIMITIVES["string"], values(schema["values"], named), max_size=4)
    return PRIMITIVES[schema["type"]]


PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.sampled_from(EDGE_LONGS) | st.integers(-(2**63), 2**63 - 1),
    # Short, any script, and now and then over 8 KiB of UTF-8 (a length of two varint bytes).
    "string": st.text(max_size=30) | st.builds(
        str.__mul__, st.characters(exclude_categories=("Cs",)), st.integers(0, 9000)),
    "bytes": st.binary(max_size=40),
}


def data_of(kind: str) -> st.SearchStrategy[tuple[Any, dict[str, Any]]]:
    """(the datum the codec hands the writer, the record it carries) for a topic kind."""
    parsed = topic_schema(kind).parsed
    branches = parsed if isinstance(parsed, list) else [parsed]
    named = {name: schema for branch in branches
             for name, schema in branch.get("__named_schemas", {}).items()}
    if not isinstance(parsed, list):
        return values(parsed, named).map(lambda record: (as_event(parsed["name"], record), record))
    return st.sampled_from(branches).flatmap(lambda branch: values(branch, named).map(
        lambda record: ((branch["name"], as_event(branch["name"], record)), record)))


def as_event(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """An event's dict names its type (the codec's ``type``), not a field of the record."""
    return {"type": TYPE_OF_RECORD[name], **record} if name in TYPE_OF_RECORD else record


def fastavro_bytes(kind: str, datum: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, topic_schema(kind).parsed, datum)
    return out.getvalue()


def as_read(value: Any) -> Any:
    """What a reader gets back: times in UTC to the millisecond (floored, as written)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, dict):
        return {key: as_read(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_read(item) for item in value]
    return value


@settings(max_examples=120, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_the_fast_path_writes_fastavros_bytes_and_reads_back(kind: str, data: st.DataObject
                                                               ) -> None:
    datum, record = data.draw(data_of(kind))
    writer = topic_schema(kind).writer
    assert writer is not None, f"{kind}: no fast path"
    written = writer.encode(datum)  # raises NotCanonical, failing the test, if it fell back
    assert written == fastavro_bytes(kind, datum)
    read = fastavro.schemaless_reader(io.BytesIO(written), topic_schema(kind).parsed,
                                      return_record_name=True)
    assert (read[1] if isinstance(read, tuple) else read) == as_read(record)


@pytest.mark.parametrize("number", EDGE_LONGS)
def test_longs_at_the_table_boundaries(number: int) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", number)
    assert encode_long(number) == out.getvalue()


def test_known_bytes() -> None:
    """Fixed points, independent of fastavro: Avro's spec examples and a decimal's sign byte."""
    assert [encode_long(n) for n in (0, -1, 1, -64, 64, 8192)] == [
        b"\x00", b"\x01", b"\x02", b"\x7f", b"\x80\x01", b"\x80\x80\x01"]
    rated = RATED_WRITER
    record = {**RATED, "event_id": "é", "account_id": "", "product": "p", "quantities": {},
              "timestamp": datetime(1970, 1, 1, 0, 0, 0, 1999, tzinfo=UTC),
              "cost": Decimal("-0.000128"), "billed_period": "", "late": True,
              "billing_model": "", "tier": ""}
    assert rated.encode(record) == (b"\x04\xc3\xa9" b"\x00" b"\x02" b"\x02p" b"\x00" b"\x02"
                                    b"\x04\xff\x80" b"\x00" b"\x01" b"\x00" b"\x00" b"\x00")


# --- outside the canonical shape: the codec does what it did before ------------------------------


def encode_before(kind: str, event: dict[str, Any]) -> bytes:
    """``Codec.encode`` without a registry as of c1d4323, before the fast path."""
    schema = topic_schema(kind)
    name = schema.branch(event)
    _check_money(event, kind)
    datum = (name, event) if schema.is_union else event
    out = io.BytesIO()
    try:
        fastavro.schemaless_writer(out, schema.parsed, datum)
    except (ValueError, TypeError, AttributeError, OverflowError) as error:
        raise _encode_error(schema, name, datum, error) from error
    return out.getvalue()


def outcome(encode: Any, kind: str, event: dict[str, Any]) -> Any:
    try:
        return encode(kind, event)
    except CodecError as error:
        return "CodecError", error.reason, error.field
    except Exception as error:  # whatever the old path raised, the new one must raise too
        return type(error).__name__, str(error)


class Text(str):
    """A str subclass: fastavro writes it; the fast path leaves it to fastavro."""


ODD_VALUES = [1.5, True, 1, 2**64, -(2**63) - 1, 2**31, Decimal("1.0000000"), Decimal("5"),
              Decimal("1E+3"), Decimal("NaN"), Decimal("-Infinity"), Decimal(10) ** 12,
              Decimal("0.0000001"), Decimal("1234567890123456789"), datetime(2026, 1, 1),
              datetime(2026, 1, 1, tzinfo=UTC), date(2026, 1, 1), "2026-01-01", "\ud800",
              Text("text"), b"bytes", None, [], ["a", 1], {}, {"k": 1.5}, (1, 2)]
WORKER_KINDS = ("account_state", "account_status", "usage_rated", "dead_letter", "usage")
codec = Codec()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(WORKER_KINDS))
def test_an_odd_value_gets_the_old_answer(data: st.DataObject, kind: str) -> None:
    """Any one field replaced (or dropped, or an extra key added) at the top or in a nested
    record: the same bytes, or the same error naming the same field, as the codec before."""
    datum, _ = data.draw(data_of(kind))
    event = dict(datum[1] if isinstance(datum, tuple) else datum)
    target = event
    nested = [key for key, value in event.items() if isinstance(value, dict) and value]
    if nested and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(nested))
        target = event[key] = dict(event[key])
    change = data.draw(st.sampled_from(["replace", "drop", "add"]))
    fields = [key for key in target if key != "type"]
    if change == "add":
        target[data.draw(st.sampled_from(["extra", "amount_x"]))] = data.draw(
            st.sampled_from(ODD_VALUES))
    elif change == "drop":
        del target[data.draw(st.sampled_from(fields))]
    else:
        target[data.draw(st.sampled_from(fields))] = data.draw(st.sampled_from(ODD_VALUES))
    assert outcome(codec.encode, kind, event) == outcome(encode_before, kind, event)


@pytest.mark.parametrize(("field", "value"), [
    ("requests", True), ("requests", 1.5), ("requests", 2**64), ("requests", None),
    ("cost", 1.5), ("cost", Decimal("1.0000000")), ("cost", Decimal("5")), ("cost", "1.000000"),
    ("cost", Decimal("NaN")), ("cost", Decimal("1E+3")), ("cost", Decimal("1E-7")),
    ("cost", Decimal("1234567890123.000000")),  # 19 digits: more than decimal(18, 6) holds
    ("timestamp", datetime(2026, 1, 1)), ("timestamp", 1_767_225_600_000),
    ("event_id", Text("u-1")), ("event_id", b"u-1"), ("event_id", "\ud800"), ("late", 1),
    ("quantities", {"t": True}), ("quantities", {1: 1}), ("quantities", [("t", 1)])])
def test_the_fast_path_refuses_what_is_not_canonical(field: str, value: Any) -> None:
    """So that fastavro decides: its bytes for what it accepts, its error for the rest."""
    writer = RATED_WRITER
    writer.encode(RATED)
    with pytest.raises(NotCanonical):
        writer.encode({**RATED, field: value})


def test_a_missing_or_extra_field_is_not_canonical() -> None:
    """fastavro fills a missing field with its default and ignores other keys; the codec's money
    check looks at every key: both are the old path's to handle."""
    writer = RATED_WRITER
    with pytest.raises(NotCanonical):
        writer.encode({key: value for key, value in RATED.items() if key != "tier"})
    with pytest.raises(NotCanonical):
        writer.encode({**RATED, "amount": Decimal(10) ** 13})
    with pytest.raises(CodecError, match="amount=10000000000000 "):
        codec.encode("usage_rated", {**RATED, "amount": Decimal(10) ** 13})


def test_a_cached_decimal_does_not_answer_for_an_equal_one_of_another_scale() -> None:
    """1.000000 == 1.0000000, but fastavro refuses the second: the cache is keyed by text."""
    writer = RATED_WRITER
    rated = {**RATED, "cost": Decimal("1.000000")}
    writer.encode(rated)
    assert "1.000000" in decimal_encodings(18, 6)
    with pytest.raises(NotCanonical):
        writer.encode({**rated, "cost": Decimal("1.0000000")})
    with pytest.raises(CodecError, match="Scale provided in schema does not match"):
        codec.encode("usage_rated", {**rated, "cost": Decimal("1.0000000")})


def test_every_decimal_is_money() -> None:
    """The codec skips its money check on the fast path because the writer's own checks, on a
    decimal(18, 6), are that check: exactly 6 places, below 10**12. Another precision or scale
    would need the check back."""
    def decimals(schema: Any) -> list[dict[str, Any]]:
        if isinstance(schema, list):
            return [found for item in schema for found in decimals(item)]
        if not isinstance(schema, dict):
            return []
        if schema.get("logicalType") == "decimal":
            return [schema]
        inner = [field["type"] for field in schema.get("fields", [])]
        inner += [schema[key] for key in ("items", "values") if key in schema]
        return [found for item in inner for found in decimals(item)]

    found = [schema for kind in TOPIC_KINDS for schema in decimals(load_schema(kind))]
    assert len(found) >= 30
    assert all((schema["precision"], schema["scale"]) == (18, 6) for schema in found)


@pytest.mark.parametrize("field_type", [
    "float", "double", {"type": "enum", "name": "E", "symbols": ["A"]},
    {"type": "fixed", "name": "F", "size": 2}, ["null", "string", "long"],
    {"type": "string", "logicalType": "uuid"},
    {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 0}])
def test_a_type_the_writer_does_not_write_is_refused_when_built(field_type: Any) -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "R",
                                    "fields": [{"name": "f", "type": field_type}]})
    with pytest.raises(UnsupportedSchema):
        AvroWriter(schema)


def test_a_recursive_record_is_refused_when_built() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "Node", "fields": [
        {"name": "next", "type": ["null", "Node"]}]})
    with pytest.raises(UnsupportedSchema, match="contains itself"):
        AvroWriter(schema)


@pytest.mark.parametrize("kind", ["control", "payments"])
def test_an_event_must_carry_its_type(kind: str) -> None:
    """An event names its record with ``type`` (one record on the control topic, a union branch
    on the payments topic); a dict without it is not canonical, and ``type`` is not written."""
    writer = topic_schema(kind).writer
    assert writer is not None
    event: dict[str, Any] = {"event_id": "e", "account_id": "",
                             "timestamp": datetime(2026, 2, 1, tzinfo=UTC)}
    if kind == "control":
        event |= {"type": "close_period", "period": "2026-01"}
    else:
        event |= {"type": "payment_method_added", "payment_method_id": "pm-1"}
    name = topic_schema(kind).branch(event)
    datum = (name, event) if topic_schema(kind).is_union else event
    without = (name, {**event}) if topic_schema(kind).is_union else {**event}
    (without[1] if isinstance(without, tuple) else without).pop("type")
    with pytest.raises(NotCanonical):
        writer.encode(without)
    assert writer.encode(datum) == fastavro_bytes(kind, without) == codec.encode(kind, event)
