"""Each event's shape has one source, the ``.avsc`` files: this writes ``billing/event_shapes.py``.

``billing/`` reads no files, so the field tables it checks events against (``INPUT_FIELDS`` and
the others, re-exported by ``billing.events``) are generated from the schemas into a Python module.
After editing an ``.avsc``, run ``python -m schemas.shapes``; ``tests/test_event_shapes.py`` fails
while the module differs from what this writes.

A field's **kind** (what ``billing.events`` checks an input field with, what the tools generate) is
implied by its Avro type:

- ``string`` -> ``str``, ``long`` -> ``int``, ``boolean`` -> ``bool``;
- ``timestamp-millis`` -> ``time``, ``date`` -> ``date``, ``decimal(18, 6)`` -> ``money``;
- a map of ``long`` -> ``quantities``, an array of ``string`` -> ``list[str]``;
- a record -> its name in snake_case (``AutoTopUp`` -> ``auto_top_up``);
- ``["null", T]`` -> the kind of ``T`` followed by ``?`` (optional: ``null`` when absent).

A field whose values are narrower than its type says so with a ``billing_kind`` attribute (Avro
keeps unknown attributes; they change nothing on the wire), one of :data:`NARROWER_KINDS`. The
``?`` of an optional field still comes from its type.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas import NAMESPACE, TOPIC_KINDS, load_schema
from schemas.topics import Topics

GENERATED = Path(__file__).resolve().parent.parent / "billing" / "event_shapes.py"
COMMAND = "python -m schemas.shapes"

# billing_kind -> the kind of the Avro type it narrows.
NARROWER_KINDS = {
    "money>0": "money",  # greater than zero
    "contract": "str",  # self_serve or enterprise
    "billing_model": "str",  # prepaid or postpaid
    "period": "str",  # a month, YYYY-MM
    "requests": "int",  # a count of requests, zero or more
}
PRIMITIVE_KINDS = {"string": "str", "long": "int", "boolean": "bool"}
LOGICAL_KINDS = {"timestamp-millis": "time", "date": "date"}
MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 6}
CONTAINER_KINDS = {("map", "long"): "quantities", ("array", "string"): "list[str]"}
# The fields every input event has (billing.events.normalize_input checks them itself), and every
# output event; the others of each record are its own.
INPUT_COMMON = ("event_id", "account_id", "timestamp")
OUTPUT_COMMON = ("event_id", "account_id", "timestamp", "cause_event_id", "snapshot")
# An input record named ``<Event>Batch`` is no event: one message packing several ``<Event>``
# records of one account (``UsageBatch``), see ``packed_type``.
BATCH_SUFFIX = "Batch"


class ShapeError(ValueError):
    """An ``.avsc`` field whose kind cannot be told (or contradicts its type)."""


def event_type(record_name: str) -> str:
    """``CreditsPurchased`` -> ``credits_purchased`` (the inverse of ``codec.record_name``)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", record_name).lower()
    if "".join(part.title() for part in snake.split("_")) != record_name:
        raise ShapeError(f"record {record_name} is not plain CamelCase: no event type maps to it")
    return snake


def type_kind(avro_type: Any, where: str) -> str:
    """The kind a field of ``avro_type`` has unless it says otherwise (see the module doc)."""
    if isinstance(avro_type, list):
        if len(avro_type) == 2 and avro_type[0] == "null":
            return f"{type_kind(avro_type[1], where)}?"
    elif isinstance(avro_type, str):
        if avro_type in PRIMITIVE_KINDS:
            return PRIMITIVE_KINDS[avro_type]
        if avro_type.startswith(f"{NAMESPACE}."):  # a record defined earlier in the file
            return event_type(avro_type.removeprefix(f"{NAMESPACE}."))
    elif avro_type == MONEY:
        return "money"
    elif avro_type.get("logicalType") in LOGICAL_KINDS:
        return LOGICAL_KINDS[avro_type["logicalType"]]
    elif avro_type.get("type") == "record":
        return event_type(avro_type["name"])
    elif avro_type.get("type") in ("map", "array"):
        contents = (avro_type["type"], avro_type.get("values", avro_type.get("items")))
        if contents in CONTAINER_KINDS:
            return CONTAINER_KINDS[contents]
    raise ShapeError(f"{where}: no billing kind for the Avro type {avro_type!r}")


