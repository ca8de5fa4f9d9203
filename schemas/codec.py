"""The one Avro codec: canonical event dicts (``billing.events``) <-> Kafka message values.

Every process that touches Kafka (gateway producers, the Faust worker, the ClickHouse sink, the
dead-letter tools) goes through :class:`Codec`, so a value means the same thing everywhere.

Framing. Without a schema registry a value is the plain Avro binary body (no header) written with
the repo's current schema for the topic, so reader and writer must run the same schema version.
With ``BILLING_SCHEMA_REGISTRY_URL`` set, a value is Confluent-framed: byte 0, the 4-byte big-endian
schema id, then the body. The producer registers its schema under ``<topic>-value``; the consumer
fetches the writer's schema by id and resolves it against its own, which is what lets producers and
consumers upgrade schemas independently (see docs/contracts.md).

Event type. The Avro records carry no ``type`` field: the type is the name of the union branch (the
record name is the type in CamelCase, ``credits_purchased`` <-> ``CreditsPurchased``). Encoding
picks the branch by name, never by shape, because several types have identical fields
(``usage_paused``/``usage_resumed``, ``payment_method_added``/``payment_method_removed``).

fastavro, not the ``avro`` package: it is several times faster (``benchmarks/codec_bench.py``) and
lets the writer name the union branch. Each schema is parsed once, on first use.

Encoding has a fast path. An event in the canonical shape of ``billing.events`` (every field
present with its exact Python type, money as Decimals of 6 places) is written by the topic's
:class:`~schemas.avro_writer.AvroWriter`, built from the same parsed schema: the same bytes as
fastavro, at 0.2-0.7 x the old encode's time (``BENCHMARKS.md``, "Codec (Avro)"). Anything else
takes the path it always took: the money check, then fastavro, whose errors the codec reports.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import fastavro
from fastavro.validation import ValidationError, validate

from billing.events import (
    BATCH_TYPES,
    DEFAULT_MAX_ID_BYTES,
    INPUT_FIELDS,
    MICRO,
    OUTPUT_FIELDS,
    TOPIC_OF_TYPE,
    InvalidEvent,
    normalize_input,
    unpack_batch,
)
from schemas import NAMESPACE, TOPIC_KINDS, WAS_ONE_RECORD, load_schema, schema_text
from schemas.avro_writer import AvroWriter, NotCanonical, UnsupportedSchema
from schemas.registry import SchemaNotFound, SchemaRegistry
from schemas.shapes import BATCH_SUFFIX
from schemas.topics import Topics

MAGIC = 0
MONEY_LIMIT = Decimal(10) ** 12  # decimal(18, 6): 12 digits before the point, 6 after
HEADER = struct.Struct(">BI")  # magic byte, schema id
INPUT_KINDS = tuple(dict.fromkeys(TOPIC_OF_TYPE.values()))  # usage, payments, accounts, control
EVENT_TYPES = (*INPUT_FIELDS, *BATCH_TYPES, *OUTPUT_FIELDS)


class CodecError(InvalidEvent):
    """Bytes that are not a valid message of the topic, or an event the schema cannot carry.

    A subclass of :class:`InvalidEvent`, so a worker dead-letters both with one ``except``.
    """


def record_name(event_type: str) -> str:
    """The Avro record (union branch) name of an event type: ``budget_set`` -> ``...BudgetSet``."""
    return f"{NAMESPACE}.{''.join(part.title() for part in event_type.split('_'))}"


RECORD_OF_TYPE = {event_type: record_name(event_type) for event_type in EVENT_TYPES}
TYPE_OF_RECORD = {name: event_type for event_type, name in RECORD_OF_TYPE.items()}


@dataclass(frozen=True)
class TopicSchema:
    """A topic kind's current schema, parsed once, and how event types map to its records."""

    kind: str
    text: str  # compact JSON, as registered
    parsed: Any
    records: tuple[str, ...]  # full record names, in union order
    is_union: bool
    writer: AvroWriter | None  # the fast path; None if the schema uses a type it cannot write
    # The topic's one record from before it became a union (``WAS_ONE_RECORD``), parsed alone.
    one_record: Any = None

    def branch(self, event: dict[str, Any]) -> str:
        """The record that carries ``event``: the one named after its ``type``.

        Rated usage and dead letters are not events and have no ``type``: such a topic has one
        record, or also the record packing several of them (``RatedUsageBatch``), which carries
        ``records`` and nothing else.
        """
        if self.records[0] not in TYPE_OF_RECORD:
            if self.is_union and event.keys() == {"records"}:
                return self.records[0] + BATCH_SUFFIX
            return self.records[0]
        event_type = event.get("type")
        name = RECORD_OF_TYPE.get(event_type) if isinstance(event_type, str) else None
        if name not in self.records:
            carried = ", ".join(TYPE_OF_RECORD[record] for record in self.records)
            raise CodecError(f"event type {event_type!r} does not belong on the {self.kind} "
                             f"topic; it carries {carried}", "type")
        return name

    def to_event(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """A decoded record as a canonical event: the ``type`` (if it is an event) put back."""
        event_type = TYPE_OF_RECORD.get(name)
        return record if event_type is None else {"type": event_type, **record}


@cache
def topic_schema(kind: str) -> TopicSchema:
    """The current schema of a topic kind, read and parsed on first use, then shared."""
    if kind not in TOPIC_KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; expected one of {', '.join(TOPIC_KINDS)}")
    raw = load_schema(kind)
    branches = raw if isinstance(raw, list) else [raw]
    records = tuple(f"{branch.get('namespace', NAMESPACE)}.{branch['name']}" for branch in branches)
    parsed = fastavro.parse_schema(raw)
    is_union = isinstance(raw, list)
    try:  # an event's dict carries its type besides the fields of its record
        writer = AvroWriter(parsed, tag="type" if records[0] in TYPE_OF_RECORD else None)
    except UnsupportedSchema:
        writer = None
    one_record = fastavro.parse_schema(branches[0]) if kind in WAS_ONE_RECORD else None
    return TopicSchema(kind, schema_text(kind), parsed, records, is_union, writer, one_record)


class Codec:
    """Encodes and decodes the values of every billing topic; registry-framed when given one."""

    def __init__(
        self, topics: Topics | None = None, registry: SchemaRegistry | None = None
    ) -> None:
        self.topics = topics or Topics()
        self.registry = registry
        self._ids: dict[str, int] = {}  # topic kind -> id of its current schema
        self._writers: dict[int, Any] = {}  # schema id -> parsed writer schema

    def encode(self, kind: str, event: dict[str, Any]) -> bytes:
        """Serialize a canonical event (or rated usage / dead letter) for topic kind ``kind``.

        Raises :class:`CodecError` naming the field when the schema cannot carry the event (a
        float amount, a type that belongs on another topic, a missing required field).
        """
        schema = topic_schema(kind)
        name = schema.branch(event)
        datum = (name, event) if schema.is_union else event
        try:
            if schema.writer is None:
                raise NotCanonical(kind)
            # No money check needed on the fast path: it writes a Decimal only into a
            # decimal(18, 6) field (all of ours are: tests/test_avro_writer.py), only with
            # exactly 6 places and at most 18 digits, and only from dicts holding their fields
            # and nothing else. So every amount of the event passed what _check_money checks.
            body = schema.writer.encode(datum)
        except NotCanonical:
            _check_money(event, kind)
            body = _fastavro_body(schema, name, datum)
        if self.registry is None:
            return body
        return HEADER.pack(MAGIC, self._schema_id(schema)) + body

    def decode(self, kind: str, data: bytes) -> dict[str, Any]:
        """Deserialize a message value of topic kind ``kind`` into the canonical shape.

        Raises :class:`CodecError` with a reason a person can act on when the bytes are not a
        message of this topic, and :class:`~schemas.registry.RegistryError` when the registry
        cannot be asked (not the message's fault: do not dead-letter it).
        """
        schema = topic_schema(kind)
        if not data:
            raise CodecError(f"not Avro: empty value on the {kind} topic")
        if self.registry is None:
            writer, start = schema.parsed, 0
        else:
            writer, start = self._framed_writer(schema, data)
        try:
            return self._read(schema, writer, data, start)
        except CodecError:
            if self.registry is not None or schema.one_record is None:
                raise
            try:  # written before the topic's schema became a union (WAS_ONE_RECORD)
                return self._read(schema, schema.one_record, data, 0)
            except CodecError:
                pass
            raise

    def _read(self, schema: TopicSchema, writer: Any, data: bytes, start: int) -> dict[str, Any]:
        """The value's body, from byte ``start``, read with schema ``writer``: resolved against
        the topic's current one unless it is that one or its own first record."""
        kind = schema.kind
        body = io.BytesIO(data)
        body.seek(start)
        reader = None if writer is schema.parsed or writer is schema.one_record else schema.parsed
        try:
            datum = fastavro.schemaless_reader(body, writer, reader, return_record_name=True)
        except EOFError:
            raise self._not_avro(f"truncated at byte {len(data)}", data) from None
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, UnicodeDecodeError,
                fastavro.read.SchemaResolutionError) as error:
            reason = f"does not match the {kind} schema ({type(error).__name__}: {error})"
            raise self._not_avro(reason, data) from None
        if body.tell() != len(data):
            left = len(data) - body.tell()
            raise self._not_avro(f"{left} bytes left over after the record ending at byte "
                                 f"{body.tell()}", data)
        # A union writer names the branch; a one-record writer (a topic that has one, or a
        # schema from before the topic's became a union) is that record.
        name, record = datum if isinstance(writer, list) else (writer["name"], datum)
        return schema.to_event(name, record)

    def decode_input(self, kind: str, data: bytes,
                     max_id_bytes: int = DEFAULT_MAX_ID_BYTES) -> dict[str, Any]:
        """Decode an input-topic value and validate it as :func:`normalize_input` does.

        Raises :class:`InvalidEvent` (or its subclass :class:`CodecError`) naming what is wrong:
        Avro alone cannot say that a quantity is negative or a money amount zero.
        """
        return normalize_input(self._decode_raw_input(kind, data), max_id_bytes)

    def decode_inputs(self, kind: str, data: bytes, max_id_bytes: int = DEFAULT_MAX_ID_BYTES
                      ) -> list[dict[str, Any] | InvalidEvent]:
        """The events of an input-topic value: one, or each record a batch message packs
        (``usage_batch``, :func:`~billing.events.unpack_batch`), in order.

        Raises :class:`InvalidEvent` when the whole message is bad, as :meth:`decode_input`
        does; a batch's record that is bad alone is returned as its :class:`InvalidEvent`, so
        the others are still applied.
        """
        raw = self._decode_raw_input(kind, data)
        if raw["type"] in BATCH_TYPES:
            return unpack_batch(raw, max_id_bytes)
        return [normalize_input(raw, max_id_bytes)]

    def _decode_raw_input(self, kind: str, data: bytes) -> dict[str, Any]:
        if kind not in INPUT_KINDS:
            raise ValueError(f"{kind!r} is not an input topic kind; expected one of {INPUT_KINDS}")
        return self.decode(kind, data)

    def _schema_id(self, schema: TopicSchema) -> int:
        """The registry id of a topic's current schema, registered under ``<topic>-value``."""
        schema_id = self._ids.get(schema.kind)
        if schema_id is None:
            assert self.registry is not None
            subject = f"{getattr(self.topics, schema.kind)}-value"
            schema_id = self._ids[schema.kind] = self.registry.register(subject, schema.text)
        return schema_id

    def _framed_writer(self, schema: TopicSchema, data: bytes) -> tuple[Any, int]:
        """The writer schema named by a Confluent header, and where the Avro body starts."""
        if data[0] != MAGIC:
            looks = "looks like JSON" if _looks_like_json(data) else "not Confluent-framed Avro"
            raise CodecError(f"magic byte 0x{data[0]:02x}: {looks} (expected 0x00)")
        if len(data) < HEADER.size:
            raise CodecError(f"not Avro: truncated at byte {len(data)} inside the 5-byte header")
        _, schema_id = HEADER.unpack_from(data)
        writer = self._writers.get(schema_id)
        if writer is None:
            assert self.registry is not None
            try:
                text = self.registry.schema(schema_id)
            except SchemaNotFound as missing:
                raise CodecError(str(missing)) from None
            # The common case, the writer runs our version: skip schema resolution altogether.
            written = json.loads(text)
            same = written == json.loads(schema.text)
            writer = schema.parsed if same else fastavro.parse_schema(written)
            self._writers[schema_id] = writer
        return writer, HEADER.size

    def _not_avro(self, reason: str, data: bytes) -> CodecError:
        """``not Avro: <reason>``, plus a hint when the bytes look like a common mistake."""
        if _looks_like_json(data):
            reason += "; looks like JSON"
        elif self.registry is None and data[:2] == b"\x00\x00" and len(data) > HEADER.size:
            reason += ("; looks Confluent-framed: set BILLING_SCHEMA_REGISTRY_URL like the "
                       "producer does")
        return CodecError(f"not Avro: {reason}")


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[", b'"')


def _fastavro_body(schema: TopicSchema, name: str, datum: Any) -> bytes:
    """fastavro's encoding of ``datum``, for what the fast path does not write; its errors as
    :class:`CodecError` naming the field."""
    out = io.BytesIO()
    try:
        fastavro.schemaless_writer(out, schema.parsed, datum)
    except (ValueError, TypeError, AttributeError, OverflowError) as error:
        raise _encode_error(schema, name, datum, error) from error
    return out.getvalue()


def _encode_error(schema: TopicSchema, name: str, datum: Any, error: Exception) -> CodecError:
    """A CodecError naming the offending field: fastavro's writer rarely says which it was."""
    field = None
    try:
        validate(datum, schema.parsed, raise_errors=True)
    except ValidationError as invalid:
        field = invalid.errors[0].field.removeprefix(f"{name}.")
    except (ValueError, TypeError, AttributeError):
        pass  # the validator trips on the same value and says no more than the writer
    where = f" field {field}:" if field else ""
    detail = str(error).removesuffix(f" on field {field}")
    return CodecError(f"cannot encode {TYPE_OF_RECORD.get(name, name)} for the {schema.kind} "
                      f"topic:{where} {detail}", field)


def _check_money(record: dict[str, Any], kind: str, prefix: str = "") -> None:
    """Refuse amounts that decimal(18, 6) cannot hold exactly (ClickHouse's Decimal(18, 6) either).

    fastavro checks the digits of the value as given, not once scaled to 6 places, so 10**12
    would pass it and overflow every reader that trusts the declared precision.
    """
    for name, value in record.items():
        if isinstance(value, dict):
            _check_money(value, kind, f"{prefix}{name}.")
        elif isinstance(value, list):  # a batch's records
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    _check_money(item, kind, f"{prefix}{name}[{index}].")
        elif isinstance(value, Decimal) and not (
            value.is_finite() and abs(value) < MONEY_LIMIT and value == value.quantize(MICRO)
        ):
            raise CodecError(f"cannot encode {prefix}{name}={value} for the {kind} topic: money "
                             "is decimal(18, 6), below 10**12 with at most 6 fractional digits",
                             prefix + name)


def encode_in_halves(encode: Callable[[list[Any]], bytes], records: list[Any],
                     limit: int) -> list[tuple[list[Any], bytes]]:
    """``records`` as one batch message (``encode`` of a list of them), or, while a message would
    be over ``limit`` bytes, as its two halves, each split again as needed; a lone record is
    encoded whatever its size. (records, value) pairs, in order."""
    value = encode(records)
    if len(records) <= 1 or len(value) <= limit:
        return [(records, value)]
    half = len(records) // 2
    return [*encode_in_halves(encode, records[:half], limit),
            *encode_in_halves(encode, records[half:], limit)]


def oversized_reason(key: bytes | None, value: bytes | None, limit: int) -> str | None:
    """Why a message is too large to process (its key or value is over ``limit`` bytes, the
    ``BILLING_MAX_MESSAGE_BYTES`` setting), naming the sizes, the limit and the setting; None
    when it is not."""
    parts = [f"{name} is {len(data):,} bytes" for name, data in (("key", key), ("value", value))
             if data is not None and len(data) > limit]
    if not parts:
        return None
    return (f"message {' and '.join(parts)}, over the maximum message size of {limit:,} bytes "
            "(BILLING_MAX_MESSAGE_BYTES): fix the producer, or raise BILLING_MAX_MESSAGE_BYTES "
            "on the workers and redrive")


def check_message_size(key: bytes | None, value: bytes | None, limit: int) -> None:
    """Raise :class:`InvalidEvent` with :func:`oversized_reason` when the message is too large:
    the first line of the worker's ``_decode``, before any byte is decoded."""
    reason = oversized_reason(key, value, limit)
    if reason is not None:
        raise InvalidEvent(reason)


