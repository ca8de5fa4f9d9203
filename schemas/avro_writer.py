"""Avro binary writers generated once from a parsed schema: the codec's fast path for encoding.

Why not fastavro's ``schemaless_writer`` for every record: it dispatches on the schema field by
field, picks union branches by validating the value, and prepares each decimal through
``Decimal.as_tuple``. On the worker's outputs that cost 49-85 µs an account-state event (a
12-branch union, a snapshot of 19 fields, seven to eleven ``decimal(18, 6)`` amounts) and 11-15 %
of the worker's CPU (``BENCHMARKS.md``, "Codec (Avro)"). Avro's binary encoding is simple and our
schemas use few of its types, so :class:`AvroWriter` generates, like ``dataclasses`` does for
``__init__``, one plain Python function per record schema: the fields in order, each a few inline
statements writing into a ``bytearray`` (``AvroWriter.source`` shows the code). Closures, one per
type node, were measured first: 20-30 % slower, a call per field.

The contract is narrow on purpose: a writer writes the **canonical shape** of ``billing.events``
(each field present, of its exact Python type: ``str``, ``int``, ``bool``, ``bytes``, ``Decimal``
with exactly the schema's scale, an aware ``datetime``, ``date``, ``list``, ``dict``, or None in an
optional field; a record's dict holds its fields and no other key, but for an event's ``type``)
and raises :class:`NotCanonical` for anything else. It never guesses: the caller then hands the
same datum to fastavro, which either writes it (its own bytes) or raises the error the codec has
always reported. So for each datum the bytes are fastavro's (``tests/test_avro_writer.py``
checks that on records drawn from every schema), and fastavro keeps the last word on every
unusual value: a subclass, a naive datetime, a missing field it would fill with its default.

A schema using a type this module does not write (float, double, enum, fixed, another logical
type, a union of several types, a recursive record) raises :class:`UnsupportedSchema` when the
writer is built; the codec then uses fastavro alone for that topic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from itertools import count
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
MILLISECOND = timedelta(milliseconds=1)
LONG_RANGE = range(-(2**63), 2**63)
INT_RANGE = range(-(2**31), 2**31)
DECIMALS_KEPT = 4096  # encodings of recent decimal values kept, per precision and scale


class NotCanonical(ValueError):
    """The datum is not in the canonical shape: encode it with fastavro instead."""


class UnsupportedSchema(ValueError):
    """The schema uses an Avro type this module does not write: use fastavro for it."""


# --- longs: zig-zag, then a little-endian base-128 varint -------------------------------------


def _varint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


# Lengths, counts, limits, quantities and timestamps (42 bits) are most of what is written: two
# tables give 14 bits at a time, not 7 a loop turn (about 2 MB).
_LAST_14_BITS = tuple(_varint(low) for low in range(1 << 14))  # the final 1 or 2 bytes
_NEXT_14_BITS = tuple(bytes(((low & 0x7F) | 0x80, (low >> 7) | 0x80)) for low in range(1 << 14))


def encode_long(number: int) -> bytes:
    """The Avro encoding of ``number``; :class:`NotCanonical` outside a 64-bit long (fastavro
    raises its own error for it)."""
    if 0 <= number < 8192:  # the zig-zag of 0..8191 is below 1 << 14
        return _LAST_14_BITS[number << 1]
    if number not in LONG_RANGE:
        raise NotCanonical(f"{number} does not fit a long")
    zigzag = (number << 1) ^ (number >> 63)
    if zigzag < 1 << 14:  # -8192..-1
        return _LAST_14_BITS[zigzag]
    if zigzag < 1 << 28:  # quantities, limits
        return _NEXT_14_BITS[zigzag & 0x3FFF] + _LAST_14_BITS[zigzag >> 14]
    if zigzag < 1 << 42:  # timestamps in milliseconds, until 2109
        return (_NEXT_14_BITS[zigzag & 0x3FFF] + _NEXT_14_BITS[(zigzag >> 14) & 0x3FFF]
                + _LAST_14_BITS[zigzag >> 28])
    out = b""
    while zigzag >= 1 << 14:
        out += _NEXT_14_BITS[zigzag & 0x3FFF]
        zigzag >>= 14
    return out + _LAST_14_BITS[zigzag]


# --- decimals ---------------------------------------------------------------------------------


class _DecimalEncodings(dict[str, bytes]):
    """Encodings of ``decimal(precision, scale)`` values by their text, for the last few
    thousand values.

    Most amounts of an account's state repeat (zero, budgets, top-up settings, the lifetime
    figures between purchases): 96 % of the decimals of account-state outputs and 80 % of those
    of account-status records were among the last 4,096 seen (a generated month of 2,000
    accounts). Keyed by ``str``, which tells ``1.000000`` from ``1.0000000`` (fastavro refuses
    the second), where Decimal equality does not.
    """

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__()
        if scale < 1:
            raise UnsupportedSchema(f"decimal({precision}, {scale}): no fractional digits")
        self.limit, self.scale = 10**precision, scale

    def __missing__(self, text: str) -> bytes:
        """The length, then the unscaled integer in big-endian two's complement, as long as
        fastavro makes it, ``(bit_length(|n|) + 8) // 8`` (a byte more than the minimum for some
        negative numbers: -128 is ``ff 80``; readers take both, but the bytes must not change).

        Only a Decimal with exactly ``scale`` fractional digits and at most ``precision`` digits
        is written here (money always has 6 places): fastavro refuses more and pads fewer.
        """
        if len(text) <= self.scale or text[-self.scale - 1] != "." or "E" in text:
            raise NotCanonical(text)  # another scale, an exponent, "NaN", "Infinity"
        unscaled = int(text.replace(".", ""))
        if not -self.limit < unscaled < self.limit:
            raise NotCanonical(text)
        data = unscaled.to_bytes((abs(unscaled).bit_length() + 8) // 8, "big", signed=True)
        data = _LAST_14_BITS[len(data) << 1] + data  # at most 9 bytes
        if len(self) >= DECIMALS_KEPT:
            self.clear()
        self[text] = data
        return data


@cache
def decimal_encodings(precision: int, scale: int) -> _DecimalEncodings:
    """The encodings kept of ``decimal(precision, scale)`` values, one for every writer."""
    return _DecimalEncodings(precision, scale)


# --- the generated code -----------------------------------------------------------------------
# Each Avro type is a few statements writing ``value`` (an expression) into ``buffer``; each
# checks the exact type first (a bool is an int, a datetime a date, a str subclass may encode
# itself otherwise): anything else is fastavro's to judge.

# A long inline for 0 <= n < 2**27 (zig-zag below 2**28: two table look-ups), else encode_long.
LONG = ("buffer += (LAST[{v} << 1] if 0 <= {v} < 8192 else NEXT[({v} << 1) & 0x3FFF] + "
        "LAST[{v} >> 13] if 0 <= {v} < 134217728 else encode_long({v}))")
# Milliseconds since 1970 from 1970-01-02 to 2039 (zig-zag of 29 to 42 bits): three look-ups.
MILLIS = ("buffer += (NEXT[(millis << 1) & 0x3FFF] + NEXT[(millis >> 13) & 0x3FFF] + "
          "LAST[millis >> 27] if 134217728 <= millis < 2199023255552 else encode_long(millis))")
TEMPLATES = {
    "null": ["if {v} is not None: raise NotCanonical({where})"],
    "boolean": ["if {v} is True: buffer += b'\\x01'",
                "elif {v} is False: buffer += b'\\x00'",
                "else: raise NotCanonical({where})"],
    "long": ["if type({v}) is not int: raise NotCanonical({where})", LONG],
    "int": ["if type({v}) is not int or {v} not in INT_RANGE: raise NotCanonical({where})", LONG],
    "string": ["if type({v}) is not str: raise NotCanonical({where})",
               "data = {v}.encode()",
               "size = len(data)",
               LONG.format(v="size"),
               "buffer += data"],
    "bytes": ["if type({v}) is not bytes: raise NotCanonical({where})",
              LONG.format(v="len({v})"),
              "buffer += {v}"],
    # fastavro reads a naive datetime in the machine's time zone: not canonical. Floor division,
    # as fastavro's int(microseconds / 1000) of a non-negative microseconds.
    "timestamp-millis": ["if type({v}) is not datetime or {v}.tzinfo is None: "
                         "raise NotCanonical({where})",
                         "millis = ({v} - EPOCH) // MILLISECOND",
                         MILLIS],
    "date": ["if type({v}) is not date: raise NotCanonical({where})",
             "buffer += encode_long({v}.toordinal() - EPOCH_ORDINAL)"],
    "decimal": ["if type({v}) is not Decimal: raise NotCanonical({where})",
                "buffer += {encodings}[str({v})]"],
}
PRIMITIVE_TYPES = {"null", "boolean", "long", "int", "string", "bytes"}  # no float, no double
LOGICAL_TYPES = {("long", "timestamp-millis"), ("int", "date"), ("bytes", "decimal")}


class _Generator:
    """Writes the source of one function per record of a parsed schema (``fastavro.parse_schema``:
    full names, named types under ``__named_schemas``), and the names that source uses."""

    def __init__(self, named: dict[str, Any], tag: str | None) -> None:
        self.named, self.tag = named, tag
        self.functions: dict[tuple[str, bool], str] = {}  # (record name, tagged) -> function
        self.sources: list[str] = []
        self.building: set[str] = set()
        self.namespace: dict[str, Any] = {
            "LAST": _LAST_14_BITS, "NEXT": _NEXT_14_BITS, "encode_long": encode_long,
            "NotCanonical": NotCanonical, "INT_RANGE": INT_RANGE, "datetime": datetime,
            "date": date, "Decimal": Decimal, "EPOCH": EPOCH, "MILLISECOND": MILLISECOND,
            "EPOCH_ORDINAL": EPOCH_ORDINAL}
        self.variables = count()

    def record(self, schema: dict[str, Any], tagged: bool = False) -> str:
        """The name of the function writing a record (``tagged``: a top-level record, whose dict
        also holds the tag)."""
        name = schema["name"]
        if (name, tagged) in self.functions:
            return self.functions[name, tagged]
        if name in self.building:
            raise UnsupportedSchema(f"record {name} contains itself")
        self.building.add(name)
        keys = len(schema["fields"]) + tagged
        tag_missing = f" or {self.tag!r} not in record" if tagged else ""
        lines = [f"if type(record) is not dict or len(record) != {keys}{tag_missing}:",
                 f"    raise NotCanonical({name + ': not a dict of its fields'!r})"]
        for field in schema["fields"]:
            lines.append(f"value = record[{field['name']!r}]")
            lines += self.code(field["type"], "value", f"{name}.{field['name']}")
        self.building.discard(name)
        function = self.functions[name, tagged] = f"write_record_{len(self.functions)}"
        body = "\n".join(f"    {line}" for line in lines)
        self.sources.append(f"def {function}(buffer, record):  # {name!r}\n{body}\n")
        return function

    def code(self, schema: Any, value: str, where: str) -> list[str]:
        """Statements writing the value of expression ``value`` of type ``schema``."""
        if isinstance(schema, list):
            return self._optional(schema, value, where)
        if isinstance(schema, str):
            if schema in self.named:
                return [f"{self.record(self.named[schema])}(buffer, {value})"]
            return self._template(schema, value, where)
        avro_type, logical = schema["type"], schema.get("logicalType")
        if logical is not None:
            if (avro_type, logical) not in LOGICAL_TYPES:
                raise UnsupportedSchema(f"logical type {logical} of {avro_type} is not written")
            return self._template(logical, value, where, schema)
        if avro_type == "record":
            return [f"{self.record(schema)}(buffer, {value})"]
        if avro_type == "array":
            return self._array(schema["items"], value, where)
        if avro_type == "map":
            return self._map(schema["values"], value, where)
        return self._template(avro_type, value, where)

    def _template(self, name: str, value: str, where: str,
                  schema: dict[str, Any] | None = None) -> list[str]:
        if schema is None and name not in PRIMITIVE_TYPES:
            raise UnsupportedSchema(f"Avro type {name} is not written here")
        encodings = ""
        if name == "decimal":
            assert schema is not None
            precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
            encodings = f"DECIMAL_{precision}_{scale}"
            self.namespace[encodings] = decimal_encodings(precision, scale)
        return [line.format(v=value, where=repr(where), encodings=encodings)
                for line in TEMPLATES[name]]

    def _optional(self, branches: list[Any], value: str, where: str) -> list[str]:
        """``["null", T]`` or ``[T, "null"]``: None or not, no validation needed. A union of
        several types is picked by validating the value, fastavro's job."""
        if len(branches) != 2 or "null" not in branches:
            raise UnsupportedSchema(f"union {branches} is not of null and one type")
        null = branches.index("null")
        return [f"if {value} is None: buffer += {encode_long(null)!r}",
                "else:",
                f"    buffer += {encode_long(1 - null)!r}",
                *(f"    {line}" for line in self.code(branches[1 - null], value, where))]

    def _array(self, items: Any, value: str, where: str) -> list[str]:
        """fastavro's layout: one block of every item (count, items), then the empty block."""
        item = f"item_{next(self.variables)}"
        return [f"if type({value}) is not list: raise NotCanonical({where!r})",
                f"if {value}:",
                f"    buffer += encode_long(len({value}))",
                f"    for {item} in {value}:",
                *(f"        {line}" for line in self.code(items, item, f"{where}[]")),
                "buffer += b'\\x00'"]

    def _map(self, values: Any, value: str, where: str) -> list[str]:
        key, item = f"key_{next(self.variables)}", f"item_{next(self.variables)}"
        return [f"if type({value}) is not dict: raise NotCanonical({where!r})",
                f"if {value}:",
                f"    buffer += encode_long(len({value}))",
                f"    for {key}, {item} in {value}.items():",
                *(f"        {line}" for line in self._template("string", key, f"{where} key")),
                *(f"        {line}" for line in self.code(values, item, f"{where}[]")),
                "buffer += b'\\x00'"]

    def execute(self) -> dict[str, Any]:
        """Run the generated source: the namespace holding its functions, by name."""
        code = compile("\n".join(self.sources), "<schemas.avro_writer>", "exec")
        exec(code, self.namespace)  # our own source text: names are repr()'d literals
        return self.namespace