def field_kind(field: dict[str, Any], where: str) -> str:
    """The field's kind: its type's, or the narrower one of its ``billing_kind``."""
    kind = type_kind(field["type"], where)
    narrower = field.get("billing_kind")
    if narrower is None:
        return kind
    base, optional = kind.removesuffix("?"), kind.endswith("?")
    if NARROWER_KINDS.get(narrower) != base:
        fitting = [name for name, wider in NARROWER_KINDS.items() if wider == base]
        raise ShapeError(f"{where}: billing_kind {narrower!r} does not narrow its Avro type "
                         f"(kind {base!r}); it may be one of {fitting} or absent")
    return f"{narrower}?" if optional else narrower


def fields(record: dict[str, Any]) -> dict[str, str]:
    """A record's fields in order: name -> kind."""
    return {field["name"]: field_kind(field, f"{record['name']}.{field['name']}")
            for field in record["fields"]}


def records(schema: Any) -> Iterator[dict[str, Any]]:
    """Every record defined in a schema (nested ones included), in the order they appear."""
    if isinstance(schema, list):
        for branch in schema:
            yield from records(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            yield schema
            for field in schema["fields"]:
                yield from records(field["type"])
        else:
            yield from records(schema.get("items", schema.get("values")))


def branches(kind: str) -> list[dict[str, Any]]:
    """The event records of a topic kind: its union's branches, or its one record."""
    schema = load_schema(kind)
    return schema if isinstance(schema, list) else [schema]


def split_common(types: dict[str, dict[str, str]], common: tuple[str, ...]
                 ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The ``common`` fields (name -> kind), which every type must have alike, and each type's
    own fields."""
    first = next(iter(types.values()))
    for name, own in types.items():
        for field in common:
            if field not in own or own[field] != first.get(field):
                raise ShapeError(f"{name}.{field} is {own.get(field)!r}, not {first.get(field)!r} "
                                 "as in every record of its topic")
    return ({field: first[field] for field in common},
            {name: {field: kind for field, kind in own.items() if field not in common}
             for name, own in types.items()})


def packed_type(batch: dict[str, Any], inputs: dict[str, dict[str, str]]) -> str:
    """The event type a batch record packs (``UsageBatch`` -> ``usage``), checked: its fields are
    ``account_id`` and ``records``, an array of the event's records without their account_id."""
    packed = event_type(batch["name"].removesuffix(BATCH_SUFFIX))
    names = [field["name"] for field in batch["fields"]]
    items = batch["fields"][-1]["type"]
    expected = {name: kind for name, kind in inputs.get(packed, {}).items() if name != "account_id"}
    if (names != ["account_id", "records"] or not isinstance(items, dict)
            or items.get("type") != "array" or fields(items["items"]) != expected):
        raise ShapeError(f"{batch['name']} must have the fields account_id and records, an "
                         f"array of {packed} records without account_id ({expected})")
    return packed


def rated_usage_record() -> dict[str, Any]:
    """The rated usage record (``RatedUsage``), checked with the branch that packs it
    (``RatedUsageBatch``: ``records``, an array of whole ``RatedUsage`` records; several accounts
    of one partition, so each record keeps its account_id)."""
    rated, *packing = branches("usage_rated")
    expected = ["records"], f"{NAMESPACE}.{rated['name']}"
    for batch in packing:
        items = batch["fields"][-1]["type"]
        found = [field["name"] for field in batch["fields"]], (
            items.get("items") if isinstance(items, dict) and items.get("type") == "array"
            else None)
        if not batch["name"].endswith(BATCH_SUFFIX) or found != expected:
            raise ShapeError(f"{batch['name']}: the usage_rated topic's other branch must be "
                             f"{rated['name']}{BATCH_SUFFIX}, with one field, records, an array "
                             f"of {expected[1]}")
    return rated


def tables() -> dict[str, tuple[str, Any]]:
    """Each table of ``billing/event_shapes.py``: name -> (annotation, value)."""
    topics = Topics()
    input_kinds = [kind for kind in TOPIC_KINDS if getattr(topics, kind) in topics.inputs]
    topic_of_type, inputs, defaults, batches = {}, {}, {}, []
    for kind in input_kinds:
        for record in branches(kind):
            if record["name"].endswith(BATCH_SUFFIX):
                batches.append(record)
                continue
            name = event_type(record["name"])
            topic_of_type[name], inputs[name] = kind, fields(record)
            own = {field["name"]: field["default"] for field in record["fields"]
                   if field.get("default") is not None}
            if own:
                defaults[name] = own
    batch_types = {event_type(batch["name"]): packed_type(batch, inputs) for batch in batches}
    common, input_fields = split_common(inputs, INPUT_COMMON)
    outputs = {event_type(record["name"]): fields(record) for record in branches("account_state")}
    output_common, output_fields = split_common(outputs, OUTPUT_COMMON)
    snapshot = next(record for record in records(load_schema("account_state"))
                    if record["name"] == "Snapshot")
    rated = rated_usage_record()
    return {
        "COMMON_FIELDS": ("dict[str, str]", {"type": "str", **common}),
        "INPUT_FIELDS": ("dict[str, dict[str, str]]", input_fields),
        "INPUT_DEFAULTS": ("dict[str, dict[str, object]]", defaults),
        "TOPIC_OF_TYPE": ("dict[str, str]", topic_of_type),
        "BATCH_TYPES": ("dict[str, str]", batch_types),
        "OUTPUT_FIELDS": ("dict[str, dict[str, str]]", output_fields),
        "OUTPUT_COMMON_FIELDS": ("tuple[str, ...]", ("type", *output_common)),
        "SNAPSHOT_FIELDS": ("dict[str, str]", fields(snapshot)),
        "RATED_USAGE_FIELDS": ("dict[str, str]", fields(rated)),
    }


DOCS = {
    "COMMON_FIELDS": "The fields of every input event (`type` is the name of its Avro record).",
    "INPUT_FIELDS": "Input event type -> its own fields -> kind (schemas/usage, payments, "
                    "accounts, control.avsc).",
    "INPUT_DEFAULTS": "Input event type -> field -> the value an absent field takes (besides "
                      "null).",
    "TOPIC_OF_TYPE": "Input event type -> the topic kind whose schema holds its record.",
    "BATCH_TYPES": "Input batch type -> the event type of the records it packs (not an event).",
    "OUTPUT_FIELDS": "Output event type -> its own fields -> kind (schemas/account_state.avsc).",
    "OUTPUT_COMMON_FIELDS": "The fields every output event has besides its own.",
    "SNAPSHOT_FIELDS": "The account after a change (the Snapshot record of every output).",
    "RATED_USAGE_FIELDS": "One usage event as the ledger rated it (schemas/usage_rated.avsc).",
}
LINE = 100


def literal(value: Any, indent: int, room: int) -> str:
    """``value`` as Python source: on one line if it fits in ``room`` characters, else one
    item per line, indented by ``indent``."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if not isinstance(value, dict | tuple):
        return repr(value)
    if isinstance(value, dict):
        opening, closing = "{", "}"
        items = [(f"{literal(key, 0, LINE)}: ", item) for key, item in value.items()]
    else:
        opening, closing = "(", ",)" if len(value) == 1 else ")"
        items = [("", item) for item in value]
    flat = opening + ", ".join(key + literal(item, 0, LINE) for key, item in items) + closing
    if len(flat) <= room:
        return flat
    inner = " " * (indent + 4)
    lines = [f"{inner}{key}{literal(item, indent + 4, LINE - len(inner) - len(key) - 1)},"
             for key, item in items]
    return "\n".join([opening, *lines, " " * indent + closing.lstrip(",")])


def render() -> str:
    """The text of ``billing/event_shapes.py`` for the schemas as they are now."""
    parts = [f'"""GENERATED from schemas/*.avsc by `{COMMAND}`; do not edit.\n\n'
             "Each event's fields and their kinds; what a kind means: schemas/shapes.py.\n"
             '"""\n']
    for name, (annotation, value) in tables().items():
        head = f"{name}: {annotation} = "
        parts.append(f"# {DOCS[name]}\n{head}{literal(value, 0, LINE - len(head))}\n")
    return "\n".join(parts)


def main() -> None:
    """Rewrite ``billing/event_shapes.py`` from the schemas."""
    text = render()
    if GENERATED.exists() and GENERATED.read_text() == text:
        print(f"{GENERATED} is up to date")
        return
    GENERATED.write_text(text)
    print(f"wrote {GENERATED}")


if __name__ == "__main__":
    main()