class AvroWriter:
    """Writes a datum of one parsed schema as ``fastavro.schemaless_writer`` does, faster.

    The datum is what fastavro takes: a record ``dict``, or for a union of records a tuple
    ``(full record name, dict)`` naming the branch (fastavro's tuple notation). ``tag`` is a key
    that a top-level record's dict must carry besides its fields (the codec's event ``type``,
    which names the record): it is not written.
    """

    def __init__(self, parsed: Any, tag: str | None = None) -> None:
        """Generate the writer of ``parsed`` (``fastavro.parse_schema``'s result); raises
        :class:`UnsupportedSchema` when the schema uses a type this module does not write."""
        branches = parsed if isinstance(parsed, list) else [parsed]
        if not all(isinstance(branch, dict) and branch["type"] == "record" for branch in branches):
            raise UnsupportedSchema("a topic's schema is a record or a union of records")
        generator = _Generator({name: named for branch in branches
                                for name, named in branch.get("__named_schemas", {}).items()}, tag)
        is_union = isinstance(parsed, list)
        top = None if is_union else generator.record(parsed, tagged=tag is not None)
        indexed = {branch["name"]: (encode_long(index),
                                    generator.record(branch, tagged=tag is not None))
                   for index, branch in enumerate(branches) if is_union}
        functions = generator.execute()
        self.source = "\n".join(generator.sources)
        self._record: Callable[[bytearray, Any], None] | None = functions[top] if top else None
        self._branches = {name: (index, functions[function])
                          for name, (index, function) in indexed.items()}

    def encode(self, datum: Any) -> bytes:
        """The Avro binary body of ``datum``; :class:`NotCanonical` when it is not in the
        canonical shape (then fastavro decides what it is)."""
        buffer = bytearray()
        try:
            if self._record is not None:
                self._record(buffer, datum)
            else:
                name, record = datum if type(datum) is tuple and len(datum) == 2 else (None, None)
                index, write = self._branches[name]
                buffer += index
                write(buffer, record)
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise NotCanonical(f"{type(error).__name__}: {error}") from error
        return bytes(buffer)
